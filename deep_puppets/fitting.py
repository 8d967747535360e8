"""Monocular face reconstruction: fit a morphable model to the detector landmarks of a video segment.

Unknowns: identity ``p`` (shared by all frames; fixed when given), and per frame the expression ``q_t`` and the
camera ``c_t`` (scaled orthographic, see :mod:`deep_puppets.camera`). All frames of a segment are fitted at
once, minimising

    E = Σ_t Σ_l a_l ρ(e_tl) / σ²                                 (landmarks of frames with a face, robust)
      + id_prior ‖p / id_std‖² + exp_prior Σ_t ‖q_t / exp_std‖²   (Gaussian priors of the model)
      + Σ_t ‖Δ²q_t‖²_Sq + Σ_t ‖Δ²c_t‖²_Sc                         (second differences in time, S = λ U)
      + hold Σ_t faceless ‖c_t − c⁰_t‖²_Uc                        (keeps faceless stretches put)

with ``e_tl² = (u − x)² + (v − y)² + z_weight·(d − z)²`` the distance of the projected model landmark ``l``
to the detection (``d``, ``z`` depths, aligned by the per-frame offset ``tz``), ``a_l`` the model's landmark
weight, ``ρ(e) = e²`` up to ``robust_px`` then Huber (or Geman-McClure), ``σ = sigma_px`` the landmark noise
and ``Δ²x_t = x_{t−1} − 2x_t + x_{t+1}``; camera rotations enter ``Δ²`` as axis-angle ``ω_t`` relative to the
segment's mean rotation ``R₀`` (``R_t = exp([ω_t]×) R₀``), so they are differenced where they are smooth.

*Scale-free smoothing.* ``U`` is the diagonal of the data term's Hessian for one frame of the mean face,
frontal, at the segment's median scale: ``‖Δ²x‖²_U`` is summed squared landmark acceleration in units of
σ², and λ (``lambda_q``, ``lambda_c``) acts like a Whittaker smoother's parameter on every landmark track,
whatever the image size, face size, model units or σ: the cut-off ω (radians per frame) has
λ (2 − 2 cos ω)² = 1; λ = 1 cuts at ~1/6 cycle per frame (5 Hz at 30 fps), λ = 10 at ~1/11 (2.7 Hz),
λ = 100 at ~1/20 (1.5 Hz).

*Faceless frames* (``valid`` false) have no data term: between faces the temporal terms bridge them (plus
the weak ``hold`` towards the interpolated start values, which keeps them determined when λ = 0); before
the first and after the last face of a segment they are not fitted and hold that frame's values.

*Solver.* Levenberg-Marquardt on the Gauss-Newton normal equations, starting from a closed-form per-frame
similarity fit. The first two steps are least squares (the residuals are then mostly the unfitted
expression, not outliers); then IRLS weights of ``ρ``. Per-frame unknowns ``x_t = (q_t, ω_t, tx, ty, tz, s)``
are coupled only by the second differences, so the normal matrix is block-pentadiagonal with *diagonal*
off-diagonal blocks: :func:`solve_packed` factors it by block Cholesky in O(T n³) time and O(T n²) memory,
never forming a matrix over all frames. A free identity is the border of that system, eliminated by its
Schur complement.

*Cost.* Per frame the data Hessian reduces to weighted moments of the landmark positions and one product
with the basis; the expression block ``Σ_l w_l B_lᵀ P_t B_l`` comes from nine precomputed Gram matrices of the
basis, corrected only for the landmarks the robust weights push below one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import re
from concurrent.futures import ThreadPoolExecutor
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
EXACT_IRLS_FRACTION = 0.1  # see _Problem._subtract_down_weighted
CHUNK = 256  # frames per chunk when assembling the normal equations (bounds temporary memory)


class FitError(DeepPuppetsError):
    """The fit cannot run on this input (e.g. no frame with a face)."""


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FitSettings:
    """Weights and stopping rules of the fit; every length is in pixels of the video frame."""

    lambda_q: float = 1.0  # expression smoothing (Whittaker λ per landmark track, see the module doc; 0 = off)
    lambda_c: float = 10.0  # camera smoothing (same units)
    iterations: int = 15  # most Levenberg-Marquardt iterations
    tolerance: float = 1e-3  # stop when an iteration lowers the energy by less than this per landmark (σ² units)
    sigma_px: float = 2.0  # landmark noise σ; weighs the data against the model priors
    robust: str = "huber"  # "huber" or "geman_mcclure" (IRLS), "none" for plain least squares
    robust_px: float = 5.0  # robust scale: residuals beyond it count less than quadratically
    z_weight: float = 0.1  # weight of the detector depth (relative to x, y) in the landmark distance
    id_prior: float = 1.0  # weight of the identity prior ‖p/id_std‖²
    exp_prior: float = 1.0  # weight of the expression prior ‖q/exp_std‖²
    hold: float = 1e-3  # faceless frames between faces: pull of the camera to its start value (× U, one frame's data)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
                raise ConfigError(f"fit.{f.name} must be a number, got {v!r}")
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
        from .config import settings_from_section

        return settings_from_section(cls, "fit", cfg)

    @classmethod
    def from_fit_section(cls, section: dict) -> FitSettings:
        """The fit's settings from the whole ``fit`` section (``identity_frames`` is the identity job's, not the fit's)."""
        return cls.from_config({k: v for k, v in section.items() if k != "identity_frames"})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)


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


