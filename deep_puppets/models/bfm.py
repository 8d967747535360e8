"""Basel Face Models (the seed report's model) as :class:`MorphableModel`, converted to centimetres.

BFM 2009 (``01_MorphableModel.mat``, read with scipy.io.loadmat; MATLAB v7.3 files through h5py):
``shapeMU`` (3N, 1) mean, ``shapePC`` (3N, K) orthonormal components, ``shapeEV`` (K, 1) standard deviations,
``texMU``/``texPC``/``texEV`` colour (0..255), ``tl`` (T, 3) 1-based triangles; lengths in micrometres.
The vertex arrays are interleaved (x0, y0, z0, x1, ...).

Expression basis for BFM 2009 (optional), the ``Exp_Pca.bin`` layout (little-endian): int32 k, float32
mean[3n], float32 components[k · 3n] one component after another, each interleaved like the shape; n = 53,215
vertices for the released file, mapped into the BFM 2009 vertices by an index list (``exp_index_path``:
1-based indices, n of them; a .mat holding one integer array such as ``trimIndex``, a .npy, or a text file).
Without an index list the expression must cover all N vertices. Vertices outside the list get no expression
motion. The file carries no standard deviations: give ``exp_std_path`` (k numbers: text such as
``std_exp.txt``, or .npy); without it the std is 1 per component (and the model records
``extra['exp_std_source'] = 'unit'``). The file's mean expression offset is not added (as Deep3DFaceRecon
does) unless ``exp_mean='add'``.

BFM 2017 / 2019 (.h5, statismo layout): ``shape|color|expression/model/{mean (3N,), pcaBasis (3N, K),
pcaVariance (K,)}`` (variances: std = sqrt), ``shape/representer/points`` (3, N), ``shape/representer/cells``
(3, T) 0-based ((T, 3) is accepted too); lengths in millimetres (``source_unit`` overrides). The expression
mean is added to the shape mean (zero in the released models).

Units: every length is converted to ``unit`` (default cm) by scaling the mean and the bases; the prior
standard deviations stay as in the file (they are in coefficient units). Triangles are flipped as a whole when
they face inward, so that they run counter-clockwise seen from the front.

These models carry no MediaPipe correspondence: pass ``landmarks_path``, a JSON file with either
478 vertex indices (landmark i ↔ vertex; ``null`` for a landmark to switch off) or 68 iBUG / Multi-PIE vertex
indices (the 478 are then embedded like ICT's, :func:`~.facemesh.embed_landmarks`; irises switched off as
BFM has no eyeballs). Forms: a bare list, or ``{"mediapipe": [...]}`` / ``{"ibug68": [...]}``, optionally
with ``"index_base": 1`` for 1-based indices (default 0). Without it the model loads with every
``lm_weight`` 0 (renderable, not fittable).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import h5io
from ..errors import InputError
from . import facemesh
from .base import N_LANDMARKS, MorphableModel
from .geometry import orient_outward

TO_CM = {"um": 1e-4, "mm": 0.1, "cm": 1.0, "m": 100.0}


def unit_factor(source: str, target: str) -> float:
    for u in (source, target):
        if u not in TO_CM:
            raise ValueError(f"unknown length unit {u!r} (known: {', '.join(TO_CM)})")
    return TO_CM[source] / TO_CM[target]


# ------------------------------------------------------------------------------------------- readers
def read_mat(path) -> dict[str, np.ndarray]:
    """Variables of a MATLAB file (v4-v7 via scipy; v7.3 via h5py, transposed to MATLAB's shapes)."""
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    except NotImplementedError:  # v7.3 = HDF5
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k][()]).T for k in f if isinstance(f[k], h5py.Dataset)}
        except OSError as e:
            raise InputError(path, f"not a readable MATLAB v7.3 (HDF5) file ({e})") from None
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError) as e:
        raise InputError(path, f"not a readable MATLAB .mat file ({e})") from None


