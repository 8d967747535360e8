"""The default model: a person-specific linear face model on the MediaPipe topology, built from one video.

Zero downloads: everything comes from the video's own landmarks (T, 478, 3) in pixels (x right, y down, z
MediaPipe's relative depth scaled like x) and the per-frame ``valid`` flags.

Build (:func:`build_person_model`):

1. frames flagged valid and free of NaN are taken into a y-up model frame ``(x, -y, -z)``;
2. rigid alignment: a generalised Procrustes (similarity: scale, rotation, translation) of every frame on
   :data:`~.facemesh.STABLE_POINTS` (forehead, nose bridge and tip, eye corners, ear roots; no mouth, jaw or
   brows), first onto MediaPipe's canonical face, then a few times onto the per-vertex median of the aligned
   frames; frames whose stable-point residual is an outlier (median + ``outlier_mads`` robust SDs) are left
   out (bad detections);
3. identity = the video's neutral shape: the per-vertex median of the aligned frames with the least
   expression (the ``neutral_quantile`` of frames closest to the all-frame median);
4. canonical frame: the neutral and all frames are moved by one similarity onto the canonical face's stable
   points. The model's frame is thus MediaPipe's canonical face frame (x toward the subject's left, i.e.
   image right, y up, z out of the face, origin inside the head near the rotation centre) and its unit is
   ``canonical_cm``: centimetres if the person's face is as large as the canonical face (a single video
   cannot tell true size; the fitter's camera absorbs it);
5. expression basis = principal components of the aligned, neutral-subtracted shapes (second moment about
   the neutral, so q = 0 is the neutral face): ``exp_std = sqrt(eigenvalue)``, and the fraction of the
   variance each component explains is kept (``extra['explained_variance_ratio']``). Gaze is part of it:
   the iris points move with the eyes in the data.

Identity basis: empty (K_id = 0). The neutral IS the identity of this one person; one video holds no
information about how other identities vary, and fitting this person's own video needs only expression and
pose. Models of two people share the topology and the canonical frame, so an expression is carried from one
to the other by its vertex displacement (:func:`transfer_matrix`).

Mesh: 478 vertices, vertex i = landmark i (so ``lm_tri``/``lm_bary`` put weight 1 on vertex i). The 852
FaceMesh triangles plus, for each iris, a fan of 4 triangles (centre + 4 contour points) filling the iris
disk: renderable, and the irises are in the model so gaze can be fitted and transferred.

Stored per video in an HDF5 file of layout ``person_model`` (:func:`save_model`, :func:`load_person_model`); the
layout holds any :class:`MorphableModel`, with float64 arrays so the content hash survives the round trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import h5io
from ..errors import InputError
from ..files import json_text
from . import facemesh
from .base import N_LANDMARKS, MorphableModel
from .geometry import apply_similarity, similarity_transform

# build_person_model's least number of frames with a face (its ``min_frames``; the landmark gate needs as many)
PERSON_MODEL_MIN_FRAMES = 30

UNIT = "canonical_cm"

def _check_model(arrays: dict, attrs: dict) -> str | None:
    """Finite geometry and priors, standard deviations and landmark weights >= 0."""
    names = ("mean", "id_basis", "id_std", "exp_basis", "exp_std", "lm_bary", "lm_weight", "albedo")
    problems = [h5io.nonfinite(n, arrays[n]) for n in names if n in arrays]
    problems += [h5io.out_of_range(n, arrays[n], 0.0, np.inf) for n in ("id_std", "exp_std", "lm_weight")]
    return h5io.first_problem(*problems)


PERSON_MODEL = h5io.Layout(
    name="person_model",
    version=1,
    doc=(
        "A linear morphable face model, V = mean + Σ p_i id_basis[i] + Σ q_j exp_basis[j]; the person-specific "
        "model built from one video's landmarks (MediaPipe topology, 478 vertices = landmarks, canonical face "
        "frame: x image right, y up, z toward the viewer) and any other MorphableModel saved for reuse."
    ),
    datasets={
        "mean": h5io.Dataset("float64", ("N", 3), "mean (neutral) shape, model units"),
        "id_basis": h5io.Dataset("float64", ("K_id", "N", 3), "identity components (K_id = 0 for a person model)"),
        "id_std": h5io.Dataset("float64", ("K_id",), "prior standard deviation of each identity coefficient"),
        "exp_basis": h5io.Dataset("float64", ("K_exp", "N", 3), "expression components (unit norm for PCA)"),
        "exp_std": h5io.Dataset("float64", ("K_exp",), "prior standard deviation of each expression coefficient"),
        "triangles": h5io.Dataset("int32", ("F", 3), "0-based triangles, counter-clockwise seen from the front"),
        "lm_tri": h5io.Dataset("int64", (478,), "triangle holding each of the 478 detector landmarks"),
        "lm_bary": h5io.Dataset("float64", (478, 3), "barycentric weights of each landmark in its triangle"),
        "lm_weight": h5io.Dataset("float64", (478,), "confidence in each landmark's correspondence (0 = unused)"),
        "albedo": h5io.Dataset("float64", ("N", 3), "mean albedo in [0, 1]", optional=True),
        "explained_variance_ratio": h5io.Dataset(
            "float64", ("K_exp",), "fraction of the aligned shapes' variance about the neutral per component", optional=True
        ),
        "frame_residual": h5io.Dataset(
            "float32", ("T",), "per input frame: RMS stable-point residual of the rigid alignment (model units); NaN if unused",
            optional=True,
        ),
        "neutral_frames": h5io.Dataset("int64", ("M",), "input frames whose median is the neutral", optional=True),
    },
    attrs={
        "name": "model name",
        "provider": "what built the model ('person', 'ict', ...)",
        "unit": "length unit of the vertices",
        "exp_names": "JSON list of expression component names (empty when they have no meaning)",
        "content_hash": "MorphableModel.content_hash() of the stored model (checked on load)",
        "build": "JSON of the build settings and statistics",
    },
    check=_check_model,
)

_EXTRA_DATASETS = ("explained_variance_ratio", "frame_residual", "neutral_frames")
_RESERVED_ATTRS = set(PERSON_MODEL.attrs) | {"layout", "layout_version"}


# ----------------------------------------------------------------------------------------------- mesh
def person_triangles() -> np.ndarray:
    """The 852 FaceMesh triangles + an iris fan of 4 triangles per eye (860, 3), all facing the viewer."""
    fans = []
    for iris in (facemesh.RIGHT_IRIS, facemesh.LEFT_IRIS):
        c, ring = iris[0], iris[1:]  # ring order +x, +y, -x, -y: counter-clockwise seen from +z
        fans += [(c, ring[k], ring[(k + 1) % 4]) for k in range(4)]
    return np.concatenate([facemesh.triangles(), np.array(fans, dtype=np.int32)]).astype(np.int32)


# ------------------------------------------------------------------------------------------ alignment
def to_model_frame(landmarks_px: np.ndarray) -> np.ndarray:
    """Image landmarks (x right, y down, z into the screen) → a y-up, z-toward-viewer frame: (x, -y, -z)."""
    return np.asarray(landmarks_px, float) * np.array([1.0, -1.0, -1.0])


def batched_similarity(src: np.ndarray, dst: np.ndarray):
    """Similarity of each shape ``src[t]`` (T, P, 3) onto one target ``dst`` (P, 3), vectorised.

    Returns ``(scale (T,), rot (T, 3, 3), t (T, 3))`` with ``dst ≈ scale · rot @ src + t``.
    """
    mu_s = src.mean(axis=1)
    mu_d = dst.mean(axis=0)
    xs = src - mu_s[:, None]
    xd = dst - mu_d
    cov = np.einsum("pi,tpj->tij", xd, xs)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(src), 3))
    d[:, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    rot = np.einsum("tij,tj,tjk->tik", u, d, vt)
    scale = (sig * d).sum(axis=1) / (xs**2).sum(axis=(1, 2))
    t = mu_d - scale[:, None] * np.einsum("tij,tj->ti", rot, mu_s)
    return scale, rot, t


def _apply_batched(shapes, scale, rot, t):
    return scale[:, None, None] * np.einsum("tij,tpj->tpi", rot, shapes) + t[:, None]


def align_frames(shapes: np.ndarray, stable=facemesh.STABLE_POINTS, iterations: int = 3):
    """Generalised Procrustes of shapes (T, 478, 3) on the ``stable`` points; returns (aligned, rms (T,)).

    Starts from the canonical face's stable points, then aligns onto the per-vertex median of the aligned
    stable points ``iterations`` times; the result is in (roughly) canonical size and orientation.
    """
    target = facemesh.canonical_face()[stable]
    for _ in range(iterations + 1):
        scale, rot, t = batched_similarity(shapes[:, stable], target)
        aligned = _apply_batched(shapes, scale, rot, t)
        target = np.median(aligned[:, stable], axis=0)
    rms = np.sqrt(((aligned[:, stable] - target) ** 2).sum(axis=2).mean(axis=1))
    return aligned, rms


def robust_inliers(values: np.ndarray, n_mads: float) -> np.ndarray:
    """values ≤ median + n_mads · 1.4826 · MAD (a robust standard deviation)."""
    med = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - med))
    return values <= med + n_mads * max(mad, 1e-12)


def neutral_shape(aligned: np.ndarray, quantile: float):
    """Per-vertex median of the frames closest to the all-frame median; returns (neutral, frame indices)."""
    median = np.median(aligned, axis=0)
    dev = np.sqrt(((aligned - median) ** 2).sum(axis=2).mean(axis=1))
    count = max(1, int(round(quantile * len(aligned))))
    chosen = np.sort(np.argsort(dev, kind="stable")[:count])
    return np.median(aligned[chosen], axis=0), chosen


def principal_components(deltas: np.ndarray, n_components: int):
    """PCA (second moment about zero) of deltas (M, N, 3): (basis (K, N, 3), std (K,), explained ratio (K,))."""
    m, n, _ = deltas.shape
    flat = deltas.reshape(m, n * 3)
    gram = flat.T @ flat / m
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:n_components]
    evals = np.clip(evals[order], 0.0, None)
    comps = evecs[:, order].T  # (K, 3N), unit norm
    # deterministic signs: the largest-magnitude entry of each component is positive
    flip = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps *= flip[:, None]
    total = max(float(np.trace(gram)), 1e-300)
    return comps.reshape(-1, n, 3), np.sqrt(evals), evals / total


# ---------------------------------------------------------------------------------------------- build
def build_person_model(
    landmarks: np.ndarray,
    valid: np.ndarray,
    n_components: int = 20,
    *,
    name: str = "person",
    neutral_quantile: float = 0.2,
    outlier_mads: float = 6.0,
    iterations: int = 3,
    min_frames: int = PERSON_MODEL_MIN_FRAMES,
) -> MorphableModel:
    """Person-specific model from one video's landmarks (T, 478, 3) in pixels and ``valid`` (T,).

    Raises ``ValueError`` with a clear message when there are too few usable frames (the caller, which knows
    the file, turns it into an :class:`InputError`).
    """
    landmarks = np.asarray(landmarks)
    valid = np.asarray(valid, bool)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (N_LANDMARKS, 3):
        raise ValueError(f"landmarks must have shape (T, {N_LANDMARKS}, 3), got {landmarks.shape}")
    if valid.shape != landmarks.shape[:1]:
        raise ValueError(f"valid must have shape ({landmarks.shape[0]},), got {valid.shape}")
    usable = valid & np.isfinite(landmarks).all(axis=(1, 2))
    frames = np.flatnonzero(usable)
    need = max(min_frames, n_components + 1)
    if len(frames) < need:
        raise ValueError(f"only {len(frames)} usable frames with a face; a person model needs at least {need}")

    shapes = to_model_frame(landmarks[frames])
    aligned, rms = align_frames(shapes, iterations=iterations)
    inlier = robust_inliers(rms, outlier_mads)
    aligned, used = aligned[inlier], frames[inlier]

    neutral, chosen = neutral_shape(aligned, neutral_quantile)
    stable = facemesh.STABLE_POINTS
    s, rot, t = similarity_transform(neutral[stable], facemesh.canonical_face()[stable])
    neutral = apply_similarity(neutral, s, rot, t)
    aligned = apply_similarity(aligned, s, rot, t)

    k = min(n_components, len(aligned) - 1)
    basis, std, ratio = principal_components(aligned - neutral, k)

    residual = np.full(len(landmarks), np.nan, np.float32)
    residual[frames] = rms * s
    tri = person_triangles()
    lm_tri, lm_bary = facemesh.vertex_correspondence(tri, np.arange(N_LANDMARKS))
    build = {
        "n_frames": int(len(landmarks)),
        "n_valid": int(len(frames)),
        "n_used": int(len(used)),
        "n_outliers": int((~inlier).sum()),
        "n_neutral_frames": int(len(chosen)),
        "n_components": int(k),
        "neutral_quantile": neutral_quantile,
        "outlier_mads": outlier_mads,
        "explained_variance": float(ratio.sum()),
        "alignment_rms_median": float(np.median(rms) * s),
    }
    return MorphableModel(
        name=name,
        mean=neutral,
        id_basis=np.zeros((0, N_LANDMARKS, 3)),
        id_std=np.zeros(0),
        exp_basis=basis,
        exp_std=std,
        triangles=tri,
        lm_tri=lm_tri,
        lm_bary=lm_bary,
        lm_weight=np.ones(N_LANDMARKS),
        unit=UNIT,
        extra={
            "provider": "person",
            "explained_variance_ratio": ratio,
            "frame_residual": residual,
            "neutral_frames": used[chosen],
            "iris_vertices": np.array(facemesh.IRIS),
            "build": build,
        },
    )


def transfer_matrix(src: MorphableModel, dst: MorphableModel, ridge: float = 1e-2) -> np.ndarray:
    """Matrix M (K_dst, K_src) with ``q_dst = M @ q_src`` carrying expressions between two models of the
    same topology and frame (e.g. two person models): least-squares match of the vertex displacements,
    with a ridge ``ridge · Σ (q_dst / exp_std)²`` that keeps the result within the target's prior."""
    if src.n_vertices != dst.n_vertices:
        raise ValueError(f"models have {src.n_vertices} and {dst.n_vertices} vertices; transfer needs one topology")
    a = dst.exp_basis.reshape(dst.n_exp, -1).T  # (3N, K_dst)
    b = src.exp_basis.reshape(src.n_exp, -1).T  # (3N, K_src)
    reg = ridge * np.diag(1.0 / np.maximum(dst.exp_std, 1e-12) ** 2)
    return np.linalg.solve(a.T @ a + reg, a.T @ b)