def packed_index(n: int) -> np.ndarray:
    """Flat indices into an n×n matrix of its lower triangle, row by row: the packed storage of symmetric and
    lower-triangular blocks (``packed = M.ravel()[packed_index(n)]``)."""
    rows, cols = np.tril_indices(n)
    return rows * n + cols


def pack_lower(A: np.ndarray) -> np.ndarray:
    """Blocks (T, n, n) → their lower triangles (T, n(n+1)/2)."""
    return A.reshape(len(A), -1)[:, packed_index(A.shape[1])]


def solve_block_pentadiagonal(A: np.ndarray, b: np.ndarray, c: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``M x = rhs`` for the symmetric positive definite block-pentadiagonal ``M`` with

    - diagonal blocks ``A[t]`` (T, n, n),
    - blocks ``M[t, t+1] = diag(b[t])`` (T−1, n) and ``M[t, t+2] = diag(c[t])`` (T−2, n),

    ``rhs`` (T, n) or (T, n, m). See :func:`solve_packed`, which this calls with the lower triangles of A.
    """
    return solve_packed(pack_lower(np.asarray(A, dtype=float)), b, c, rhs, overwrite=True)


def solve_packed(Ap: np.ndarray, b: np.ndarray, c: np.ndarray, rhs: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """:func:`solve_block_pentadiagonal` with the diagonal blocks given by their lower triangles
    ``Ap`` (T, n(n+1)/2) (:func:`packed_index` order).

    Block Cholesky ``M = L Lᵀ`` (blocks ``L[t,t]``, ``L[t,t−1]``, ``L[t,t−2]``) in one sweep with the forward
    substitution, then the backward substitution. Time O(T n³), memory O(T n²): the inverse diagonal factors
    ``L[t,t]⁻¹`` are packed over ``Ap`` (over a scaled copy unless ``overwrite``); ``L[t,t−2] = diag(c[t−2])
    L[t−2,t−2]⁻ᵀ`` is never stored, and ``L[t,t−1]`` is kept for every frame when that takes at most
    :data:`FACTOR_MEMORY` bytes, else every :data:`CHECKPOINT` frames and recomputed from there during the
    backward sweep. The unknowns are first scaled to a unit diagonal (Jacobi) for conditioning.
    """
    b, c = np.asarray(b, dtype=float), np.asarray(c, dtype=float)
    Ap = np.asarray(Ap, dtype=float) if overwrite else np.array(Ap, dtype=float)
    T, n = len(Ap), int(round((np.sqrt(8 * Ap.shape[1] + 1) - 1) / 2))
    if T == 0:
        return np.zeros_like(rhs, dtype=float)
    b, c = b.reshape(max(T - 1, 0), n), c.reshape(max(T - 2, 0), n)
    rhs = np.asarray(rhs, dtype=float)
    vec = rhs.ndim == 2
    r = rhs[..., None] if vec else rhs
    rows, cols = np.tril_indices(n)
    d = 1.0 / np.sqrt(Ap[:, rows == cols])  # Jacobi scaling
    for i in range(0, T, CHUNK):  # in place, without a (T, n(n+1)/2) temporary
        Ap[i : i + CHUNK] *= d[i : i + CHUNK, rows] * d[i : i + CHUNK, cols]
    b = b * d[:-1] * d[1:]
    c = c * d[:-2] * d[2:]
    r = r * d[:, :, None]
    every = 1 if T * n * n * 8 <= FACTOR_MEMORY else CHECKPOINT
    with single_threaded_blas():
        saved, y = _factor_forward(Ap, b, c, r, every)
        x = _back_substitute(Ap, saved, b, c, y, every)
    x *= d[:, :, None]
    return x[..., 0] if vec else x


CHECKPOINT = 64  # frames between stored sub-diagonal factor blocks L[t, t−1] when they would not fit in:
FACTOR_MEMORY = 128 * 2**20  # bytes allowed for storing every L[t, t−1] (saves recomputing them)


def _sub_diagonal(t, L1_prev, Linv_1, Linv_2, b, c):
    """``(L[t,t−1], L[t,t−2])`` from ``L[t−1,t−2]`` and ``Linv_k = L[t−k,t−k]⁻¹`` (t ≥ 1)."""
    if t == 1:
        return b[0][:, None] * Linv_1.T, None
    L2 = c[t - 2][:, None] * Linv_2.T
    W = L2 @ L1_prev.T
    np.negative(W, out=W)
    W.flat[:: W.shape[0] + 1] += b[t - 1]
    return W @ Linv_1.T, L2


def _factor_forward(Ap, b, c, r, every):
    """Block Cholesky and forward substitution ``L y = r`` in one sweep over the frames; ``L[t,t]⁻¹`` is
    packed over ``Ap[t]``. Returns ``(saved, y)`` with ``saved[j] = L[j·every, j·every − 1]``."""
    T, n = len(Ap), r.shape[1]
    idx = packed_index(n)
    y = np.empty_like(r)
    saved = np.zeros(((T + every - 1) // every, n, n))
    S = np.empty((n, n))  # only its lower triangle is meaningful (all dpotrf reads)
    L1 = Linv_1 = Linv_2 = None
    for t in range(T):
        S.put(idx, Ap[t])
        v = r[t]
        if t >= 1:
            L1, L2 = _sub_diagonal(t, L1, Linv_1, Linv_2, b, c)
            if t % every == 0:
                saved[t // every] = L1
            S -= L1 @ L1.T
            v = v - L1 @ y[t - 1]
            if L2 is not None:
                S -= L2 @ L2.T
                v -= L2 @ y[t - 2]
        L, info = dpotrf(S, lower=1, clean=1)
        if info:
            raise np.linalg.LinAlgError(f"normal equations not positive definite at frame {t}")
        Linv_2, Linv_1 = Linv_1, dtrtri(L, lower=1, overwrite_c=1)[0]
        Ap[t] = np.take(Linv_1, idx)
        np.matmul(Linv_1, v, out=y[t])
    return saved, y


def _back_substitute(Ap, saved, b, c, y, every):
    """Solve ``Lᵀ x = y`` from the last frame to the first, in blocks of ``every`` frames whose ``L[t,t−1]``
    are recomputed from the block's saved one; overwrites and returns ``y``."""
    T, n = len(y), y.shape[1]
    idx = packed_index(n)
    x = y  # x[t] is written after y[t] is last read
    L1 = np.empty((every + 1, n, n))  # L[t, t−1] for t = t0 … t0 + every
    Linv = np.zeros((every + 2, n, n))  # L[t,t]⁻¹ for t = t0 − 2 … t0 + every − 1 (upper parts stay 0)
    for t0 in range((T - 1) // every * every, -1, -every):
        t1 = min(t0 + every, T)
        if t1 < T:
            L1[t1 - t0] = L1[0]  # the later block's first one, still in place
        L1[0] = saved[t0 // every]
        for t in range(max(t0 - 1, 0) if t1 > t0 + 1 else t0, t1):  # the L[t,t]⁻¹ this block uses
            Linv[t - t0 + 2].put(idx, Ap[t])
        for t in range(t0 + 1, t1):
            L1[t - t0] = _sub_diagonal(t, L1[t - t0 - 1], Linv[t - t0 + 1], Linv[t - t0], b, c)[0]
        for t in range(t1 - 1, t0 - 1, -1):
            v = y[t]
            if t + 1 < T:
                v = v - L1[t + 1 - t0].T @ x[t + 1]
            if t + 2 < T:
                v = v - Linv[t - t0 + 2] @ (c[t][:, None] * x[t + 2])
            x[t] = Linv[t - t0 + 2].T @ v
    return x


def solve_bordered(Ap, b, c, g, E=None, H_pp=None, g_p=None, overwrite=False):
    """Solve ``[[M, E], [Eᵀ, H_pp]] [x; y] = [g; g_p]`` with ``M`` block-pentadiagonal as in
    :func:`solve_packed` (diagonal blocks packed in ``Ap``) and a dense border of width k (E (T, n, k)) by the
    Schur complement ``H_pp − Eᵀ M⁻¹ E``. Returns ``(x, y)``; ``y`` is empty without a border."""
    if E is None or E.shape[-1] == 0:
        return solve_packed(Ap, b, c, g, overwrite), np.zeros(0)
    k = E.shape[-1]
    sol = solve_packed(Ap, b, c, np.concatenate([g[:, :, None], E], axis=2), overwrite)
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

    def __init__(self, basis: LandmarkBasis, y: np.ndarray, valid: np.ndarray, settings: FitSettings, p_fixed, pool=None, present=None):
        self.basis, self.s, self.pool = basis, settings, pool
        self.valid = valid
        self.frames = np.flatnonzero(valid)
        # landmarks missing inside a valid frame (rare: the detector gives all or none) get weight 0
        present = _present(y) if present is None else present
        if present[self.frames].all():
            self.y, self.mask = y, None  # (T, L, 3) as given; float32 is fine
        else:
            self.mask = present & valid[:, None]
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
        gram = (self.Brow * basis.weight[:, None]).T @ self.Brow  # Σ_l a_l B_l[a,k] B_l[b,j], (3Kl, 3Kl)
        self.gram = gram.reshape(3, Kl, 3, Kl).transpose(0, 2, 1, 3).reshape(9, Kl * Kl)
        # shapes: X = [q, 1] @ [exp basis; base] in the (a, l) layout
        self.Bexp = np.ascontiguousarray(basis.exp_basis.transpose(0, 2, 1)).reshape(self.K, 3 * L)
        self.D = np.array([1.0, 1.0, settings.z_weight])
        self.prior_id = settings.id_prior / basis.id_std**2
        self.prior_exp = settings.exp_prior / basis.exp_std**2
        weight = basis.weight if self.mask is None else basis.weight * self.mask[self.frames]
        self.n_observations = float(np.sum(weight) * (len(self.frames) if self.mask is None else 1))

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

    def map_chunks(self, fn) -> list:
        """``[fn(frames) for frames in chunks of the valid frames]``, on the thread pool when there is one."""
        chunks = list(_chunks(self.frames))
        return list(self.pool.map(fn, chunks)) if self.pool is not None and len(chunks) > 1 else [fn(f) for f in chunks]

    def data_energy(self, par: _Params) -> float:
        def chunk_energy(frames):
            _, _, r, mask = self.residuals(par, frames)
            return self.robust(r, mask)[0].sum()

        return float(sum(self.map_chunks(chunk_energy))) / self.s.sigma_px**2

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
        return self.normal_equations(X, R, par.cam[frames], r, w, mask)

    def normal_equations(self, X, R, cam, r, w, mask=None):
        """Gauss-Newton normal equations of Σ_l w_l ‖D^½ r_l‖² / σ² for frames with shapes X (t, 3, L),
        rotations R (t, 3, 3), cameras cam (t, 7), residuals r (t, 3, L), IRLS weights w (t, L) and the
        mask of present landmarks (None: all).

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
        self._subtract_down_weighted(H_ll, m, w, mask)
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

    def _subtract_down_weighted(self, H_ll, m, w, mask):
        """H_ll −= Σ_l u_l B_lᵀ P B_l, u_l = a_l − w_l: what the unit-weight Gram overcounts for landmarks
        that are down-weighted (robust) or missing. Cost grows with their number, not with L.

        While more than :data:`EXACT_IRLS_FRACTION` of the landmarks are down-weighted (typically once, right
        after the first step, when the residuals are mostly the expression not fitted yet) the correction of
        robust weights is skipped: the Hessian then bounds the IRLS Hessian from above, so the step is a
        shorter but still descending majorise-minimise step. Missing landmarks are always removed exactly.
        """
        t, Kl = len(w), self.Klin
        u = self.basis.weight - w  # ≥ 0
        if np.count_nonzero(u > 1e-12 * self.basis.weight.max()) > EXACT_IRLS_FRACTION * u.size:
            if mask is None:
                return
            u = self.basis.weight * ~mask
        rows, cols = np.nonzero(u > 1e-12 * self.basis.weight.max())
        if not len(rows):
            return
        counts = np.bincount(rows, minlength=t)
        # the down-weighted landmarks of each frame, padded with weight 0 to the largest count
        pos = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        k = counts.max()
        idx, uu = np.zeros((t, k), np.intp), np.zeros((t, k))
        idx[rows, pos], uu[rows, pos] = cols, u[rows, cols]
        beta = 1.0 - self.s.z_weight
        step = max(1, int(2e6 // (k * 3 * Kl)))  # bound the temporaries to ~16 MB
        for i in range(0, t, step):
            sl = slice(i, i + step)
            Z = self.B3[idx[sl]] * np.sqrt(uu[sl])[..., None, None]  # (., k, 3, Kl)
            ms = m[sl, None, :, None]
            V = Z[:, :, 0] * ms[:, :, 0] + Z[:, :, 1] * ms[:, :, 1] + Z[:, :, 2] * ms[:, :, 2]  # (., k, Kl)
            Z = Z.reshape(len(Z), 3 * k, Kl)
            H_ll[sl] -= np.swapaxes(Z, 1, 2) @ Z
            H_ll[sl] += beta * (np.swapaxes(V, 1, 2) @ V)


def _present(y: np.ndarray) -> np.ndarray:
    """(T, L) bool: the landmark has finite coordinates (computed in chunks: no (T, L, 3) temporary)."""
    out = np.empty(y.shape[:2], bool)
    for i in range(0, len(y), CHUNK):
        out[i : i + CHUNK] = np.isfinite(y[i : i + CHUNK]).all(axis=2)
    return out


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
        y = np.asarray(prob.y[frames], dtype=float)  # missing landmarks are 0 there, with weight 0
        w = basis.weight if prob.mask is None else basis.weight * prob.mask[frames]
        w = np.broadcast_to(w, y.shape[:2])
        G = (w @ (Xh[:, :, None] * Xh[:, None, :]).reshape(prob.L, 16)).reshape(-1, 4, 4)
        G += 1e-9 * np.trace(G, axis1=1, axis2=2)[:, None, None] * np.eye(4)
        rhs = Xh.T @ (w[..., None] * y)  # (t, 4, 3)
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


def fit_segment(
    model: MorphableModel, landmarks: np.ndarray, valid: np.ndarray, settings: FitSettings | None = None, p=None, threads: int = 1
) -> FitResult:
    """Fit identity (unless ``p`` is given), expressions and cameras to a segment's landmarks.

    ``landmarks`` (T, 478, 3): x, y pixels, z relative depth (MediaPipe), NaN where missing; ``valid`` (T,)
    bool. Frames without a face keep ``valid = False``: between faces they are bridged by the smoothness
    prior, before the first and after the last face they hold that frame's values. A segment without any face gives q = 0, NaN cameras and ``valid`` all False (:func:`tracks.merge_segments`
    bridges it from its neighbours). ``threads`` > 1 assembles the normal equations on that many threads
    (same result; the block solver itself is sequential).
    """
    settings = settings or FitSettings()
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[2] != 3 or len(valid) != len(landmarks):
        raise ValueError(f"landmarks must be (T, 478, 3) with valid (T,), got {landmarks.shape} and {np.shape(valid)}")
    present = _present(landmarks)
    valid = np.asarray(valid, dtype=bool) & present.any(axis=1)
    p_out = np.zeros(model.n_id) if p is None else np.asarray(p, float)
    if not valid.any():
        T = len(valid)
        return FitResult(p_out, np.zeros((T, model.n_exp)), np.full((T, N_CAMERA), np.nan), valid, np.full(T, np.nan), settings=settings)
    # frames before the first and after the last face are not fitted: they hold the nearest fitted frame
    first, last = np.flatnonzero(valid)[[0, -1]]
    span = slice(first, last + 1)
    basis = LandmarkBasis.from_model(model)
    y = landmarks[span, basis.index] if len(basis.index) != landmarks.shape[1] else landmarks[span]
    with single_threaded_blas(), ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        prob = _Problem(basis, y, valid[span], settings, p, pool, present[span][:, basis.index])
        par = _initial_params(prob)
        par, iterations, energy, converged = _levenberg_marquardt(prob, par)
        residual = np.full(len(valid), np.nan)
        for frames in _chunks(prob.frames):
            _, _, r, mask = prob.residuals(par, frames)
            e2 = np.sqrt(r[:, 0] ** 2 + r[:, 1] ** 2)
            residual[first + frames] = e2.mean(axis=1) if mask is None else (e2 * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    pad = ((first, len(valid) - 1 - last), (0, 0))
    q, camera = np.pad(par.q, pad, mode="edge"), np.pad(par.camera(), pad, mode="edge")
    return FitResult(par.p, q, camera, valid, residual, iterations, energy, converged, settings)


def identity_frames(valid: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` frames with a face, spread evenly over the video (for :func:`fit_identity`)."""
    good = np.flatnonzero(np.asarray(valid, bool))
    if len(good) <= count:
        return good
    return good[np.round(np.linspace(0, len(good) - 1, count)).astype(int)]


def fit_identity(model: MorphableModel, landmarks: np.ndarray, settings: FitSettings | None = None, threads: int = 1) -> FitResult:
    """Estimate the identity ``p`` from a sample of frames of a video (landmarks (N, 478, 3), all with a
    face, e.g. picked by :func:`identity_frames`). The frames need not be consecutive: the temporal terms are
    off. Every segment of the video is then fitted with this ``p`` fixed, so that they agree."""
    settings = replace(settings or FitSettings(), lambda_q=0.0, lambda_c=0.0)
    landmarks = np.asarray(landmarks)
    return fit_segment(model, landmarks, np.ones(len(landmarks), bool), settings, p=None, threads=threads)


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
    reg = _regularisation(prob, par)
    energy = prob.energy(par, reg)
    mu, iterations, converged = 1e-4, 0, False
    for iterations in range(1, prob.s.iterations + 1):
        # IRLS starts after two least-squares steps: until then the residuals are mostly the expression and
        # pose not fitted yet, not outliers
        robust = "none" if iterations <= 2 else None
        for _ in range(10):  # Levenberg-Marquardt: damp until the energy goes down
            # the solver factorises the system in place (no second T·n² copy): a rejected step rebuilds it
            dx, dp = _damped_step(_normal_system(prob, par, reg, robust), mu)
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
        if decrease <= prob.s.tolerance * prob.n_observations:
            converged = True
            break
    return par, iterations, energy, converged


@dataclass
class _System:
    A: np.ndarray  # (T, n(n+1)/2) diagonal blocks, packed lower triangles
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
    idx = packed_index(n)
    A, g = np.zeros((T, len(idx))), np.zeros((T, n))  # diagonal blocks, packed lower triangles
    E = np.zeros((T, n, Kp)) if Kp else None
    H_pp, g_p = np.diag(prob.prior_id) if Kp else np.zeros((0, 0)), prob.prior_id * par.p if Kp else np.zeros(0)

    def chunk(frames):  # rows of different chunks are disjoint: safe from several threads
        H, gd = prob.data_normal_equations(par, frames, robust)
        A[frames] = H[:, Kp:, Kp:].reshape(len(frames), -1)[:, idx]
        g[frames] = gd[:, Kp:]
        if Kp:
            E[frames] = H[:, Kp:, :Kp]
        return H[:, :Kp, :Kp].sum(axis=0), gd[:, :Kp].sum(axis=0)

    for H_pp_part, g_p_part in prob.map_chunks(chunk):
        H_pp, g_p = H_pp + H_pp_part, g_p + g_p_part
    d0, d1, d2 = second_difference_coefficients(T)
    diag = d0[:, None] * reg.smooth + reg.ridge
    diag[:, :K] += prob.prior_exp
    diag[~prob.valid, K:] += reg.hold
    A[:, _diagonal_positions(n)] += diag
    g += reg.smooth * _second_difference_gradient(np.concatenate([par.q, par.cam], axis=1))
    g[:, :K] += prob.prior_exp * par.q
    g[~prob.valid, K:] += reg.hold * (par.cam[~prob.valid] - reg.hold_ref)
    return _System(A, d1[:, None] * reg.smooth, d2[:, None] * reg.smooth, g, E, H_pp, g_p)


def _diagonal_positions(n: int) -> np.ndarray:
    """Positions of the diagonal in a packed lower triangle."""
    rows, cols = np.tril_indices(n)
    return np.flatnonzero(rows == cols)


def _damped_step(sy: _System, mu: float):
    """Solve (H + μ diag H) δ = −g through the block structure, factorising ``sy.A`` in place; returns
    (δx (T, n), δp)."""
    sy.A[:, _diagonal_positions(sy.g.shape[1])] *= 1 + mu
    H_pp = sy.H_pp + mu * np.diag(np.diag(sy.H_pp))
    return solve_bordered(sy.A, sy.b, sy.c, -sy.g, sy.E, H_pp, -sy.g_p, overwrite=True)


# ------------------------------------------------------------------------------------------ HDF5 files

_CAMERA_DOC = (
    "rx, ry, rz (axis-angle rotation R, radians), tx, ty (pixels), tz (depth offset, pixels), scale (pixels per "
    "model unit): image point (u, v, d) = scale·F·R·X + (tx, ty, tz), F = diag(1, −1, −1), scaled orthographic "
    "(deep_puppets/camera.py)"
)


def _fit_datasets(frames_doc: str) -> dict:
    return {
        "frame_index": h5io.Dataset("int64", ("T",), f"absolute frame index in the video ({frames_doc})"),
        "p": h5io.Dataset("float64", ("K_id",), "identity coefficients (prior standard deviations: the model's id_std)"),
        "q": h5io.Dataset("float64", ("T", "K_exp"), "expression coefficients per frame"),
        "camera": h5io.Dataset("float64", ("T", 7), _CAMERA_DOC),
        "valid": h5io.Dataset("bool", ("T",), "the detector found a face; other frames are bridged by the smoothness prior"),
        "residual": h5io.Dataset("float32", ("T",), "mean 2D distance of the projected model landmarks to the detections (pixels); NaN where not valid"),
    }


COEFFICIENT_LIMIT = 1e6  # |p|, |q| beyond this are not a fit but damage (fits keep them within a few std)


def camera_problem(camera, valid, width: float, height: float, name: str = "camera") -> str | None:
    """A problem with per-frame cameras (T, 7): a row is all finite or all NaN (a segment without a face),
    valid frames have finite ones, scale > 0, the translation within 100 frame sizes, |rotation| < 100 rad."""
    camera, valid = np.asarray(camera, float), np.asarray(valid, bool)
    nan = np.isnan(camera)
    if np.isinf(camera).any() or (nan.any(1) != nan.all(1)).any():
        return h5io.nonfinite(name, camera[~nan.all(1)])
    side = 100.0 * max(float(width), float(height))
    return h5io.first_problem(
        h5io.nonfinite(name, camera, valid),
        h5io.out_of_range(name, camera[:, 6], 1e-12, np.inf, what="scales (column 6)"),
        h5io.out_of_range(name, camera[:, 3:6], -side, side, what="translations (columns 3-5)"),
        h5io.out_of_range(name, camera[:, :3], -100.0, 100.0, what="rotations (columns 0-2)"),
    )


def check_fit_arrays(arrays: dict, attrs: dict) -> str | None:
    """Layout check of the fit files (segment, identity, track): finite p and q, plausible cameras."""
    lim = COEFFICIENT_LIMIT
    return h5io.first_problem(
        h5io.nonfinite("p", arrays["p"]),
        h5io.out_of_range("p", arrays["p"], -lim, lim),
        h5io.nonfinite("q", arrays["q"]),
        h5io.out_of_range("q", arrays["q"], -lim, lim),
        camera_problem(arrays["camera"], arrays["valid"], attrs["width"], attrs["height"]),
        h5io.out_of_range("residual", arrays["residual"], 0.0, np.inf),
        h5io.out_of_range("frame_index", arrays["frame_index"], 0, np.inf),
    )


_FIT_ATTRS = {
    "video": "video name (config key)",
    "model": "morphable model name",
    "model_hash": "MorphableModel.content_hash() of the model fitted",
    "fit_settings": "JSON of the FitSettings that produced the fit",
    "width": "frame width in pixels",
    "height": "frame height in pixels",
    "fps": "frames per second",
}

FIT_SEGMENT = h5io.Layout(
    name="fit_segment",
    version=1,
    doc=(
        "Morphable-model fit of one video segment, overlap included: identity p (fixed per video), and per "
        "frame expression q and scaled-orthographic camera. Frames without a face keep valid = false with "
        "values bridged by the temporal prior (NaN cameras when the segment has no face at all)."
    ),
    datasets=_fit_datasets("segment frames, overlap included"),
    attrs={
        **_FIT_ATTRS,
        "segment": "segment index",
        "start": "first frame of the segment (overlap included)",
        "stop": "one past the last frame",
        "core_start": "first frame this segment owns",
        "core_stop": "one past the last frame it owns",
        "iterations": "Levenberg-Marquardt iterations run",
        "energy": "final energy (units of sigma_px²)",
        "converged": "the energy stopped decreasing by more than the tolerance",
    },
    check=check_fit_arrays,
)

FIT_IDENTITY = h5io.Layout(
    name="fit_identity",
    version=1,
    doc="Identity of the person in a video, estimated from a sample of its frames; every segment is fitted with it.",
    datasets=_fit_datasets("the sampled frames"),
    attrs={**_FIT_ATTRS, "iterations": "Levenberg-Marquardt iterations run", "energy": "final energy (units of sigma_px²)"},
    check=check_fit_arrays,
)


def _fit_arrays(result: FitResult, frame_index) -> dict:
    frame_index = np.asarray(frame_index, dtype=np.int64)
    if frame_index.shape != (result.n_frames,):
        raise ValueError(f"frame_index has shape {frame_index.shape}, the fit has {result.n_frames} frames")
    return dict(frame_index=frame_index, p=result.p, q=result.q, camera=result.camera, valid=result.valid, residual=result.residual)


def _model_attrs(model: MorphableModel, video: str, width: int, height: int, fps: float, settings: FitSettings) -> dict:
    return dict(video=video, model=model.name, model_hash=model.content_hash(), fit_settings=settings.to_json(), width=int(width), height=int(height), fps=float(fps))


def write_fit_segment(path, result: FitResult, *, frame_index, segment, model: MorphableModel, video: str, width: int, height: int, fps: float):
    """Write a segment fit (``segment``: a :class:`deep_puppets.segments.Segment`)."""
    attrs = _model_attrs(model, video, width, height, fps, result.settings)
    attrs.update(
        segment=segment.index,
        start=segment.start,
        stop=segment.stop,
        core_start=segment.core_start,
        core_stop=segment.core_stop,
        iterations=int(result.iterations),
        energy=float(result.energy),
        converged=bool(result.converged),
    )
    return h5io.write(path, FIT_SEGMENT, _fit_arrays(result, frame_index), attrs)


def write_fit_identity(path, result: FitResult, *, frame_index, model: MorphableModel, video: str, width: int, height: int, fps: float):
    """Write the identity fit of a video (``frame_index``: the sampled frames)."""
    attrs = _model_attrs(model, video, width, height, fps, result.settings)
    attrs.update(iterations=int(result.iterations), energy=float(result.energy))
    return h5io.write(path, FIT_IDENTITY, _fit_arrays(result, frame_index), attrs)


def result_from_file(arrays: dict, attrs: dict) -> FitResult:
    """The :class:`FitResult` of arrays and attributes read with one of the fit layouts."""
    return FitResult(
        p=arrays["p"],
        q=arrays["q"],
        camera=arrays["camera"],
        valid=arrays["valid"],
        residual=arrays["residual"].astype(float),
        iterations=int(attrs.get("iterations", 0)),
        energy=float(attrs.get("energy", np.nan)),
        converged=bool(attrs.get("converged", False)),
        settings=FitSettings(**json.loads(attrs["fit_settings"])),
    )


def read_fit_segment(path) -> tuple[FitResult, dict, np.ndarray]:
    """(result, attributes, frame_index) of a segment fit file."""
    arrays, attrs = h5io.read(path, FIT_SEGMENT)
    return result_from_file(arrays, attrs), attrs, arrays["frame_index"]


def read_fit_identity(path) -> tuple[FitResult, dict, np.ndarray]:
    """(result, attributes, frame_index of the sampled frames) of an identity fit file."""
    arrays, attrs = h5io.read(path, FIT_IDENTITY)
    return result_from_file(arrays, attrs), attrs, arrays["frame_index"]


def check_model(attrs: dict, model: MorphableModel, path="") -> None:
    """Raise :class:`FitError` unless the file was fitted with this very model."""
    if attrs.get("model_hash") != model.content_hash():
        raise FitError(f"{path}: fitted with model {attrs.get('model')!r} ({str(attrs.get('model_hash'))[:12]}…), not {model.name!r} ({model.content_hash()[:12]}…)")