def read_number_list(path, dtype=float) -> np.ndarray:
    """A flat list of numbers from a .mat (its one numeric variable), .npy or whitespace/comma text file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.suffix == ".mat":
        arrays = [v for v in read_mat(path).values() if isinstance(v, np.ndarray) and v.dtype.kind in "iuf"]
        if len(arrays) != 1:
            raise InputError(path, f"expected one numeric array in this .mat file, found {len(arrays)}")
        values = arrays[0].ravel()
    elif path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False).ravel()
        except ValueError as e:
            raise InputError(path, f"not a plain numeric .npy array ({e})") from None
    else:
        try:
            values = np.array(path.read_text().replace(",", " ").split(), dtype=float)
        except ValueError:
            raise InputError(path, "expected a text file of numbers separated by spaces, commas or newlines") from None
    if values.dtype.kind not in "iuf":
        raise InputError(path, "expected numbers")
    if dtype is int:
        if not np.all(values == np.round(values)):
            raise InputError(path, "expected whole numbers (vertex indices)")
        return values.astype(np.int64)
    return values.astype(float)


def read_exp_pca_bin(path, n_vertices: int):
    """``(mean (n, 3), components (k, n, 3))`` of an Exp_Pca.bin file for ``n_vertices`` vertices (float64)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise InputError(path, "too short for an Exp_Pca.bin file (no component count)")
    k = int(np.frombuffer(raw[:4], "<i4")[0])
    n3 = 3 * n_vertices
    want = 4 + 4 * n3 * (k + 1)
    if k <= 0 or len(raw) != want:
        raise InputError(
            path,
            f"size {len(raw)} bytes does not match the Exp_Pca.bin layout for {n_vertices} vertices "
            f"(header says k={k} components: expected {want} bytes)",
        )
    data = np.frombuffer(raw[4:], "<f4").astype(float)
    return data[:n3].reshape(n_vertices, 3), data[n3:].reshape(k, n_vertices, 3)