# ------------------------------------------------------------------------------------------- storage
def save_model(path, model: MorphableModel, attrs: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (layout ``person_model``, atomic). ``attrs``: extra attributes (e.g. video)."""
    attrs = dict(attrs or {})
    clash = set(attrs) & _RESERVED_ATTRS
    if clash:
        raise ValueError(f"attributes {sorted(clash)} are set by save_model")
    arrays = {
        "mean": model.mean,
        "id_basis": model.id_basis,
        "id_std": model.id_std,
        "exp_basis": model.exp_basis,
        "exp_std": model.exp_std,
        "triangles": model.triangles,
        "lm_tri": model.lm_tri,
        "lm_bary": model.lm_bary,
        "lm_weight": np.ones(N_LANDMARKS) if model.lm_weight is None else model.lm_weight,
    }
    if model.albedo is not None:
        arrays["albedo"] = model.albedo
    arrays.update({k: model.extra[k] for k in _EXTRA_DATASETS if k in model.extra})
    attrs.update(
        name=model.name,
        provider=str(model.extra.get("provider", "unknown")),
        unit=model.unit,
        exp_names=json.dumps(list(model.exp_names)),
        content_hash=model.content_hash(),
        build=json_text(model.extra.get("build", {}), sort_keys=True),
    )
    return h5io.write(path, PERSON_MODEL, arrays, attrs)


def load_person_model(path) -> MorphableModel:
    """Read a model written by :func:`save_model`; :class:`InputError` when the file is not one or was altered.

    The file's attributes are in ``model.extra['attrs']``.
    """
    arrays, attrs = h5io.read(path, PERSON_MODEL)
    if arrays["lm_tri"].max(initial=0) >= len(arrays["triangles"]) or arrays["triangles"].max(initial=0) >= len(arrays["mean"]):
        raise InputError(path, "triangle or landmark indices point past the end of the mesh")
    try:
        exp_names = tuple(json.loads(attrs["exp_names"]))
        build = json.loads(attrs["build"])
    except (TypeError, ValueError) as e:
        raise InputError(path, f"attribute exp_names or build is not valid JSON ({e})") from None
    extra = {k: arrays[k] for k in _EXTRA_DATASETS if k in arrays}
    extra.update(provider=attrs["provider"], build=build, attrs=attrs)
    if attrs["provider"] == "person":
        extra["iris_vertices"] = np.array(facemesh.IRIS)
    model = MorphableModel(
        name=str(attrs["name"]),
        mean=arrays["mean"],
        id_basis=arrays["id_basis"],
        id_std=arrays["id_std"],
        exp_basis=arrays["exp_basis"],
        exp_std=arrays["exp_std"],
        triangles=arrays["triangles"],
        lm_tri=arrays["lm_tri"],
        lm_bary=arrays["lm_bary"],
        lm_weight=arrays["lm_weight"],
        exp_names=exp_names,
        unit=str(attrs["unit"]),
        albedo=arrays.get("albedo"),
        extra=extra,
    )
    if model.content_hash() != attrs["content_hash"]:
        raise InputError(path, "model content does not match its recorded content_hash (file altered or corrupted)")
    return model
