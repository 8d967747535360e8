"""The transfer's head motion: each actor's reference pose, and the target's cameras following the source's
about the two references (:mod:`deep_puppets.transfer` uses it for ``pose+expression`` mode).

*Rotation.* The camera maps a model point as ``scale · F · R · X + t`` (:mod:`deep_puppets.camera`): ``R``
takes the head's own frame (x toward the subject's left, y up along the neck, z out of the face; every model
shares these axes) to the y-up camera frame, and the constant flip ``F`` sits left of it, outside any
composition. ``rotation_transfer`` (:func:`transfer_rotations`):

* ``angles`` (default): with ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` (:func:`deep_puppets.camera.yaw_pitch_roll`),
  ``angles_out(t) = angles_tref + angles_s(t) − angles_sref``. ``roll`` turns about the camera's axis, so the
  image-plane tilt of the target's head changes exactly as the source's (the ear line of an orthographic view
  turns by ``roll``); ``pitch`` is the nod about the head's own ear axis, ``yaw`` between the two;
* ``head``: the head-frame motion ``Δ(t) = R_sref⁻¹ · R_s(t)`` applied in the target's head frame,
  ``R_out = R_tref · Δ`` (the angle and axis in head coordinates equal the source's). A roll about a head that
  is turned or pitched at rest turns its image by less: on the four cross-person pairs the image-plane roll
  arrived at 0.80–0.87 of the source's amplitude;
* ``world``: ``R_out = R_s(t) · R_sref⁻¹ · R_tref``, the camera-frame motion: it turns the target about the
  source's camera axes, a tilted axis for a target whose reference pose differs (a pitch of a turned head
  rolls its image).

All agree when the references are equal (a self-transfer is exact with each). Measured on the four pairs of
README "Expression fidelity" (roll r against the source's detected landmarks, head / world / angles):
d3 → d6 0.970 / 0.996 / 0.993, d9 → German 0.979 / 0.991 / 0.993, M030 → feifeili 0.832 / 0.843 / 0.867,
d0 → d13 0.859 / 0.853 / 0.888, with yaw and pitch equal within 0.005 (``angles`` ≥ ``head`` on pitch).

*Head rotation inside the expression* (``anchor_rotation``, :func:`anchored_cameras`). A person model is a PCA
of the video's landmarks after a rigid fit, so its expression components also turn the head a little: the
:data:`HEAD_ANCHORS` (ear roots, temples, nose bridge; no real expression moves them) turn by up to 0.7–2.2°
(95th percentile) with the expressions of the eight clips. That rotation (:func:`anchor_rotations`, Kabsch on the
anchors) is head motion as the camera saw it: each actor's effective rotation is ``R · D(q)``; the effective
rotations are transferred as above, and the target's camera takes off ``D(q_out)``, the turn its own
transferred expression gives its anchors. On d0 → d13 (a head whose roll spans 1.1°) roll r rose from 0.888 to
0.943 (the source's own track: 0.944), on M030 → feifeili from 0.867 to 0.905 (0.907). Self-transfer stays
exact (``q_out = q_s``); ``expression`` mode keeps the target's camera untouched.

*Translation* (``tx, ty`` pixels and the depth offset ``tz``)::

    t_out(t) = t_tref + k · (t_s(t) − t_sref),     k = (scale_tref · size_t) / (scale_sref · size_s)

``k`` is the ratio of the two faces' sizes in pixels (``size``: RMS radius of the neutral face at the
correspondence points, model units; :func:`face_size`), so the target moves as many face-widths as the
source. *Scale*: ``scale_out(t) = scale_tref · scale_s(t) / scale_sref`` (the source's relative approach to the
camera; ``scale_motion=False`` holds the target's reference scale). The target's scale level (its camera
and image size) is kept either way.

*Pose range* (``pose_range``, :func:`limit_pose_range`). A person-specific generator only draws the head poses its
target showed, and the body and background under a head that moved further than the target's never match it; a
target that barely moved its head (a phone selfie: d13's yaw spans −0.5…1.8° and its image position 9 px over
90 % of its frames) cannot follow a source that turns by 20° and moves by a quarter of its face. The pose is
measured by six :data:`POSE_FEATURES` in degrees: yaw, pitch and roll, and, as degree equivalents, the image
shift and the log scale (the degrees a turn moves a point one face size from the centre by: a shift by 5 % of
the face size counts as 2.9°). :func:`pose_excess` is how far each frame leaves the target's own range (the 1st
to 99th percentiles over its valid frames); with ``pose_range = m`` degrees every feature is kept within that
range widened by ``m``, softly: untouched inside the range, ``hi + m · tanh((x − hi) / m)`` beyond it
(continuous slope at the bound, monotone, never past ``hi + m``; ``m = 0`` clips). ``None`` (the default)
follows the source whatever the target showed.
"""

