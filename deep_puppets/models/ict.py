"""ICT Face Model Light (ICT-FaceKit ``FaceXModel``, MIT) as a :class:`MorphableModel`.

Sources: the packed ``ict_facekit_light_packed.npz`` (keys: neutral, identity_deltas, expression_deltas,
expression_names, triangles, triangle_material, material_names, idx_to_landmark_verts, ...) or the original
``FaceXModel`` folder (generic_neutral_mesh.obj, identity000.obj ... identity099.obj, one OBJ per expression
named in vertex_indices.json, and vertex_indices.json itself), read with a small numpy OBJ reader (no pickle).
:func:`pack_ict_folder` turns a folder into the npz once (reading 154 OBJs takes a while).

Model: ``V = neutral + Σ p_i identity_deltas[i] + Σ q_j expression_deltas[j]``, in centimetres, x toward
the subject's left, y up, z toward the viewer, triangles counter-clockwise from the front.

- identity: the 100 identity deltas, ``id_std = 1`` (weights ~ N(0, 1));
- expression: the 53 ARKit-named blendshapes (weights meant to lie in [0, 1]) with ``exp_std = 0.5`` by
  default, plus 2 gaze components appended (``gaze=True``): ``gazeYaw`` (+ = toward the image right) and
  ``gazePitch`` (+ = up), the linearised rotation (radians) of both eyeballs about their centres (ICT's
  eyeLook* blendshapes move the lids only), prior std 0.25 rad;
- regions: ``"face"`` (default) keeps the face area (vertices 0..9408) and both eyeballs (sclera + iris), ~12.5k
  of 26.7k vertices, for a fast fit; ``"full"`` keeps everything (head, neck, mouth socket, teeth, ...) for
  rendering. Coefficients mean the same in both; ``extra['vertex_ids']`` maps region vertices to the full
  mesh;
- detector correspondence: the 468 mesh landmarks are embedded on the skin (``M_Face``) with
  :func:`~.facemesh.embed_landmarks` from ICT's 68 iBUG landmark vertices (~0.03 s, computed at each load, so
  no cache); the 10 iris points are put on the iris meshes: centre straight ahead of the eyeball centre,
  contour 0.585 cm around it. Face-oval landmarks get ``lm_weight`` 0.3 (their image position is a silhouette
  whose place on the mesh depends on the pose), the ring of lid skin above each upper lid margin 0 (it does not
  follow ICT's eyeBlink: :data:`EYELID_SKIN_WEIGHT`); all others 1.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import facemesh
from .base import N_LANDMARKS, MorphableModel
from .geometry import closest_points_on_mesh, fit_sphere

FACE_LAST_VERTEX = 9408  # vertices 0..9408: full face area (README)
EYE_MATERIALS = {"right": ("M_ScleraRight", "M_IrisRight"), "left": ("M_ScleraLeft", "M_IrisLeft")}
REGION_MATERIALS = ("M_Face", "M_ScleraLeft", "M_IrisLeft", "M_ScleraRight", "M_IrisRight")
GAZE_NAMES = ("gazeYaw", "gazePitch")
# Weight of the detector's upper-lid skin ring (facemesh.EYELID_SKIN) in an ICT fit. 0: eyeBlink moves ICT's lid skin
# by 71 % of the margin's travel, the detector's ring by 0-40 %, so at any weight above 0 the ring holds the lid open
# (the fitted track of d3 closed 1 of its 6 blinks at weight 1 and 5 at 0; at 0.3 its eyes' amplitude against the
# detections was 0.85 / 0.81, at 0 0.93 / 0.88).
EYELID_SKIN_WEIGHT = 0.0
ONE_SIDED_PROVIDERS = ("ict",)  # providers whose named components are activations in [0, 1] (gaze excepted)


def activation_components(model: MorphableModel) -> np.ndarray:
    """(K_exp,) bool: the expression components that are activations in [0, 1] (ICT's ARKit blendshapes; not
    its signed gaze components, nor any component of a PCA model)."""
    names = tuple(model.exp_names)
    if model.extra.get("provider") not in ONE_SIDED_PROVIDERS or len(names) != model.n_exp:
        return np.zeros(model.n_exp, bool)
    return np.array([bool(n) and n not in GAZE_NAMES for n in names], bool)


# the components that close and open the subject's left and right eye (as named_expressions' eye_left, eye_right)
EYE_COMPONENTS = (("eyeBlink_L", "eyeBlink_R"), ("eyeWide_L", "eyeWide_R"))


def eye_components(model: MorphableModel) -> np.ndarray | None:
    """(2, 2) indices ``[[close left, close right], [open left, open right]]`` of the expression components that
    close and open each eye (ICT: eyeBlink_L/R, eyeWide_L/R), or None for a model without them (a PCA model)."""
    names = tuple(model.exp_names)
    wanted = [n for pair in EYE_COMPONENTS for n in pair]
    if model.extra.get("provider") not in ONE_SIDED_PROVIDERS or not all(n in names for n in wanted):
        return None
    return np.array([[names.index(n) for n in pair] for pair in EYE_COMPONENTS])


REQUIRED_KEYS = (
    "neutral",
    "identity_deltas",
    "expression_deltas",
    "expression_names",
    "triangles",
    "triangle_material",
    "material_names",
    "idx_to_landmark_verts",
)
NEUTRAL_OBJ = "generic_neutral_mesh.obj"
INDEX_JSON = "vertex_indices.json"


# ----------------------------------------------------------------------------------------- OBJ reading
def read_obj_vertices(path) -> np.ndarray:
    """The ``v`` lines of an OBJ file as (V, 3) float64 (extra per-vertex values, e.g. colours, ignored)."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise InputError(path, f"cannot read OBJ file ({e.strerror or e})") from None
    rows = [ln.split()[1:4] for ln in lines if ln.startswith(b"v ")]
    if not rows:
        raise InputError(path, "OBJ file has no vertices ('v' lines)")
    try:
        v = np.array(rows, dtype=float)
    except ValueError:
        raise InputError(path, "OBJ 'v' lines must hold three numbers") from None
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(path, "OBJ 'v' lines must hold three numbers")
    return v


