"""Monocular face reconstruction: fit a morphable model to the detector landmarks of a video segment.

Unknowns: identity ``p`` (shared by all frames; fixed when given), and per frame the expression ``q_t`` and the
camera ``c_t`` (see :mod:`deep_puppets.camera` for the scaled-orthographic camera and :func:`camera.project`).
All frames of a segment are fitted at once, minimising

    E = Σ_t valid Σ_l a_l ρ(e_tl) / σ²                                  (landmark reprojection, robust)
      + w_id ‖p / id_std‖² + w_exp Σ_t ‖q_t / exp_std‖²                 (Gaussian priors of the model)
      + λ_q Σ_t ‖Δ²q_t‖²_Sq + λ_c Σ_t ‖Δ²c_t‖²_Sc                      (second differences in time)
      + hold Σ_t invalid ‖c_t − c⁰_t‖²_Sc                               (keeps faceless stretches put)

with ``e_tl² = (u − x)² + (v − y)² + z_weight·(d − z)²`` the distance of the projected model landmark ``l`` to the
detection (``d``/``z`` depth, defined up to the per-frame offset ``tz``), ``a_l`` the model's landmark weight,
``ρ`` Huber (or Geman-McClure) with scale ``robust_px``, ``σ = sigma_px`` the landmark noise, and
``Δ²x_t = x_{t−1} − 2x_t + x_{t+1}``.

*Scale-free smoothing weights.* ``S_q``, ``S_c`` are the diagonal of the data term's Hessian for one frame of
the mean face at a frontal pose and the segment's median scale: ``‖Δ²x‖²_S`` is then "summed squared landmark
acceleration in units of σ²", and λ has the meaning of a Whittaker smoother's parameter on each landmark
track, independent of image size, face size, model units and σ: λ (2 − 2 cos ω)² = 1 at the cut-off angular
frequency ω (radians per frame); λ = 1 cuts at ~1/6 cycle per frame (5 Hz at 30 fps), λ = 10 at ~1/11
(2.7 Hz), λ = 100 at ~1/20 (1.5 Hz).

*Solver.* Levenberg-Marquardt on the Gauss-Newton normal equations with IRLS weights. Per-frame unknowns
``x_t = (q_t, ω_t, t_t, s_t)`` are coupled only by the second differences, so the normal matrix is
block-pentadiagonal with *diagonal* off-diagonal blocks: :func:`solve_block_pentadiagonal` factors it with a
block Cholesky in O(T n³) time and O(T n²) memory, never a matrix over all frames. A free identity is the
border of that system and is eliminated by its Schur complement. Rotations are ``R_t = exp([ω_t]×) R₀`` around
the segment's mean rotation ``R₀``, so ω is a smooth, unambiguous vector to difference; the stored camera holds
the absolute axis-angle of ``R_t``.

*Cost.* The data Hessian needs ``Σ_l w_l B_lᵀ P_t B_l`` (B = expression basis at the landmarks, P_t the
projection of frame t); it is assembled from nine precomputed basis Gram matrices with unit weights, minus a
correction over the few landmarks whose robust weight is below one, so its cost does not grow with L·K².
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtri

from . import h5io
from .camera import FLIP, left_jacobian, project, project_rotation, rotation_log, rotation_matrix, skew
from .errors import ConfigError, DeepPuppetsError
from .models.base import MorphableModel

_EPS = np.zeros((3, 3, 3))  # Levi-Civita symbol: (a × b)_c = ε_cad a_a b_d
_EPS[0, 1, 2] = _EPS[1, 2, 0] = _EPS[2, 0, 1] = 1.0
_EPS[0, 2, 1] = _EPS[2, 1, 0] = _EPS[1, 0, 2] = -1.0
_CROSS = _EPS.transpose(2, 1, 0).reshape(9, 3)  # rows (d, a), columns c: ε_cad
N_CAMERA = 7  # (rx, ry, rz, tx, ty, tz, scale), see camera.CAMERA_FIELDS
CHUNK = 256  # frames per chunk when assembling the normal equations (bounds temporary memory)


class FitError(DeepPuppetsError):
    """The fit cannot run on this input (e.g. no frame with a face)."""


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FitSettings:
    """Weights and stopping rules of the fit; every length is in pixels of the video frame."""

    lambda_q: float = 1.0  # expression smoothing (Whittaker λ per landmark track; 0 = off)
    lambda_c: float = 10.0  # camera smoothing (same units)
    iterations: int = 15  # most Levenberg-Marquardt iterations
    tolerance: float = 1e-6  # stop when the energy falls by less than this fraction in one iteration
    sigma_px: float = 2.0  # landmark noise σ; weighs the data against the model priors
    robust: str = "huber"  # "huber" or "geman_mcclure" (IRLS), "none" for plain least squares
    robust_px: float = 5.0  # robust scale: residuals beyond it count less than quadratically
    z_weight: float = 0.1  # weight of the detector depth (relative to x, y) in the landmark distance
    id_prior: float = 1.0  # weight of the identity prior ‖p/id_std‖²
    exp_prior: float = 1.0  # weight of the expression prior ‖q/exp_std‖²
    hold: float = 1e-3  # faceless frames: weight (relative to λ_c = 1) pulling the camera to its start value

    def __post_init__(self):
        for name in ("lambda_q", "lambda_c", "tolerance", "z_weight", "id_prior", "exp_prior", "hold"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"fit.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("sigma_px", "robust_px"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fit.{name} must be > 0, got {getattr(self, name)!r}")
        if self.robust not in ROBUST:
            raise ConfigError(f"fit.robust must be one of {sorted(ROBUST)}, got {self.robust!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ConfigError(f"fit.iterations must be a non-negative integer, got {self.iterations!r}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> FitSettings:
        """Settings from the ``fit`` section of the config; missing keys take the defaults above."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"fit: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**cfg)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _huber(e, k):
    rho = np.where(e <= k, e * e, 2 * k * e - k * k)
    return rho, np.where(e <= k, 1.0, k / np.maximum(e, 1e-300))


