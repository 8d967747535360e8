"""The camera of every fit: scaled orthographic (weak perspective), and the rotation helpers it needs.

Camera vector (7 numbers per frame, :data:`CAMERA_FIELDS`)::

    c = (rx, ry, rz, tx, ty, tz, scale)

``r = (rx, ry, rz)`` is an axis-angle rotation (angle = ‖r‖ in radians, Rodrigues), ``R = exp([r]×)``.
A model point ``X`` (model frame, model units; y up, z towards the viewer, as the morphable models have it)
lands in the image at::

    [u, v, d]ᵀ = scale · F · R · X + [tx, ty, tz]ᵀ,        F = diag(1, −1, −1)

``u, v`` are pixels of the full frame (x right, y down, origin at the top-left corner: the convention of the
MediaPipe landmarks, which are ``x_norm · width``, ``y_norm · height``). ``d`` is depth in pixels, growing
*away* from the viewer like MediaPipe's z (smaller = nearer; use it for z-buffering). ``tz`` only aligns ``d``
with the detector's relative depth; it plays no part in ``u, v``. ``F`` (a 180° turn about x) maps the
model's y-up/z-forward frame onto the image's y-down/z-away frame, so a frontal face has ``R ≈ I``.

There is no perspective division: every point of a face is scaled by the same ``scale`` (pixels per model
unit), which is the standard weak-perspective approximation for a face far from the camera compared with
its depth. A renderer reproduces the fit exactly with an orthographic projection of ``scale·F·R·X + t``.

Axis-angle vectors are unique only for angles below π: never interpolate them component-wise across frames;
use :func:`blend_rotations` (geodesic interpolation).

Yaw, pitch, roll (degrees) are for people, not for fitting: :func:`yaw_pitch_roll_matrix` builds
``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` and :func:`yaw_pitch_roll` decomposes it. The exports write a fit's
rotation in the model frame with them (:data:`EULER_CONVENTION`); the demo's ground truth uses the same
decomposition in image axes (:data:`deep_puppets.demo.ROTATION_CONVENTION`).
"""

from __future__ import annotations

import numpy as np

CAMERA_FIELDS = ("rx", "ry", "rz", "tx", "ty", "tz", "scale")
FLIP = np.diag([1.0, -1.0, -1.0])  # model frame (y up, z to viewer) -> image frame (y down, z away)
EULER_CONVENTION = (  # a fit's rotation as yaw, pitch, roll (the exports' parameter CSV and glTF extras)
    "R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in the model frame (x toward the subject's left, y up, z toward the viewer), "
    "degrees; image point (u, v, d) = scale * F @ R @ X + (tx, ty, tz), F = diag(1, -1, -1), X = model vertex "
    "(mean + identity + expression), u, v in pixels of the frame (y down), scaled orthographic"
)


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[v]×`` (..., 3, 3) of vectors (..., 3): ``[v]× w = v × w``."""
    v = np.asarray(v, dtype=float)
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def _angle_terms(r: np.ndarray):
    """θ², and the series-safe coefficients a = sin θ/θ, b = (1−cos θ)/θ², c = (θ − sin θ)/θ³."""
    th2 = np.sum(r * r, axis=-1)
    th = np.sqrt(th2)
    small = th2 < 1e-8
    ths = np.where(small, 1.0, th)
    a = np.where(small, 1 - th2 / 6, np.sin(ths) / ths)
    b = np.where(small, 0.5 - th2 / 24, (1 - np.cos(ths)) / ths**2)
    c = np.where(small, 1 / 6 - th2 / 120, (ths - np.sin(ths)) / ths**3)
    return a, b, c


def rotation_matrix(r: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle vectors (..., 3) → rotation matrices (..., 3, 3)."""
    r = np.asarray(r, dtype=float)
    a, b, _ = _angle_terms(r)
    k = skew(r)
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def yaw_pitch_roll_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees (not an axis-angle: see :func:`rotation_matrix`)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def yaw_pitch_roll(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`yaw_pitch_roll_matrix` (degrees), for |yaw| < 90."""
    r = np.asarray(rotation)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1, 1))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def left_jacobian(r: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobian (..., 3, 3): ``exp([r + ε]×) ≈ exp([J(r) ε]×) · exp([r]×)`` to first order."""
    r = np.asarray(r, dtype=float)
    _, b, c = _angle_terms(r)
    k = skew(r)
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + b[..., None, None] * k + c[..., None, None] * (k @ k)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) as (w, x, y, z) with w ≥ 0, from rotation matrices (Shepperd's method)."""
    R = np.asarray(R, dtype=float)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    cand = np.stack(
        [
            np.stack([1 + m00 + m11 + m22, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
            np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
            np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
            np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # (..., 4 candidates, 4): row i is 4·q·q_i, best conditioned where q_i² is largest
    best = np.argmax(np.stack([m00 + m11 + m22, m00, m11, m22], -1), axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) with angle in [0, π] of rotation matrices (..., 3, 3); stable near 0 and π."""
    q = matrix_to_quaternion(R)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1)
    angle = 2 * np.arctan2(s, q[..., 0])
    scale = np.where(s < 1e-12, 2.0, angle / np.where(s < 1e-12, 1.0, s))
    return v * scale[..., None]


def project_rotation(A: np.ndarray) -> np.ndarray:
    """The rotation matrix nearest (Frobenius) to each 3×3 matrix in ``A`` (..., 3, 3)."""
    U, _, Vt = np.linalg.svd(A)
    d = np.sign(np.linalg.det(U @ Vt))
    U = U.copy()
    U[..., :, 2] *= d[..., None]
    return U @ Vt


def blend_rotations(ra: np.ndarray, rb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Geodesic interpolation of axis-angle rotations: ``w = 0`` gives ``ra``, ``w = 1`` gives ``rb``."""
    Ra, Rb = rotation_matrix(ra), rotation_matrix(rb)
    rel = rotation_log(Rb @ np.swapaxes(Ra, -1, -2))
    return rotation_log(rotation_matrix(np.asarray(w)[..., None] * rel) @ Ra)


def blend_cameras(ca: np.ndarray, cb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Interpolate cameras (..., 7): rotation geodesically, translation/depth offset/scale linearly."""
    ca, cb, w = np.asarray(ca, float), np.asarray(cb, float), np.asarray(w, float)
    out = ca + w[..., None] * (cb - ca)
    out[..., :3] = blend_rotations(ca[..., :3], cb[..., :3], w)
    return out


def camera_matrices(camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)`` with ``A = scale·F·R`` (..., 3, 3) and ``t = (tx, ty, tz)`` (..., 3) of cameras (..., 7)."""
    camera = np.asarray(camera, dtype=float)
    A = camera[..., 6, None, None] * (FLIP @ rotation_matrix(camera[..., :3]))
    return A, camera[..., 3:6]


def project(points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Image positions ``(u, v, d)`` (..., N, 3) of model points (..., N, 3) under cameras (..., 7).

    ``points`` and ``camera`` broadcast over their leading axes (e.g. points (T, N, 3) with camera (T, 7)).
    """
    A, t = camera_matrices(camera)
    return np.einsum("...ij,...nj->...ni", A, np.asarray(points, dtype=float)) + t[..., None, :]