def read_obj_faces(path, n_vertices: int):
    """Faces of an OBJ file, split into triangles (fan from each face's first corner).

    Returns ``(triangles (F, 3) int32, material (F,) int16, material_names, source_face (F,))``; a face's
    material is the last ``usemtl`` before it (-1 when none). Negative (relative) indices are resolved.
    """
    path = Path(path)
    materials: list[str] = []
    current = -1
    tris, mats, src = [], [], []
    face = 0
    for ln in path.read_bytes().splitlines():
        if ln.startswith(b"usemtl"):
            name = ln.split(maxsplit=1)[1].decode().strip() if len(ln.split()) > 1 else ""
            if name not in materials:
                materials.append(name)
            current = materials.index(name)
        elif ln.startswith(b"f "):
            try:
                idx = [int(tok.split(b"/")[0]) for tok in ln.split()[1:]]
            except ValueError:
                raise InputError(path, f"malformed face line {ln[:60].decode(errors='replace')!r}") from None
            if len(idx) < 3:
                raise InputError(path, f"face with fewer than 3 corners: {ln[:60].decode(errors='replace')!r}")
            idx = [i - 1 if i > 0 else n_vertices + i for i in idx]
            for k in range(1, len(idx) - 1):
                tris.append((idx[0], idx[k], idx[k + 1]))
                mats.append(current)
                src.append(face)
            face += 1
    tri = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if len(tri) == 0:
        raise InputError(path, "OBJ file has no faces ('f' lines)")
    if tri.min() < 0 or tri.max() >= n_vertices:
        raise InputError(path, f"face indices outside 1..{n_vertices}")
    return tri.astype(np.int32), np.array(mats, np.int16), np.array(materials), np.array(src, np.int32)


def read_ict_folder(folder) -> dict[str, np.ndarray]:
    """The arrays of :data:`REQUIRED_KEYS` (same meaning as the packed npz) from a FaceXModel folder."""
    folder = Path(folder)
    index_path = folder / INDEX_JSON
    try:
        index = json.loads(index_path.read_text())
        names = [str(n) for n in index["expressions"]]
        lm = np.array(index["idx_to_landmark_verts"], dtype=np.int64)
    except FileNotFoundError:
        raise InputError(index_path, "missing: an ICT FaceXModel folder needs vertex_indices.json") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(index_path, f"not a valid ICT vertex_indices.json ({e!r})") from None
    neutral_path = folder / NEUTRAL_OBJ
    if not neutral_path.exists():
        raise InputError(neutral_path, "missing: an ICT FaceXModel folder needs the generic neutral mesh")
    neutral = read_obj_vertices(neutral_path)
    triangles, material, material_names, _ = read_obj_faces(neutral_path, len(neutral))
    id_paths = sorted(p for p in folder.iterdir() if re.fullmatch(r"identity\d+\.obj", p.name))
    if not id_paths:
        raise InputError(folder, "no identityNNN.obj files in this ICT FaceXModel folder")

    def deltas(paths):
        out = np.empty((len(paths),) + neutral.shape, np.float32)
        for i, p in enumerate(paths):
            if not p.exists():
                raise InputError(p, "missing: listed in vertex_indices.json 'expressions'")
            v = read_obj_vertices(p)
            if v.shape != neutral.shape:
                raise InputError(p, f"has {len(v)} vertices, the neutral mesh has {len(neutral)}")
            out[i] = v - neutral
        return out

    return {
        "neutral": neutral.astype(np.float32),
        "identity_deltas": deltas(id_paths),
        "expression_deltas": deltas([folder / f"{n}.obj" for n in names]),
        "expression_names": np.array(names),
        "triangles": triangles,
        "triangle_material": material,
        "material_names": material_names,
        "idx_to_landmark_verts": lm,
    }