def _geman_mcclure(e, k):
    f = 1 / (1 + (e / k) ** 2)
    return e * e * f, f * f


def _least_squares(e, k):
    return e * e, np.ones_like(e)


# ρ(e) with ρ = e² near 0, and the IRLS weight ψ = ρ'(e) / 2e ∈ (0, 1]
ROBUST = {"huber": _huber, "geman_mcclure": _geman_mcclure, "none": _least_squares}


# ---------------------------------------------------------------------------------------------- results


@dataclass
class FitResult:
    """A fitted segment (or a merged track): everything the renderer and the transfer need."""

    p: np.ndarray  # (K_id,) identity
    q: np.ndarray  # (T, K_exp) expression
    camera: np.ndarray  # (T, 7) rx, ry, rz, tx, ty, tz, scale (camera.CAMERA_FIELDS)
    valid: np.ndarray  # (T,) bool: the detector found a face (others are bridged, not measured)
    residual: np.ndarray  # (T,) mean 2D landmark error in pixels; NaN where not valid
    iterations: int = 0
    energy: float = float("nan")
    converged: bool = False
    settings: FitSettings = field(default_factory=FitSettings)

    @property
    def n_frames(self) -> int:
        return len(self.valid)


def model_landmarks(model: MorphableModel, p, q) -> np.ndarray:
    """The 478 detector landmarks on the model (model frame): (T, 478, 3) for q (T, K_exp)."""
    return model.landmark_points(model.shape(p, q))


def projected_landmarks(model: MorphableModel, result: FitResult) -> np.ndarray:
    """Image positions (T, 478, 3) = (u, v, d) of the model landmarks of a fit; what the fit compares."""
    basis = LandmarkBasis.from_model(model, all_landmarks=True)
    return project(basis.points(result.p, result.q), result.camera)


# ------------------------------------------------------------------------------- model at the landmarks


@dataclass(frozen=True)
class LandmarkBasis:
    """The morphable model restricted to the detector landmarks it places (weight > 0)."""

    index: np.ndarray  # (L,) which of the 478 detector landmarks
    weight: np.ndarray  # (L,) the model's confidence a_l
    mean: np.ndarray  # (L, 3)
    id_basis: np.ndarray  # (K_id, L, 3)
    exp_basis: np.ndarray  # (K_exp, L, 3)
    id_std: np.ndarray
    exp_std: np.ndarray

    @classmethod
    def from_model(cls, model: MorphableModel, all_landmarks: bool = False) -> LandmarkBasis:
        w = np.ones(model.lm_tri.shape[0]) if model.lm_weight is None else np.asarray(model.lm_weight, float)
        index = np.arange(len(w)) if all_landmarks else np.flatnonzero(w > 0)
        if len(index) < 4:
            raise FitError(f"model {model.name!r} places fewer than 4 detector landmarks")
        tri = model.triangles[model.lm_tri[index]]  # (L, 3) vertex ids
        bary = model.lm_bary[index]

        def at(arr):  # (..., N, 3) -> (..., L, 3)
            return np.einsum("...lkd,lk->...ld", arr[..., tri, :], bary)

        return cls(index, w[index], at(model.mean), at(model.id_basis), at(model.exp_basis), model.id_std, model.exp_std)

    def points(self, p, q) -> np.ndarray:
        """Landmark positions (model frame): (T, L, 3) for p (K_id,) and q (T, K_exp)."""
        q = np.atleast_2d(np.asarray(q, float))
        base = self.mean if not len(p) else self.mean + np.tensordot(np.asarray(p, float), self.id_basis, 1)
        return base + (q @ self.exp_basis.reshape(len(self.exp_basis), -1)).reshape(len(q), -1, 3)


