"""Closed-form scaled-orthographic camera estimation: the start of every fit.

Per frame, a weighted affine fit of a rigid shape (the model's mean landmarks) to the detected landmarks, made
a camera by projecting its 2×3 linear part to the nearest scaled rotation (the orthonormal rows of its SVD,
scale the mean singular value); frames without a face are interpolated. The cameras follow
:mod:`deep_puppets.camera`; :mod:`deep_puppets.fitting` refines them with the full model.
"""

from __future__ import annotations

import numpy as np

from .camera import CAMERA_FIELDS, FLIP, project_rotation, rotation_log


def scaled_orthographic_cameras(shape: np.ndarray, landmarks: np.ndarray, weight: np.ndarray, valid: np.ndarray, mask=None, chunk: int = 256):
    """Cameras (T, 7) of the rigid ``shape`` (L, 3) seen at ``landmarks`` (T, L, 3) (x, y pixels, z depth;
    0 where missing) with landmark weights ``weight`` (L,), and their reference rotation ``R0``.

    The rotations are stored *relative* to ``R0`` (the rotation nearest to the mean of the frames'):
    axis-angle of ``R_t R0ᵀ``. Frames where ``valid`` is false are interpolated linearly between faces (held
    beyond the first and last face). ``mask`` (T, L) bool, if given, zeroes the weight of missing landmarks;
    frames are processed ``chunk`` at a time. Returns ``(camera, R0)``.
    """
    T, L = len(valid), len(shape)
    Xh = np.concatenate([shape, np.ones((L, 1))], axis=1)  # (L, 4)
    cam = np.zeros((T, len(CAMERA_FIELDS)))
    Rs = np.zeros((T, 3, 3))
    valid_frames = np.flatnonzero(valid)
    for i in range(0, len(valid_frames), chunk):
        frames = valid_frames[i : i + chunk]
        y = np.asarray(landmarks[frames], dtype=float)  # missing landmarks are 0 there, with weight 0
        w = weight if mask is None else weight * mask[frames]
        w = np.broadcast_to(w, y.shape[:2])
        G = (w @ (Xh[:, :, None] * Xh[:, None, :]).reshape(L, 16)).reshape(-1, 4, 4)
        G += 1e-9 * np.trace(G, axis1=1, axis2=2)[:, None, None] * np.eye(4)
        rhs = Xh.T @ (w[..., None] * y)  # (t, 4, 3)
        Aff = np.linalg.solve(G, rhs)  # (t, 4, 3): [A | t]ᵀ for x, y, z
        A2 = np.swapaxes(Aff[:, :3, :2], 1, 2)  # (t, 2, 3)
        U, sv, Vt = np.linalg.svd(A2, full_matrices=False)
        rows = U @ Vt  # (t, 2, 3) orthonormal rows nearest to A2 / s
        M = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
        s = sv.mean(axis=1)
        pred = s[:, None, None] * (shape @ np.swapaxes(M, 1, 2))
        wsum = w.sum(axis=1)[:, None]
        cam[frames, 3:6] = np.einsum("tl,tlj->tj", w, y - pred) / wsum
        cam[frames, 6] = s
        Rs[frames] = FLIP @ M
    R0 = project_rotation(Rs[valid_frames].sum(axis=0))
    cam[:, :3] = rotation_log(Rs @ R0.T)
    return _interpolate_missing(cam, valid), R0


def _interpolate_missing(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a face (held constant beyond the first/last face)."""
    if valid.all():
        return x
    t, good = np.arange(len(valid)), np.flatnonzero(valid)
    out = x.copy()
    for j in range(x.shape[1]):
        out[~valid, j] = np.interp(t[~valid], good, x[good, j])
    return out