def pack_ict_folder(folder, out_path) -> Path:
    """Read a FaceXModel folder once and write the arrays to a compressed npz that :func:`load_ict` reads fast."""
    arrays = read_ict_folder(folder)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out_path)
    return out_path


def read_ict_npz(path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The arrays of :data:`REQUIRED_KEYS` from a packed ICT npz."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=allow_pickle) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise InputError(path, f"not an ICT Face Model npz: lacks {missing}")
            return {k: z[k] for k in REQUIRED_KEYS}
    except FileNotFoundError:
        raise InputError(path, "file does not exist") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(path, f"not a readable npz file ({e})") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(path, "holds pickled objects; pickle can run code, set allow_pickle: true only for a file you trust") from None
        raise InputError(path, f"unreadable npz ({e})") from None


def read_ict(path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """ICT arrays from an npz file or a FaceXModel folder, checked for consistent shapes."""
    path = Path(path)
    arrays = read_ict_folder(path) if path.is_dir() else read_ict_npz(path, allow_pickle)
    _check_arrays(path, arrays)
    return arrays


def _check_arrays(path, a: dict) -> None:
    n = a["neutral"].shape
    if len(n) != 2 or n[1] != 3:
        raise InputError(path, f"neutral has shape {n}, expected (N, 3)")
    for key in ("identity_deltas", "expression_deltas"):
        if a[key].ndim != 3 or a[key].shape[1:] != n:
            raise InputError(path, f"{key} has shape {a[key].shape}, expected (K, {n[0]}, 3)")
    if len(a["expression_names"]) != len(a["expression_deltas"]):
        raise InputError(path, "expression_names and expression_deltas differ in length")
    tri = a["triangles"]
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= n[0]:
        raise InputError(path, f"triangles must be (F, 3) indices into the {n[0]} vertices")
    if a["triangle_material"].shape != (len(tri),):
        raise InputError(path, "triangle_material must have one entry per triangle")
    lm = a["idx_to_landmark_verts"]
    if lm.shape != (68,) or lm.min() < 0 or lm.max() >= n[0]:
        raise InputError(path, "idx_to_landmark_verts must hold 68 vertex indices")
    missing = [m for m in REGION_MATERIALS if m not in list(a["material_names"])]
    if missing:
        raise InputError(path, f"materials {missing} missing (needed to find the skin and the eyes)")


# ------------------------------------------------------------------------------------------------ model
def _material_triangles(a: dict, name: str) -> np.ndarray:
    return np.flatnonzero(a["triangle_material"] == list(a["material_names"]).index(name))


def eyeballs(a: dict) -> dict[str, dict]:
    """Per eye ('right' = subject's right, x < 0): vertex ids, centre (sphere fit of the sclera), iris triangles."""
    out = {}
    tri = a["triangles"]
    neutral = a["neutral"].astype(float)
    for side, (sclera, iris) in EYE_MATERIALS.items():
        st, it = _material_triangles(a, sclera), _material_triangles(a, iris)
        centre, _ = fit_sphere(neutral[np.unique(tri[st])])
        out[side] = {"vertices": np.unique(tri[np.r_[st, it]]), "centre": centre, "iris_triangles": it}
    if out["right"]["centre"][0] > out["left"]["centre"][0]:  # names disagree with geometry: trust geometry
        out["right"], out["left"] = out["left"], out["right"]
    return out


def gaze_deltas(neutral: np.ndarray, eyes: dict) -> np.ndarray:
    """(2, N, 3): linearised eyeball rotation per radian, yaw (+ toward +x) then pitch (+ up)."""
    out = np.zeros((2,) + neutral.shape)
    for eye in eyes.values():
        r = neutral[eye["vertices"]] - eye["centre"]
        out[0, eye["vertices"]] = np.c_[r[:, 2], np.zeros(len(r)), -r[:, 0]]  # ŷ × r
        out[1, eye["vertices"]] = np.c_[np.zeros(len(r)), r[:, 2], -r[:, 1]]  # (−x̂) × r
    return out


def iris_correspondence(neutral: np.ndarray, triangles: np.ndarray, eyes: dict, radius: float):
    """(tri (10,), bary (10, 3)) of landmarks 468..477 on the iris meshes, eyes looking along +z."""
    tris, barys = [], []
    for side, _ids in (("right", facemesh.RIGHT_IRIS), ("left", facemesh.LEFT_IRIS)):
        eye = eyes[side]
        c = eye["centre"]
        iris_v = neutral[np.unique(triangles[eye["iris_triangles"]])]
        reach = np.linalg.norm(iris_v - c, axis=1).max()  # distance to the front of the iris
        sin = min(radius / reach, 1.0)
        cos = np.sqrt(1 - sin**2)
        dirs = [(0, 0, 1), (sin, 0, cos), (0, sin, cos), (-sin, 0, cos), (0, -sin, cos)]
        targets = c + reach * np.array(dirs, float)
        t, b, _ = closest_points_on_mesh(targets, neutral, triangles, candidates=eye["iris_triangles"])
        tris.append(t)
        barys.append(b)
    return np.concatenate(tris), np.concatenate(barys)


def region_vertices(a: dict, region: str) -> np.ndarray:
    if region == "full":
        return np.arange(len(a["neutral"]))
    if region == "face":
        eyes = [np.unique(a["triangles"][_material_triangles(a, m)]) for side in EYE_MATERIALS.values() for m in side]
        return np.unique(np.concatenate([np.arange(FACE_LAST_VERTEX + 1)] + eyes))
    raise ValueError(f"unknown ICT region {region!r} (use 'face' or 'full')")


def load_ict(
    path,
    region: str = "face",
    exp_std: float = 0.5,
    gaze: bool = True,
    gaze_std: float = 0.25,
    iris_radius: float = facemesh.IRIS_RADIUS_CM,
    allow_pickle: bool = False,
) -> MorphableModel:
    """The ICT Face Model Light from an npz or a FaceXModel folder (see the module docstring)."""
    a = read_ict(path, allow_pickle)
    neutral = a["neutral"].astype(float)
    triangles = a["triangles"].astype(np.int64)
    eyes = eyeballs(a)

    emb = facemesh.embed_landmarks(neutral, triangles, a["idx_to_landmark_verts"], candidates=_material_triangles(a, "M_Face"))
    lm_tri, lm_bary = emb.tri.copy(), emb.bary.copy()
    lm_tri[facemesh.N_MESH_VERTICES :], lm_bary[facemesh.N_MESH_VERTICES :] = iris_correspondence(neutral, triangles, eyes, iris_radius)
    lm_weight = np.ones(N_LANDMARKS)
    lm_weight[facemesh.FACE_OVAL] = facemesh.OVAL_WEIGHT
    lm_weight[facemesh.EYELID_SKIN] = EYELID_SKIN_WEIGHT

    exp = a["expression_deltas"].astype(float)
    names = tuple(str(n) for n in a["expression_names"])
    std = np.full(len(exp), float(exp_std))
    if gaze:
        exp = np.concatenate([exp, gaze_deltas(neutral, eyes)])
        names += GAZE_NAMES
        std = np.r_[std, gaze_std, gaze_std]

    vids = region_vertices(a, region)
    full_to_region = np.full(len(neutral), -1)
    full_to_region[vids] = np.arange(len(vids))
    keep = (full_to_region[triangles] >= 0).all(axis=1)
    if region == "face":
        allowed = [list(a["material_names"]).index(m) for m in REGION_MATERIALS]
        keep &= np.isin(a["triangle_material"], allowed)
    tri_ids = np.flatnonzero(keep)
    tri_map = np.full(len(triangles), -1)
    tri_map[tri_ids] = np.arange(len(tri_ids))
    assert (tri_map[lm_tri] >= 0).all(), "landmark triangles must lie in the region"

    return MorphableModel(
        name=f"ict-facekit-light:{region}",
        mean=neutral[vids],
        id_basis=a["identity_deltas"][:, vids].astype(float),
        id_std=np.ones(len(a["identity_deltas"])),
        exp_basis=exp[:, vids],
        exp_std=std,
        triangles=full_to_region[triangles[tri_ids]].astype(np.int32),
        lm_tri=tri_map[lm_tri],
        lm_bary=lm_bary,
        lm_weight=lm_weight,
        exp_names=names,
        unit="cm",
        extra={
            "provider": "ict",
            "region": region,
            "source": str(path),
            "vertex_ids": vids,
            "triangle_ids": tri_ids,
            "triangle_material": a["triangle_material"][tri_ids],
            "material_names": np.array(a["material_names"]),
            "ibug68_vertices": full_to_region[a["idx_to_landmark_verts"]],
            "eye_centres": np.stack([eyes["right"]["centre"], eyes["left"]["centre"]]),
            "embedding": {"anchor_rms": emb.anchor_rms, "max_surface_distance": float(emb.distance.max())},
        },
    )
