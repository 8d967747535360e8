"""Synthetic morphable models and landmark sequences with known ground truth (tests and benchmarks).

Not a face model anyone should render: a curved "face" patch with smooth random identity and localised
random expression deformations, sized like a real head (centimetres), and landmark tracks drawn from it
through the fit's own camera model with Gaussian pixel noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay

from deep_puppets.camera import project
from deep_puppets.landmark_basis import LandmarkBasis
from deep_puppets.models.base import N_LANDMARKS, MorphableModel

IOD_CM = 6.3  # inter-ocular distance used to express errors for the synthetic model and ICT (centimetres)


def _rigid_modes(X: np.ndarray) -> np.ndarray:
    """Orthonormal basis (7, N·3) of the infinitesimal similarity motions of the point set X (N, 3)."""
    c = X - X.mean(axis=0)
    modes = [np.tile(e, (len(X), 1)) for e in np.eye(3)]
    modes += [np.cross(e, c) for e in np.eye(3)]
    modes.append(c)
    Q, _ = np.linalg.qr(np.stack([m.ravel() for m in modes], axis=1))
    return Q.T


def _non_rigid(fields: np.ndarray, X: np.ndarray, rms: float) -> np.ndarray:
    """Deformation fields (K, N, 3) without their rigid part, each scaled to ``rms`` displacement."""
    Q = _rigid_modes(X)
    f = fields.reshape(len(fields), -1)
    f = f - (f @ Q.T) @ Q
    f *= rms / np.sqrt(np.mean(f**2, axis=1, keepdims=True) * 3)
    return f.reshape(fields.shape)


def synthetic_model(n_vertices: int = 478, k_id: int = 10, k_exp: int = 20, seed: int = 0, name: str = "synthetic") -> MorphableModel:
    """A face-sized (cm) curved patch with smooth identity and localised expression bases.

    With ``n_vertices == 478`` landmark ``l`` sits on vertex ``l`` (the MediaPipe-topology situation of the
    default person model); otherwise landmarks are random points of random triangles.
    """
    rng = np.random.default_rng(seed)
    # points on an ellipse-shaped patch, z bulging towards the viewer (+z), a nose bump in the middle
    u = rng.uniform(-1, 1, size=(4 * n_vertices, 2))
    u = u[np.sum(u**2, axis=1) <= 1][:n_vertices]
    x, y = 7.0 * u[:, 0], 9.0 * u[:, 1]
    z = 6.0 * np.sqrt(np.clip(1 - u[:, 0] ** 2 * 0.7 - u[:, 1] ** 2 * 0.5, 0, None)) + 2.0 * np.exp(-(x**2 + (y + 1) ** 2) / 4)
    mean = np.stack([x, y, z - 5.0], axis=1)  # origin behind the face, like a head centre
    triangles = Delaunay(mean[:, :2]).simplices.astype(np.int32)
    # identity: smooth polynomial fields; expression: localised Gaussian bumps
    basis_fns = np.stack([np.ones_like(x), u[:, 0], u[:, 1], u[:, 0] ** 2, u[:, 1] ** 2, u[:, 0] * u[:, 1], u[:, 0] ** 3, u[:, 1] ** 3], 1)
    id_fields = np.einsum("nf,kfd->knd", basis_fns, rng.normal(size=(k_id, basis_fns.shape[1], 3)))
    centres = mean[rng.integers(0, len(mean), k_exp)]
    radius = rng.uniform(2.0, 4.0, k_exp)
    bump = np.exp(-np.sum((mean[None] - centres[:, None]) ** 2, axis=2) / (2 * radius[:, None] ** 2))
    exp_fields = bump[..., None] * rng.normal(size=(k_exp, 1, 3))
    id_basis = _non_rigid(id_fields, mean, 0.4) if k_id else np.zeros((0, len(mean), 3))
    exp_basis = _non_rigid(exp_fields, mean, 0.3) if k_exp else np.zeros((0, len(mean), 3))
    if len(mean) == N_LANDMARKS:
        lm_tri = np.array([np.flatnonzero((triangles == v).any(axis=1))[0] for v in range(N_LANDMARKS)])
        lm_bary = (triangles[lm_tri] == np.arange(N_LANDMARKS)[:, None]).astype(float)
    else:
        lm_tri = rng.integers(0, len(triangles), N_LANDMARKS)
        lm_bary = rng.dirichlet(np.ones(3), N_LANDMARKS)
    return MorphableModel(
        name=name,
        mean=mean,
        id_basis=id_basis,
        id_std=np.ones(k_id),
        exp_basis=exp_basis,
        exp_std=np.ones(k_exp),
        triangles=triangles,
        lm_tri=lm_tri.astype(np.int64),
        lm_bary=lm_bary,
        unit="cm",
    )


@dataclass
class Sequence:
    """Ground truth and the landmarks drawn from it."""

    p: np.ndarray
    q: np.ndarray  # (T, K_exp)
    camera: np.ndarray  # (T, 7)
    landmarks: np.ndarray  # (T, 478, 3) float32, noisy
    valid: np.ndarray  # (T,)


def smooth_noise(rng, T: int, k: int, period: float) -> np.ndarray:
    """Smooth random curves (T, k) with unit standard deviation and features about ``period`` frames long."""
    n_knots = max(4, int(T / period) + 4)
    knots = rng.normal(size=(n_knots, k))
    t = np.linspace(0, n_knots - 3, T)
    i = np.clip(t.astype(int), 0, n_knots - 4)
    f = t - i
    # uniform cubic B-spline
    w = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], 1) / 6
    out = sum(w[:, j, None] * knots[i + j] for j in range(4))
    return out / np.sqrt(2 / 3)


def synthetic_motion(model: MorphableModel, T: int, seed: int = 1, face_px: float = 220.0, period: float = 25.0, exp_amplitude: float = 1.0, p=None):
    """Ground truth (p, q (T, K_exp), camera (T, 7)): smooth head motion (±25° yaw, ±12° pitch, ±8° roll),
    drifting translation, a face ``face_px`` pixels high, smooth expressions of ``exp_amplitude`` prior
    standard deviations (activations, e.g. ICT's blendshapes, as their magnitude within [0, 1]), identity from the
    prior (unless given)."""
    from deep_puppets.models.ict import activation_components

    rng = np.random.default_rng(seed)
    if p is None:
        p = rng.normal(size=model.n_id) * model.id_std
    q = exp_amplitude * smooth_noise(rng, T, model.n_exp, period) * model.exp_std
    act = activation_components(model)
    q[:, act] = np.clip(np.abs(q[:, act]), 0.0, 1.0)
    cam = np.zeros((T, 7))
    cam[:, :3] = smooth_noise(rng, T, 3, 2 * period) * np.radians([12, 25, 8]) / 2
    cam[:, 3:5] = np.array([320.0, 240.0]) + 20 * smooth_noise(rng, T, 2, 3 * period)
    cam[:, 6] = face_px / np.ptp(model.mean[:, 1]) * (1 + 0.05 * smooth_noise(rng, T, 1, 3 * period)[:, 0])
    return p, q, cam


def draw_landmarks(model: MorphableModel, p, q, camera, noise_px: float, seed: int = 2, chunk: int = 1000) -> np.ndarray:
    """Detector-like landmarks (T, 478, 3) float32: the model's landmark points through the camera plus
    Gaussian noise of ``noise_px`` in x, y and z (computed in chunks: no mesh per frame is formed)."""
    rng = np.random.default_rng(seed)
    basis = LandmarkBasis.from_model(model, all_landmarks=True)
    out = np.empty((len(q), N_LANDMARKS, 3), np.float32)
    for i in range(0, len(q), chunk):
        sl = slice(i, i + chunk)
        lm = project(basis.points(p, q[sl]), camera[sl])
        out[sl] = lm + rng.normal(scale=noise_px, size=lm.shape)
    return out


def synthetic_sequence(model: MorphableModel, T: int, noise_px: float = 2.0, seed: int = 1, p=None, **motion) -> Sequence:
    """A ground-truth sequence (see :func:`synthetic_motion` for ``motion``) and its noisy landmarks."""
    p, q, cam = synthetic_motion(model, T, seed=seed, p=p, **motion)
    return Sequence(p, q, cam, draw_landmarks(model, p, q, cam, noise_px, seed=seed + 1000), np.ones(T, bool))