# ----------------------------------------------------------------------------------------- the solver


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with OpenBLAS on one thread: the solver's many tiny matrix products are several times
    slower when OpenBLAS wakes its thread pool for each. No-op where OpenBLAS is not found."""
    libs = _openblas_thread_setters()
    old = [get() for get, _ in libs]
    for _, set_ in libs:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), n in zip(libs, old):
            set_(n)


@functools.lru_cache(maxsize=1)
def _openblas_thread_setters() -> tuple:
    try:
        maps = open("/proc/self/maps").read()
    except OSError:
        return ()
    found = []
    for path in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("openblas", "scipy_openblas"):
            for suffix in ("", "64_"):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    found.append((get, set_))
    return tuple(found)


def solve_block_pentadiagonal(A: np.ndarray, b: np.ndarray, c: np.ndarray, rhs: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Solve ``M x = rhs`` for the symmetric positive definite block-pentadiagonal ``M`` with

    - diagonal blocks ``A[t]`` (T, n, n),
    - blocks ``M[t, t+1] = diag(b[t])`` (T−1, n) and ``M[t, t+2] = diag(c[t])`` (T−2, n),

    ``rhs`` (T, n) or (T, n, m). Block Cholesky ``M = L Lᵀ`` with lower bidiagonal-plus-one blocks; storage is
    the inverse diagonal factors and the first sub-diagonal blocks (2·T·n² numbers, ``A``'s memory is reused
    when ``overwrite``); the second sub-diagonal ``L[t+2, t] = diag(c[t]) L[t, t]⁻ᵀ`` is never stored. The
    unknowns are first scaled to a unit diagonal (Jacobi) for conditioning.
    """
    A = np.asarray(A, dtype=float)
    T, n, _ = A.shape
    if T == 0:
        return np.zeros_like(rhs, dtype=float)
    b = np.asarray(b, float).reshape(max(T - 1, 0), n)
    c = np.asarray(c, float).reshape(max(T - 2, 0), n)
    rhs = np.asarray(rhs, dtype=float)
    vec = rhs.ndim == 2
    r = rhs[..., None] if vec else rhs
    d = 1.0 / np.sqrt(np.einsum("tii->ti", A))  # Jacobi scaling
    if overwrite:
        A *= d[:, :, None]
        A *= d[:, None, :]
    else:
        A = A * d[:, :, None] * d[:, None, :]
    b = b * d[:-1] * d[1:]
    c = c * d[:-2] * d[2:]
    r = r * d[:, :, None]
    with single_threaded_blas():
        Linv, L1 = _factor(A, b, c)
        x = _substitute(Linv, L1, c, r)
    x *= d[:, :, None]
    return x[..., 0] if vec else x


def _factor(A, b, c):
    """Block Cholesky in place: returns (Linv, L1) with Linv[t] = L[t,t]⁻¹ (in A's memory), L1[t] = L[t,t−1]."""
    T, n, _ = A.shape
    Linv, L1 = A, np.zeros_like(A)
    L2 = None
    for t in range(T):
        S = A[t]
        if t >= 2:
            L2 = c[t - 2][:, None] * Linv[t - 2].T  # L[t, t−2]
            S = S - L2 @ L2.T
        if t >= 1:
            W = np.diag(b[t - 1])
            if t >= 2:
                W -= L2 @ L1[t - 1].T
            L1[t] = W @ Linv[t - 1].T
            S = S - L1[t] @ L1[t].T
        L, info = dpotrf(S, lower=1, clean=1)
        if info:
            raise np.linalg.LinAlgError(f"normal equations not positive definite at frame {t}")
        Linv[t], info = dtrtri(L, lower=1)
    return Linv, L1


def _substitute(Linv, L1, c, r):
    """Forward then backward substitution with the factor of :func:`_factor`; r (T, n, m)."""
    T = len(r)
    y = np.empty_like(r)
    for t in range(T):
        v = r[t]
        if t >= 1:
            v = v - L1[t] @ y[t - 1]
        if t >= 2:
            v = v - c[t - 2][:, None] * (Linv[t - 2].T @ y[t - 2])
        y[t] = Linv[t] @ v
    x = y  # overwritten from the end; y[t] is read before x[t] is written
    for t in range(T - 1, -1, -1):
        v = y[t]
        if t + 1 < T:
            v = v - L1[t + 1].T @ x[t + 1]
        if t + 2 < T:
            v = v - Linv[t] @ (c[t][:, None] * x[t + 2])
        x[t] = Linv[t].T @ v
    return x


def solve_bordered(A, b, c, g, E=None, H_pp=None, g_p=None, overwrite=False):
    """Solve ``[[M, E], [Eᵀ, H_pp]] [x; y] = [g; g_p]`` with ``M`` block-pentadiagonal as in
    :func:`solve_block_pentadiagonal` and a dense border of width k (E (T, n, k)) by the Schur complement
    ``H_pp − Eᵀ M⁻¹ E``. Returns ``(x, y)``; ``y`` is empty without a border."""
    if E is None or E.shape[-1] == 0:
        return solve_block_pentadiagonal(A, b, c, g, overwrite), np.zeros(0)
    k = E.shape[-1]
    sol = solve_block_pentadiagonal(A, b, c, np.concatenate([g[:, :, None], E], axis=2), overwrite)
    x0, Y = sol[:, :, 0], sol[:, :, 1:]  # M⁻¹g, M⁻¹E
    schur = H_pp - np.einsum("tnk,tnj->kj", E, Y)
    y = np.linalg.solve(schur, g_p - np.einsum("tnk,tn->k", E, x0))
    return x0 - Y @ y, y.reshape(k)