def read_landmark_file(path, n_vertices: int) -> tuple[str, np.ndarray]:
    """``(kind, indices)`` from a correspondence JSON: kind 'mediapipe' (478) or 'ibug68' (68); -1 = none."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "file does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    base = 0
    if isinstance(data, dict):
        base = data.get("index_base", 0)
        keys = [k for k in ("mediapipe", "ibug68") if k in data]
        if len(keys) != 1 or base not in (0, 1):
            raise InputError(path, "expected {'mediapipe': [478 indices]} or {'ibug68': [68 indices]}, optional 'index_base': 0|1")
        data = data[keys[0]]
    if not isinstance(data, list) or len(data) not in (N_LANDMARKS, 68):
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise InputError(path, f"expected a list of {N_LANDMARKS} (MediaPipe) or 68 (iBUG) vertex indices, got {got}")
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in data):
        raise InputError(path, "vertex indices must be integers (or null for 'no correspondence')")
    idx = np.array([-1 if v is None else v - base for v in data], dtype=np.int64)
    bad = (idx != -1) & ((idx < 0) | (idx >= n_vertices))
    if bad.any():
        raise InputError(path, f"vertex index {data[int(np.flatnonzero(bad)[0])]} outside the model's {n_vertices} vertices (index_base {base})")
    kind = "mediapipe" if len(idx) == N_LANDMARKS else "ibug68"
    if kind == "ibug68" and (idx < 0).any():
        raise InputError(path, "all 68 iBUG indices are needed to embed the MediaPipe landmarks")
    return kind, idx


def landmark_correspondence(vertices, triangles, landmarks_path):
    """``(lm_tri, lm_bary, lm_weight, info)`` for a BFM mesh from a correspondence file (or none)."""
    n = len(vertices)
    if landmarks_path is None:
        tri0 = np.zeros(N_LANDMARKS, np.int64)
        bary = np.tile([1.0, 0.0, 0.0], (N_LANDMARKS, 1))
        return tri0, bary, np.zeros(N_LANDMARKS), {"landmarks": "none"}
    kind, idx = read_landmark_file(landmarks_path, n)
    if kind == "mediapipe":
        used = idx >= 0
        try:
            tri, bary = facemesh.vertex_correspondence(triangles, np.where(used, idx, triangles[0, 0]))
        except ValueError as e:
            raise InputError(landmarks_path, str(e)) from None
        return tri, bary, used.astype(float), {"landmarks": "mediapipe", "file": str(landmarks_path)}
    emb = facemesh.embed_landmarks(vertices, triangles, idx)
    weight = np.ones(N_LANDMARKS)
    weight[facemesh.FACE_OVAL] = facemesh.OVAL_WEIGHT
    weight[list(facemesh.IRIS)] = 0.0
    info = {"landmarks": "ibug68", "file": str(landmarks_path), "anchor_rms": emb.anchor_rms}
    return emb.tri, emb.bary, weight, info


# ------------------------------------------------------------------------------------------ BFM 2009
def _need(path, mat: dict, key: str, shape_desc: str) -> np.ndarray:
    if key not in mat:
        raise InputError(path, f"lacks variable '{key}' ({shape_desc}); is this a BFM 2009 01_MorphableModel.mat?")
    a = np.asarray(mat[key])
    if a.dtype.kind not in "iuf":
        raise InputError(path, f"variable '{key}' is not numeric")
    return a


def _interleaved(path, a: np.ndarray, key: str, n3: int | None = None) -> np.ndarray:
    """(3N,) or (3N, K) interleaved xyz → (N, 3) or (K, N, 3)."""
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    rows = a.shape[0]
    if rows % 3 or (n3 is not None and rows != n3):
        raise InputError(path, f"'{key}' has {rows} rows, expected {n3 if n3 else 'a multiple of 3'} (3 per vertex)")
    if a.ndim == 1:
        return a.reshape(-1, 3).astype(float)
    return np.ascontiguousarray(a.T.reshape(a.shape[1], -1, 3), dtype=float)


def _vector(path, a: np.ndarray, key: str, k: int) -> np.ndarray:
    v = np.asarray(a, float).ravel()
    if len(v) != k:
        raise InputError(path, f"'{key}' has {len(v)} values, expected {k} (one per component)")
    return v


def load_bfm2009(
    path,
    exp_path=None,
    exp_index_path=None,
    exp_std_path=None,
    landmarks_path=None,
    unit: str = "cm",
    exp_mean: str = "ignore",
    n_id: int | None = None,
    n_exp: int | None = None,
) -> MorphableModel:
    """BFM 2009 (+ optional Exp_Pca.bin expressions); see the module docstring."""
    path = Path(path)
    mat = read_mat(path)
    f = unit_factor("um", unit)
    mean = _interleaved(path, _need(path, mat, "shapeMU", "(3N, 1)"), "shapeMU")
    n = len(mean)
    pcs = _need(path, mat, "shapePC", "(3N, K)")
    if pcs.ndim != 2:
        raise InputError(path, f"'shapePC' has shape {pcs.shape}, expected (3N, K)")
    id_std = _vector(path, _need(path, mat, "shapeEV", "(K, 1)"), "shapeEV", pcs.shape[1])[:n_id]
    id_basis = _interleaved(path, pcs[:, :n_id], "shapePC", 3 * n)
    id_basis *= f
    tl = _need(path, mat, "tl", "(T, 3) 1-based")
    if tl.ndim != 2 or tl.shape[1] != 3 or tl.min() < 1 or tl.max() > n:
        raise InputError(path, f"'tl' must be (T, 3) 1-based vertex indices in 1..{n}")
    mean = mean * f
    triangles = orient_outward(mean, tl.astype(np.int64) - 1).astype(np.int32)
    albedo = None
    if "texMU" in mat:
        albedo = np.clip(_interleaved(path, np.asarray(mat["texMU"], float), "texMU", 3 * n) / 255.0, 0, 1)

    exp_basis, exp_std, exp_info = np.zeros((0, n, 3)), np.zeros(0), {}
    if exp_path is not None:
        exp_basis, exp_std, offset, exp_info = _bfm2009_expressions(exp_path, exp_index_path, exp_std_path, n)
        exp_basis, exp_std = exp_basis[:n_exp] * f, exp_std[:n_exp]
        if exp_mean == "add":
            mean = mean + offset * f
        elif exp_mean != "ignore":
            raise ValueError(f"exp_mean must be 'ignore' or 'add', not {exp_mean!r}")
    lm_tri, lm_bary, lm_weight, lm_info = landmark_correspondence(mean, triangles, landmarks_path)
    return MorphableModel(
        name="bfm2009" + ("+exp" if exp_path is not None else ""),
        mean=mean,
        id_basis=id_basis,
        id_std=id_std,
        exp_basis=exp_basis,
        exp_std=exp_std,
        triangles=triangles,
        lm_tri=lm_tri,
        lm_bary=lm_bary,
        lm_weight=lm_weight,
        unit=unit,
        albedo=albedo,
        extra={"provider": "bfm2009", "source": str(path), **exp_info, **lm_info},
    )


def _bfm2009_expressions(exp_path, index_path, std_path, n: int):
    """Expression basis scattered onto the n BFM vertices: (basis (k, n, 3), std (k,), mean offset (n, 3), info)."""
    if index_path is not None:
        index = read_number_list(index_path, int) - 1
        if index.min() < 0 or index.max() >= n:
            raise InputError(index_path, f"indices must be 1-based vertex numbers in 1..{n}")
        if len(np.unique(index)) != len(index):
            raise InputError(index_path, "indices repeat a vertex")
    else:
        index = np.arange(n)
    exp_mean, comps = read_exp_pca_bin(exp_path, len(index))
    k = len(comps)
    basis = np.zeros((k, n, 3))
    basis[:, index] = comps
    offset = np.zeros((n, 3))
    offset[index] = exp_mean
    if std_path is not None:
        std = read_number_list(std_path)
        if len(std) != k:
            raise InputError(std_path, f"has {len(std)} values, the expression file {exp_path} has {k} components")
        source = str(std_path)
    else:
        std, source = np.ones(k), "unit"
    info = {"exp_source": str(exp_path), "exp_std_source": source, "exp_vertices": int(len(index))}
    return basis, std, offset, info


# ------------------------------------------------------------------------------------------ BFM 2017
def _h5_model(path, f, group: str, n3: int | None, required: bool = True):
    need = [f"{group}/model/mean", f"{group}/model/pcaBasis", f"{group}/model/pcaVariance"]
    missing = [k for k in need if k not in f]
    if missing:
        if required:
            raise InputError(path, f"lacks {missing}; is this a BFM 2017/2019 .h5 model?")
        return None
    mean = np.asarray(f[need[0]][()], float).ravel()
    basis = np.asarray(f[need[1]][()], float)
    var = np.asarray(f[need[2]][()], float).ravel()
    if n3 is None:
        n3 = len(mean)
    if len(mean) != n3 or n3 % 3:
        raise InputError(path, f"'{need[0]}' has {len(mean)} values, expected {n3} (3 per vertex)")
    if basis.ndim != 2 or basis.shape != (n3, len(var)):
        raise InputError(path, f"'{need[1]}' has shape {basis.shape}, expected ({n3}, {len(var)}) (3N × components)")
    if (var < 0).any():
        raise InputError(path, f"'{need[2]}' holds negative variances")
    return mean.reshape(-1, 3), np.ascontiguousarray(basis.T.reshape(len(var), -1, 3)), np.sqrt(var)


def load_bfm2017(
    path,
    landmarks_path=None,
    unit: str = "cm",
    source_unit: str = "mm",
    n_id: int | None = None,
    n_exp: int | None = None,
) -> MorphableModel:
    """BFM 2017/2019 .h5 (statismo layout); see the module docstring."""

    path = Path(path)
    with h5io.open_file(path) as f:
        mean, id_basis, id_std = _h5_model(path, f, "shape", None)
        n = len(mean)
        expr = _h5_model(path, f, "expression", 3 * n, required=False)
        color = _h5_model(path, f, "color", 3 * n, required=False)
        if "shape/representer/cells" not in f:
            raise InputError(path, "lacks 'shape/representer/cells' (3, T) triangles")
        cells = np.asarray(f["shape/representer/cells"][()])
    if cells.ndim == 2 and cells.shape[0] != 3 and cells.shape[1] == 3:
        cells = cells.T  # some statismo writers store (T, 3)
    if cells.ndim != 2 or cells.shape[0] != 3 or cells.min() < 0 or cells.max() >= n:
        raise InputError(path, f"'shape/representer/cells' must be (3, T) 0-based vertex indices below {n}")
    fac = unit_factor(source_unit, unit)
    exp_basis, exp_std = np.zeros((0, n, 3)), np.zeros(0)
    if expr is not None:
        mean = mean + expr[0]
        exp_basis, exp_std = expr[1][:n_exp], expr[2][:n_exp]
    mean = mean * fac
    triangles = orient_outward(mean, cells.T.astype(np.int64)).astype(np.int32)
    lm_tri, lm_bary, lm_weight, lm_info = landmark_correspondence(mean, triangles, landmarks_path)
    return MorphableModel(
        name="bfm2017",
        mean=mean,
        id_basis=id_basis[:n_id] * fac,
        id_std=id_std[:n_id],
        exp_basis=exp_basis * fac,
        exp_std=exp_std,
        triangles=triangles,
        lm_tri=lm_tri,
        lm_bary=lm_bary,
        lm_weight=lm_weight,
        unit=unit,
        albedo=None if color is None else np.clip(color[0], 0, 1),
        extra={"provider": "bfm2017", "source": str(path), **lm_info},
    )