from __future__ import annotations

import numpy as np

from .camera import project_rotation, rotation_log, rotation_matrix, yaw_pitch_roll, yaw_pitch_roll_matrix
from .errors import ConfigError, TransferError
from .fit_types import FitResult
from .models.base import MorphableModel

ROTATION_TRANSFERS = ("angles", "head", "world")
HEAD_ANCHORS = (234, 454, 127, 356, 6, 197)  # detector landmarks no expression moves: ear roots, temples, nose bridge


def usable_frames(camera: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) bool: frames flagged valid with a finite camera."""
    return np.asarray(valid, bool) & np.isfinite(np.asarray(camera, float)).all(axis=1)


def mean_rotation(R: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotation matrices (M, 3, 3): the rotation nearest to their arithmetic mean."""
    return project_rotation(np.mean(R, axis=0))


def median_rotation(R: np.ndarray, iterations: int = 50, tol: float = 1e-12) -> np.ndarray:
    """Geodesic L1 median of rotations (M, 3, 3) (Weiszfeld in the tangent space, from the chordal mean)."""
    med = mean_rotation(R)
    for _ in range(iterations):
        v = rotation_log(np.swapaxes(med, -1, -2) @ R)  # (M, 3): each rotation seen from the estimate
        w = 1.0 / np.maximum(np.linalg.norm(v, axis=1), 1e-9)
        step = (w[:, None] * v).sum(axis=0) / w.sum()
        med = med @ rotation_matrix(step)
        if np.linalg.norm(step) < tol:
            break
    return med


def reference_pose(camera: np.ndarray, valid: np.ndarray, rotation: str = "median") -> np.ndarray:
    """An actor's reference camera (7,) from its track's cameras (T, 7) over valid frames: rotation median
    (``rotation='median'``, geodesic) or chordal mean (``'mean'``); medians of tx, ty, tz and scale."""
    camera = np.asarray(camera, float)
    use = usable_frames(camera, valid)
    if not use.any():
        raise TransferError("the track has no valid frame with a finite camera: no reference pose")
    R = rotation_matrix(camera[use, :3])
    Rref = median_rotation(R) if rotation == "median" else mean_rotation(R)
    return np.r_[rotation_log(Rref), np.median(camera[use, 3:], axis=0)]


def transfer_rotations(r_source: np.ndarray, r_source_ref: np.ndarray, r_target_ref: np.ndarray, composition: str = "angles") -> np.ndarray:
    """Axis-angle (T, 3) of the target's rotations following the source's about the two references (module
    docstring, *Rotation*): ``'angles'`` adds the source's yaw/pitch/roll changes to the target's reference angles,
    ``'head'`` is ``R_tref · R_sref⁻¹ · R_s(t)``, ``'world'`` is ``R_s(t) · R_sref⁻¹ · R_tref``."""
    Rs, Rs_ref, Rt_ref = rotation_matrix(r_source), rotation_matrix(r_source_ref), rotation_matrix(r_target_ref)
    if composition == "head":
        return rotation_log(Rt_ref @ (Rs_ref.T @ Rs))
    if composition == "world":
        return rotation_log(Rs @ Rs_ref.T @ Rt_ref)
    if composition != "angles":
        raise ConfigError(f"rotation transfer must be one of {list(ROTATION_TRANSFERS)}, got {composition!r}")
    angles = yaw_pitch_roll(Rs) - yaw_pitch_roll(Rs_ref) + yaw_pitch_roll(Rt_ref)
    return rotation_log(np.stack([yaw_pitch_roll_matrix(*a) for a in angles.reshape(-1, 3)]).reshape(Rs.shape))