def second_difference_coefficients(T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonals (T,), (T−1,), (T−2,) of DᵀD for the second-difference operator D ((T−2) × T)."""
    d0, d1, d2 = np.zeros(T), np.zeros(max(T - 1, 0)), np.zeros(max(T - 2, 0))
    if T >= 3:
        d0[:-2] += 1
        d0[1:-1] += 4
        d0[2:] += 1
        d1[:-1] -= 2
        d1[1:] -= 2
        d2[:] = 1
    return d0, d1, d2


def second_difference_energy(x: np.ndarray, weight=1.0) -> float:
    """Σ_t ‖√weight ⊙ (x_{t−1} − 2x_t + x_{t+1})‖² of a sequence x (T, ...)."""
    dd = x[:-2] - 2 * x[1:-1] + x[2:]
    return float(np.sum(weight * dd * dd))


def _second_difference_gradient(x: np.ndarray) -> np.ndarray:
    """DᵀD x for x (T, n)."""
    g = np.zeros_like(x)
    if len(x) >= 3:
        dd = x[:-2] - 2 * x[1:-1] + x[2:]
        g[:-2] += dd
        g[1:-1] -= 2 * dd
        g[2:] += dd
    return g


# ----------------------------------------------------------------------------------- the fitting problem


@dataclass
class _Params:
    p: np.ndarray  # (K_id,)
    q: np.ndarray  # (T, K)
    cam: np.ndarray  # (T, 7): ω (relative to R0), tx, ty, tz, s
    R0: np.ndarray  # (3, 3) reference rotation of the segment

    def rotations(self, frames=slice(None)) -> np.ndarray:
        return rotation_matrix(self.cam[frames, :3]) @ self.R0

    def camera(self) -> np.ndarray:
        """Absolute cameras (T, 7) as stored: axis-angle of R_t = exp([ω_t]×) R0."""
        out = self.cam.copy()
        out[:, :3] = rotation_log(self.rotations())
        return out

    def step(self, dx: np.ndarray, dp: np.ndarray) -> _Params:
        K = self.q.shape[1]
        p = self.p + dp if len(dp) else self.p
        return _Params(p, self.q + dx[:, :K], self.cam + dx[:, K:], self.R0)


class _Problem:
    """Data, model and settings of one fit; evaluates the energy and the normal equations.

    Per-frame landmark arrays are kept transposed, (t, 3, L): x, y, z rows of L landmarks, so that every
    per-landmark operation runs over contiguous rows and every sum over landmarks is a matrix product.
    """

    def __init__(self, basis: LandmarkBasis, y: np.ndarray, valid: np.ndarray, settings: FitSettings, p_fixed):
        self.basis, self.s = basis, settings
        self.valid = valid
        self.frames = np.flatnonzero(valid)
        # landmarks missing inside a valid frame (rare: the detector gives all or none) get weight 0
        finite = np.isfinite(y[self.frames]).all(axis=2)
        if finite.all():
            self.y, self.mask = y, None  # (T, L, 3) as given; float32 is fine
        else:
            self.mask = np.zeros(y.shape[:2], bool)
            self.mask[self.frames] = finite
            self.y = np.where(self.mask[..., None], y, 0).astype(y.dtype)
        self.free_p = p_fixed is None
        self.K_id, self.K = basis.id_basis.shape[0], basis.exp_basis.shape[0]
        self.L = L = len(basis.index)
        self.p_init = np.zeros(self.K_id) if self.free_p else np.asarray(p_fixed, float)
        # the linear part of the model whose coefficients are unknowns: [identity (if free) | expression]
        B = np.concatenate(([basis.id_basis] if self.free_p else []) + [basis.exp_basis], axis=0)  # (Klin, L, 3)
        self.Klin = Kl = B.shape[0]
        self.B3 = np.ascontiguousarray(B.transpose(1, 2, 0))  # (L, 3, Klin)
        self.Brow = self.B3.reshape(L, 3 * Kl)  # columns (a, k)
        self.Bal = np.ascontiguousarray(B.transpose(2, 1, 0)).reshape(3 * L, Kl)  # rows (a, l)
        self.gram = np.einsum("l,lak,lbj->abkj", basis.weight, self.B3, self.B3).reshape(9, Kl * Kl)
        # shapes: X = [q, 1] @ [exp basis; base] in the (a, l) layout
        self.Bexp = np.ascontiguousarray(basis.exp_basis.transpose(0, 2, 1)).reshape(self.K, 3 * L)
        self.D = np.array([1.0, 1.0, settings.z_weight])
        self.prior_id = settings.id_prior / basis.id_std**2
        self.prior_exp = settings.exp_prior / basis.exp_std**2

    # --- shapes and residuals

    def shapes(self, par: _Params, frames) -> np.ndarray:
        """Model-frame landmark positions, transposed: (len(frames), 3, L)."""
        base = self.basis.mean + (np.tensordot(par.p, self.basis.id_basis, 1) if self.K_id else 0)
        qb = np.concatenate([par.q[frames], np.ones((len(frames), 1))], axis=1)
        return (qb @ np.concatenate([self.Bexp, base.T.reshape(1, -1)])).reshape(len(frames), 3, self.L)

    def residuals(self, par: _Params, frames):
        """(X, R, r, mask): shapes and residuals ``pred − y`` (t, 3, L), zero where a landmark is missing,
        rotations (t, 3, 3), and the mask of present landmarks (t, L) (None when all are)."""
        X = self.shapes(par, frames)
        R = par.rotations(frames)
        cam = par.cam[frames]
        r = (cam[:, 6, None, None] * (FLIP @ R)) @ X
        r += cam[:, 3:6, None]
        r -= np.swapaxes(self.y[frames], 1, 2)
        mask = None
        if self.mask is not None:
            mask = self.mask[frames]
            r *= mask[:, None, :]
        return X, R, r, mask

    def robust(self, r, mask, robust=None):
        """(a·ρ(e), a·ψ(e)) per landmark (t, L): energy and IRLS weight, zero where missing."""
        e = np.sqrt(r[:, 0] ** 2 + r[:, 1] ** 2 + self.s.z_weight * r[:, 2] ** 2)
        rho, psi = ROBUST[robust or self.s.robust](e, self.s.robust_px)
        a = self.basis.weight if mask is None else self.basis.weight * mask
        return rho * a, psi * a

    # --- energy

    def data_energy(self, par: _Params) -> float:
        total = 0.0
        for frames in _chunks(self.frames):
            _, _, r, mask = self.residuals(par, frames)
            total += self.robust(r, mask)[0].sum()
        return total / self.s.sigma_px**2

    def regular_energy(self, par: _Params, reg: _Regularisation) -> float:
        """Priors, smoothness and hold terms of the energy."""
        e = float(np.sum(self.prior_exp * par.q**2))
        if self.free_p:
            e += float(np.sum(self.prior_id * par.p**2))
        e += second_difference_energy(np.concatenate([par.q, par.cam], axis=1), reg.smooth)
        dc = par.cam[~self.valid] - reg.hold_ref
        return e + float(np.sum(reg.hold * dc * dc))

    def energy(self, par: _Params, reg: _Regularisation) -> float:
        return self.data_energy(par) + self.regular_energy(par, reg)

    # --- normal equations of the data term

    def data_normal_equations(self, par: _Params, frames, robust=None):
        """Per-frame normal equations (H (t, Klin+7, Klin+7), g (t, Klin+7)) of the data term linearised at
        ``par`` (IRLS weights of ``robust``, default the settings'). Unknown order: [linear coefficients
        (identity if free, expression) | ω | tx ty tz | s]."""
        X, R, r, mask = self.residuals(par, frames)
        w = self.robust(r, mask, robust)[1]
        return self.normal_equations(X, R, par.cam[frames], r, w)

    def normal_equations(self, X, R, cam, r, w):
        """Gauss-Newton normal equations of Σ_l w_l ‖D^½ r_l‖² / σ² for frames with shapes X (t, 3, L),
        rotations R (t, 3, 3), cameras cam (t, 7), residuals r (t, 3, L) and IRLS weights w (t, L).

        A landmark's Jacobian is ``M Ĵ_l Rf`` with ``M = F R``, the model-frame part
        ``Ĵ_l = [B_l | [X_l]× | I | X_l]`` and per frame ``Rf = blockdiag(s I, −s Rᵀ J(ω), Mᵀ, 1)``; with
        ``P = Mᵀ D M = I − β m mᵀ`` (m the viewing direction in the model frame, β = 1 − z_weight) every
        landmark sum reduces to a few weighted moments of ``X̃_l = (X_l, 1)`` and one GEMM against the basis.
        """
        t, L, Kl = len(X), self.L, self.Klin
        beta = 1.0 - self.s.z_weight
        M = FLIP @ R
        Mt = np.swapaxes(M, 1, 2)
        m = M[:, 2, :]  # viewing direction in the model frame, (t, 3)
        P = np.eye(3) - beta * m[:, :, None] * m[:, None, :]
        Xt = np.swapaxes(X, 1, 2)  # (t, L, 3) view
        rho = (Mt * self.D) @ r  # Mᵀ D r_l (t, 3, L)
        rho *= w[:, None, :]
        wX = np.empty((t, 4, L))  # w X̃ᵀ
        np.multiply(X, w[:, None, :], out=wX[:, :3])
        wX[:, 3] = w
        W = np.empty((t, 4, 4))  # Σ w X̃ X̃ᵀ
        W[:, :, :3] = wX @ Xt
        W[:, :, 3] = wX.sum(axis=2)
        W[:, 3, :3] = W[:, :3, 3]
        Q = np.concatenate([rho @ Xt, rho.sum(axis=2)[:, :, None]], axis=2)  # Σ ρ_l X̃_lᵀ (t, 3, 4)
        T4 = (wX.reshape(4 * t, L) @ self.Brow).reshape(t, 4, 3, Kl)  # Σ_l w X̃_l[e] B_l[a, k]
        # linear × camera: Σ w B_lᵀ C_l − β Σ w (B_lᵀ m) k_lᵀ with C_l = [[X]×, I, X], k_l = Cᵀm = G X̃_l
        G = np.zeros((t, N_CAMERA, 4))
        G[:, :3, :3] = skew(m)
        G[:, 3:6, 3] = m
        G[:, 6, :3] = m
        H_lc = np.empty((t, Kl, N_CAMERA))
        H_lc[:, :, :3] = T4[:, :3].transpose(0, 3, 1, 2).reshape(t, Kl, 9) @ _CROSS  # Σ w B_l[:, k] × X_l
        H_lc[:, :, 3:6] = np.swapaxes(T4[:, 3], 1, 2)
        H_lc[:, :, 6] = T4[:, 0, 0] + T4[:, 1, 1] + T4[:, 2, 2]
        Vm = T4[:, :, 0] * m[:, 0, None, None] + T4[:, :, 1] * m[:, 1, None, None] + T4[:, :, 2] * m[:, 2, None, None]
        H_lc -= beta * (np.swapaxes(Vm, 1, 2) @ np.swapaxes(G, 1, 2))
        # camera × camera from the moments: Σ w C_lᵀ C_l − β G W Gᵀ
        W2, W1, W0 = W[:, :3, :3], W[:, :3, 3], W[:, 3, 3]
        tr2 = np.trace(W2, axis1=1, axis2=2)
        H_cc = np.zeros((t, N_CAMERA, N_CAMERA))
        H_cc[:, :3, :3] = tr2[:, None, None] * np.eye(3) - W2
        H_cc[:, :3, 3:6] = -skew(W1)
        H_cc[:, 3:6, :3] = skew(W1)
        H_cc[:, 3:6, 3:6] = W0[:, None, None] * np.eye(3)
        H_cc[:, 3:6, 6] = H_cc[:, 6, 3:6] = W1
        H_cc[:, 6, 6] = tr2
        H_cc -= beta * (G @ W @ np.swapaxes(G, 1, 2))
        H_ll = (P.reshape(t, 9) @ self.gram).reshape(t, Kl, Kl)
        self._subtract_down_weighted(H_ll, m, w)
        g_l = rho.reshape(t, 3 * L) @ self.Bal
        g_c = np.concatenate([np.einsum("cad,tad->tc", _EPS, Q[:, :, :3]), Q[:, :, 3], np.trace(Q[:, :, :3], axis1=1, axis2=2)[:, None]], 1)
        # back to the parameters through Rf
        s = cam[:, 6]
        Rf = np.zeros((t, N_CAMERA, N_CAMERA))
        Rf[:, :3, :3] = -s[:, None, None] * (Mt @ FLIP @ left_jacobian(cam[:, :3]))  # −s Rᵀ J(ω)
        Rf[:, 3:6, 3:6] = Mt
        Rf[:, 6, 6] = 1.0
        inv_var = 1.0 / self.s.sigma_px**2
        H = np.empty((t, Kl + N_CAMERA, Kl + N_CAMERA))
        np.multiply(H_ll, (s * s * inv_var)[:, None, None], out=H[:, :Kl, :Kl])
        H[:, :Kl, Kl:] = (s * inv_var)[:, None, None] * (H_lc @ Rf)
        H[:, Kl:, :Kl] = np.swapaxes(H[:, :Kl, Kl:], 1, 2)
        H[:, Kl:, Kl:] = inv_var * (np.swapaxes(Rf, 1, 2) @ H_cc @ Rf)
        g = np.concatenate([s[:, None] * g_l, (g_c[:, None, :] @ Rf)[:, 0]], axis=1) * inv_var
        return H, g

    def _subtract_down_weighted(self, H_ll, m, w):
        """H_ll −= Σ_l u_l B_lᵀ P B_l, u_l = a_l − w_l: what the unit-weight Gram overcounts for landmarks
        that are down-weighted (robust) or missing. Cost grows with their number, not with L."""
        t, Kl = len(w), self.Klin
        u = self.basis.weight - w  # ≥ 0
        u[u < 1e-12 * self.basis.weight.max()] = 0.0
        counts = np.count_nonzero(u, axis=1)
        if counts.max(initial=0) == 0:
            return
        beta = 1.0 - self.s.z_weight
        order = np.argsort(u == 0, axis=1, kind="stable")  # down-weighted landmarks first
        step = max(1, int(2e6 // (counts.max() * 3 * Kl)))  # bound the temporaries to ~16 MB
        for i in range(0, t, step):
            sl = slice(i, i + step)
            k = counts[sl].max()
            if k == 0:
                continue
            idx = order[sl, :k]
            Z = self.B3[idx] * np.sqrt(np.take_along_axis(u[sl], idx, axis=1))[..., None, None]  # (., k, 3, Kl)
            ms = m[sl, None, :, None]
            V = Z[:, :, 0] * ms[:, :, 0] + Z[:, :, 1] * ms[:, :, 1] + Z[:, :, 2] * ms[:, :, 2]  # (., k, Kl)
            Z = Z.reshape(len(idx), 3 * k, Kl)
            H_ll[sl] -= np.swapaxes(Z, 1, 2) @ Z
            H_ll[sl] += beta * (np.swapaxes(V, 1, 2) @ V)


def _chunks(frames: np.ndarray, size: int = CHUNK):
    for i in range(0, len(frames), size):
        yield frames[i : i + size]


# ------------------------------------------------------------------------------------- initialisation


def _initial_params(prob: _Problem) -> _Params:
    """Closed form per frame: weighted affine fit of the (identity) mean landmarks to the 2D detections,
    projected to the nearest scaled rotation; missing frames interpolated."""
    basis, T = prob.basis, len(prob.valid)
    Xm = basis.mean + (np.tensordot(prob.p_init, basis.id_basis, 1) if prob.K_id else 0)  # (L, 3)
    Xh = np.concatenate([Xm, np.ones((prob.L, 1))], axis=1)  # (L, 4)
    cam = np.zeros((T, N_CAMERA))
    Rs = np.zeros((T, 3, 3))
    for frames in _chunks(prob.frames):
        y = np.asarray(prob.y[frames], dtype=float)
        mask = np.isfinite(y).all(axis=2)
        w = basis.weight * mask
        y = np.where(mask[..., None], y, 0.0)
        G = (w @ np.einsum("li,lj->lij", Xh, Xh).reshape(prob.L, 16)).reshape(-1, 4, 4)
        rhs = np.einsum("tl,li,tlj->tij", w, Xh, y)  # (t, 4, 3)
        Aff = np.linalg.solve(G, rhs)  # (t, 4, 3): [A | t]ᵀ for x, y, z
        A2 = np.swapaxes(Aff[:, :3, :2], 1, 2)  # (t, 2, 3)
        U, sv, Vt = np.linalg.svd(A2, full_matrices=False)
        rows = U @ Vt  # (t, 2, 3) orthonormal rows nearest to A2 / s
        M = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
        s = sv.mean(axis=1)
        pred = s[:, None, None] * (Xm @ np.swapaxes(M, 1, 2))
        wsum = w.sum(axis=1)[:, None]
        cam[frames, 3:6] = np.einsum("tl,tlj->tj", w, y - pred) / wsum
        cam[frames, 6] = s
        Rs[frames] = FLIP @ M
    R0 = project_rotation(Rs[prob.frames].sum(axis=0))
    cam[:, :3] = rotation_log(Rs @ R0.T)
    cam = _interpolate_missing(cam, prob.valid)
    p = prob.p_init.copy()
    return _Params(p, np.zeros((T, prob.K)), cam, R0)


def _interpolate_missing(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a face (held constant beyond the first/last face)."""
    if valid.all():
        return x
    t, good = np.arange(len(valid)), np.flatnonzero(valid)
    out = x.copy()
    for j in range(x.shape[1]):
        out[~valid, j] = np.interp(t[~valid], good, x[good, j])
    return out


# --------------------------------------------------------------------------------------------- the fit


def fit_segment(model: MorphableModel, landmarks: np.ndarray, valid: np.ndarray, settings: FitSettings | None = None, p=None) -> FitResult:
    """Fit identity (unless ``p`` is given), expressions and cameras to a segment's landmarks.

    ``landmarks`` (T, 478, 3): x, y pixels, z relative depth (MediaPipe), NaN where missing; ``valid`` (T,)
    bool. Frames without a face keep ``valid = False`` and get values bridged by the smoothness prior.
    Raises :class:`FitError` when no frame is valid.
    """
    settings = settings or FitSettings()
    landmarks = np.asarray(landmarks)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(landmarks).any(axis=(1, 2))
    if landmarks.ndim != 3 or landmarks.shape[2] != 3 or len(valid) != len(landmarks):
        raise ValueError(f"landmarks must be (T, 478, 3) with valid (T,), got {landmarks.shape} and {valid.shape}")
    if not valid.any():
        raise FitError("no frame of the segment has a face")
    basis = LandmarkBasis.from_model(model)
    y = landmarks[:, basis.index] if len(basis.index) != landmarks.shape[1] else landmarks
    prob = _Problem(basis, y, valid, settings, p)
    par = _initial_params(prob)
    par, iterations, energy, converged = _levenberg_marquardt(prob, par)
    camera = par.camera()
    residual = np.full(len(valid), np.nan)
    for frames in _chunks(prob.frames):
        _, _, r, mask = prob.residuals(par, frames)
        e2 = np.sqrt(r[:, 0] ** 2 + r[:, 1] ** 2)
        residual[frames] = e2.mean(axis=1) if mask is None else (e2 * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    return FitResult(par.p, par.q, camera, valid, residual, iterations, energy, converged, settings)


@dataclass
class _Regularisation:
    """Weights of the non-data terms, fixed for a fit (per-component, in the unknowns' order)."""

    smooth: np.ndarray  # (K + 7,) S: λ × unit metric
    hold: np.ndarray  # (7,) camera pull on faceless frames
    hold_ref: np.ndarray  # (T_invalid, 7) where faceless frames are pulled to
    ridge: np.ndarray  # (K + 7,) tiny, keeps undetermined components (e.g. tz with z_weight 0) solvable


def _regularisation(prob: _Problem, par: _Params) -> _Regularisation:
    """The unit metric is the diagonal of one frame's data Hessian for the mean face at a frontal pose and
    the segment's median scale: pixels² of landmark motion per unit of each unknown, over σ²."""
    s = prob.s
    cam = np.zeros((1, N_CAMERA))
    cam[0, 6] = np.median(par.cam[prob.frames, 6])
    X = prob.shapes(_Params(par.p, np.zeros((1, prob.K)), cam, np.eye(3)), [0])
    w = prob.basis.weight[None].copy()
    H, _ = prob.normal_equations(X, np.eye(3)[None], cam, np.zeros_like(X), w)
    unit = np.einsum("ii->i", H[0])[prob.K_id if prob.free_p else 0 :]
    lam = np.concatenate([np.full(prob.K, s.lambda_q), np.full(N_CAMERA, s.lambda_c)])
    cam_unit = unit[prob.K :]
    return _Regularisation(
        smooth=lam * unit,
        hold=s.hold * cam_unit,
        hold_ref=par.cam[~prob.valid].copy(),
        ridge=np.concatenate([np.zeros(prob.K), 1e-9 * cam_unit]),
    )


def _levenberg_marquardt(prob: _Problem, par: _Params):
    """Damped Gauss-Newton with IRLS weights; returns (params, iterations, energy, converged)."""
    T, K, Kp = len(prob.valid), prob.K, (prob.K_id if prob.free_p else 0)
    reg = _regularisation(prob, par)
    energy = prob.energy(par, reg)
    mu, iterations, converged = 1e-4, 0, False
    for iterations in range(1, prob.s.iterations + 1):
        # IRLS starts from the least-squares step: at the start the residuals are mostly the expression
        # not fitted yet, not outliers
        system = _normal_system(prob, par, reg, robust="none" if iterations == 1 else None)
        for _ in range(10):  # Levenberg-Marquardt: damp until the energy goes down
            dx, dp = _damped_step(system, mu)
            trial = par.step(dx, dp)
            e_trial = prob.energy(trial, reg)
            if e_trial <= energy:
                break
            mu *= 10
        else:
            converged = True  # no descent left at machine precision
            break
        decrease = energy - e_trial
        par, energy, mu = trial, e_trial, max(mu / 10, 1e-9)
        if decrease <= prob.s.tolerance * energy:
            converged = True
            break
    return par, iterations, energy, converged


@dataclass
class _System:
    A: np.ndarray  # (T, n, n) diagonal blocks
    b: np.ndarray  # (T−1, n) diagonal of the (t, t+1) blocks
    c: np.ndarray  # (T−2, n) diagonal of the (t, t+2) blocks
    g: np.ndarray  # (T, n) gradient
    E: np.ndarray | None  # (T, n, K_id) identity border
    H_pp: np.ndarray
    g_p: np.ndarray


def _normal_system(prob: _Problem, par: _Params, reg: _Regularisation, robust=None) -> _System:
    """All terms' normal equations at ``par``: data (per frame), priors, smoothness, hold."""
    T, K, Kp = len(prob.valid), prob.K, (prob.K_id if prob.free_p else 0)
    n = K + N_CAMERA
    A, g = np.zeros((T, n, n)), np.zeros((T, n))
    E = np.zeros((T, n, Kp)) if Kp else None
    H_pp, g_p = np.diag(prob.prior_id) if Kp else np.zeros((0, 0)), prob.prior_id * par.p if Kp else np.zeros(0)
    for frames in _chunks(prob.frames):
        H, gd = prob.data_normal_equations(par, frames, robust)
        A[frames] = H[:, Kp:, Kp:]
        g[frames] = gd[:, Kp:]
        if Kp:
            E[frames] = H[:, Kp:, :Kp]
            H_pp = H_pp + H[:, :Kp, :Kp].sum(axis=0)
            g_p = g_p + gd[:, :Kp].sum(axis=0)
    d0, d1, d2 = second_difference_coefficients(T)
    diag = d0[:, None] * reg.smooth + reg.ridge
    diag[:, :K] += prob.prior_exp
    diag[~prob.valid, K:] += reg.hold
    A[:, np.arange(n), np.arange(n)] += diag
    g += reg.smooth * _second_difference_gradient(np.concatenate([par.q, par.cam], axis=1))
    g[:, :K] += prob.prior_exp * par.q
    g[~prob.valid, K:] += reg.hold * (par.cam[~prob.valid] - reg.hold_ref)
    return _System(A, d1[:, None] * reg.smooth, d2[:, None] * reg.smooth, g, E, H_pp, g_p)


def _damped_step(sy: _System, mu: float):
    """Solve (H + μ diag H) δ = −g through the block structure; returns (δx (T, n), δp)."""
    n = sy.A.shape[1]
    A = sy.A.copy()
    A[:, np.arange(n), np.arange(n)] *= 1 + mu
    H_pp = sy.H_pp + mu * np.diag(np.diag(sy.H_pp))
    return solve_bordered(A, sy.b, sy.c, -sy.g, sy.E, H_pp, -sy.g_p, overwrite=True)