def anchor_rotations(model: MorphableModel, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(T, 3, 3): per frame, the rotation (Kabsch, about their centroid) that takes the :data:`HEAD_ANCHORS` of the
    neutral face (identity ``p``) to those of expressions ``q`` (T, K): the head rotation an expression carries
    (the identity for a frame whose ``q`` is not finite)."""
    idx = list(HEAD_ANCHORS)
    tri, w = model.triangles[model.lm_tri[idx]], model.lm_bary[idx]  # (n, 3) each
    base = np.einsum("nkd,nk->nd", model.shape(p)[tri], w)
    q = np.atleast_2d(np.asarray(q, float))
    finite = np.isfinite(q).all(axis=1)
    A = base + np.einsum("tj,jnkd,nk->tnd", np.where(finite[:, None], q, 0.0), model.exp_basis[:, tri], w)
    U, _, Vt = np.linalg.svd(np.einsum("tni,nj->tij", A - A.mean(axis=1, keepdims=True), base - base.mean(axis=0)))
    U[:, :, 2] *= np.sign(np.linalg.det(U @ Vt))[:, None]
    return U @ Vt


def _with_rotation(camera: np.ndarray, R: np.ndarray) -> np.ndarray:
    out = np.array(camera, float)
    out[..., :3] = rotation_log(R)
    return out


def anchored_cameras(source: FitResult, target: FitResult, source_model, target_model, refs, q_out: np.ndarray, size_ratio: float,
                     settings) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Target cameras (T, 7) of ``pose+expression`` mode and stats: :func:`transfer_cameras` of the rotations with each
    actor's :func:`anchor_rotations` counted in (``settings``: a :class:`~deep_puppets.transfer.TransferSettings`, its ``anchor_rotation``, ``scale_motion`` and
    ``rotation_transfer``; module docstring). ``refs``: (source
    reference camera, its expression, target reference camera, its expression)."""
    s_ref, qs_ref, t_ref, qt_ref = refs
    args = (size_ratio, settings.scale_motion, settings.rotation_transfer)
    if not settings.anchor_rotation:
        return transfer_cameras(source.camera, s_ref, t_ref, *args), {}
    use = np.asarray(source.valid, bool) & np.isfinite(source.q).all(axis=1)
    Ds = anchor_rotations(source_model, source.p, np.where(use[:, None], source.q, qs_ref))
    Dt = anchor_rotations(target_model, target.p, q_out)
    Rs_ref = rotation_matrix(s_ref[:3]) @ anchor_rotations(source_model, source.p, qs_ref)[0]
    Rt_ref = rotation_matrix(t_ref[:3]) @ anchor_rotations(target_model, target.p, qt_ref)[0]
    camera = transfer_cameras(_with_rotation(source.camera, rotation_matrix(source.camera[:, :3]) @ Ds), _with_rotation(s_ref, Rs_ref),
                              _with_rotation(t_ref, Rt_ref), *args)  # fmt: skip
    camera = _with_rotation(camera, rotation_matrix(camera[:, :3]) @ np.swapaxes(Dt, -1, -2))
    angle = lambda D: float(np.degrees(np.percentile(np.linalg.norm(rotation_log(D), axis=-1), 95))) if len(D) else 0.0  # noqa: E731
    return camera, {"anchor_rotation_p95_deg": {"source": angle(Ds[use]), "target": angle(Dt)}}


POSE_FEATURES = ("yaw", "pitch", "roll", "x", "y", "scale")


def pose_features(camera: np.ndarray, valid: np.ndarray, face_px: float) -> np.ndarray:
    """(T, 6) :data:`POSE_FEATURES` in degrees and degree equivalents (module docstring, *Pose range*): yaw, pitch,
    roll; the image shift ``tx``, ``ty`` and ``ln scale`` as the degrees a turn moves a point one face size
    (``face_px`` pixels) from the centre by. NaN rows on unusable frames."""
    camera = np.asarray(camera, float)
    out = np.full((len(camera), len(POSE_FEATURES)), np.nan)
    use = usable_frames(camera, valid) & (camera[:, 6] > 0)
    out[use, :3] = yaw_pitch_roll(rotation_matrix(camera[use, :3]))
    out[use, 3:5] = np.degrees(camera[use, 3:5] / face_px)
    out[use, 5] = np.degrees(np.log(camera[use, 6]))
    return out


def pose_range(camera: np.ndarray, valid: np.ndarray, face_px: float, quantiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """(2, 6): the low and high percentiles of an actor's own :func:`pose_features` over its usable frames."""
    f = pose_features(camera, valid, face_px)
    f = f[np.isfinite(f).all(axis=1)]
    if not len(f):
        raise TransferError("the target has no valid frame to take its head-pose range from")
    return np.percentile(f, quantiles, axis=0)


def pose_excess(camera: np.ndarray, valid: np.ndarray, bounds: np.ndarray, face_px: float) -> np.ndarray:
    """(T, 6) how far each frame's :func:`pose_features` leave ``bounds`` (0 inside; NaN on unusable frames)."""
    f = pose_features(camera, valid, face_px)
    lo, hi = bounds
    return np.maximum(np.maximum(lo - f, f - hi), 0.0)


def soft_limit(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: float) -> np.ndarray:
    """``x`` inside ``[lo, hi]``; beyond, ``hi + margin · tanh((x − hi) / margin)`` (and mirrored below ``lo``)."""
    x = np.asarray(x, float)
    if margin <= 0:
        return np.clip(x, lo, hi)
    over = hi + margin * np.tanh((x - hi) / margin)
    under = lo - margin * np.tanh((lo - x) / margin)
    return np.where(x > hi, over, np.where(x < lo, under, x))


def limit_pose_range(camera: np.ndarray, valid: np.ndarray, bounds: np.ndarray, margin: float, face_px: float) -> np.ndarray:
    """Cameras (T, 7) whose :func:`pose_features` stay within ``bounds`` widened by ``margin`` degrees
    (:func:`soft_limit`; module docstring, *Pose range*); the depth offset ``tz`` and unusable frames as given."""
    out = np.array(camera, float)
    f = pose_features(out, valid, face_px)
    rows = np.flatnonzero(np.isfinite(f).all(axis=1))
    if not len(rows):
        return out
    limited = soft_limit(f[rows], bounds[0], bounds[1], margin)
    turned = np.any(limited[:, :3] != f[rows, :3], axis=1)
    if turned.any():
        out[rows[turned], :3] = rotation_log(np.stack([yaw_pitch_roll_matrix(*a) for a in limited[turned, :3]]))
    out[rows, 3:5] = np.where(limited[:, 3:5] != f[rows, 3:5], np.radians(limited[:, 3:5]) * face_px, out[rows, 3:5])
    out[rows, 6] = np.where(limited[:, 5] != f[rows, 5], np.exp(np.radians(limited[:, 5])), out[rows, 6])
    return out


def transfer_cameras(camera: np.ndarray, source_ref: np.ndarray, target_ref: np.ndarray, size_ratio: float, scale_motion: bool = True,
                     rotation: str = "angles") -> np.ndarray:  # fmt: skip
    """Target cameras (T, 7) following source cameras (T, 7) relative to the two references (7,).

    ``size_ratio`` = size_t / size_s of the neutral faces in model units; translations scale by the ratio of
    the faces in pixels, ``k = scale_tref · size_t / (scale_sref · size_s)``; ``rotation``: :func:`transfer_rotations`.
    """
    camera = np.asarray(camera, float)
    out = np.empty_like(camera)
    out[:, :3] = transfer_rotations(camera[:, :3], source_ref[:3], target_ref[:3], rotation)
    k = target_ref[6] * size_ratio / source_ref[6]
    out[:, 3:6] = target_ref[3:6] + k * (camera[:, 3:6] - source_ref[3:6])
    out[:, 6] = target_ref[6] * camera[:, 6] / source_ref[6] if scale_motion else target_ref[6]
    return out
