"""Monocular face reconstruction: fit a morphable model to the detector landmarks of a video segment.

Unknowns: identity ``p`` (shared by all frames; fixed when given), and per frame the expression ``q_t`` and the
camera ``c_t`` (scaled orthographic, see :mod:`deep_puppets.camera`). All frames of a segment are fitted at
once, minimising

    E = Σ_t Σ_l a_l ρ(e_tl) / σ²                                 (landmarks of frames with a face, robust)
      + id_prior ‖p / id_std‖² + exp_prior Σ_t ‖q_t / exp_std‖²   (Gaussian priors of the model)
      + Σ_t ‖v(q_t)‖²_Sb                                          (activations kept in [0, 1])
      + Σ_t ‖Δ²q_t‖²_Sq + Σ_t ‖Δ²c_t‖²_Sc                         (second differences in time, S = λ U)
      + hold Σ_t faceless ‖c_t − c⁰_t‖²_Uc                        (keeps faceless stretches put)

with ``e_tl² = (u − x)² + (v − y)² + z_weight·(d − z)²`` the distance of the projected model landmark ``l``
to the detection (``d``, ``z`` depths, aligned by the per-frame offset ``tz``), ``a_l`` the model's landmark
weight, ``ρ(e) = e²`` up to ``robust_px`` then Huber (or Geman-McClure), ``σ = sigma_px`` the landmark noise,
``v(q)`` how far each *activation* coefficient (ICT's ARKit blendshapes,
:func:`deep_puppets.models.ict.activation_components`; none of a PCA model's) lies outside [0, 1]
(``Sb = activation_bounds · U``, 0 by default: at 100 a coefficient 0.1 outside costs what the data term charges
for a whole unit of it) and ``Δ²x_t = x_{t−1} − 2x_t + x_{t+1}``; camera rotations enter ``Δ²`` as axis-angle
``ω_t`` relative to the segment's mean rotation ``R₀`` (``R_t = exp([ω_t]×) R₀``), so they are differenced where
they are smooth.

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
off-diagonal blocks: :func:`blocksolve.solve_packed` factors it by block Cholesky in O(T n³) time and O(T n²) memory,
never forming a matrix over all frames. A free identity is the border of that system, eliminated by its
Schur complement.

*Cost.* Per frame the data Hessian reduces to weighted moments of the landmark positions and one product
with the basis; the expression block ``Σ_l w_l B_lᵀ P_t B_l`` comes from nine precomputed Gram matrices of the
basis, corrected only for the landmarks the robust weights push below one.

Beside it: :mod:`~deep_puppets.fit_types` (settings, result), :mod:`~deep_puppets.landmark_basis` (the model at
the landmarks), :mod:`~deep_puppets.camera_init` (the start), :mod:`~deep_puppets.blocksolve` (the linear
algebra), :mod:`~deep_puppets.fit_files` (the files).

Why one module: the energy, its Jacobian blocks and the Levenberg–Marquardt loop share the problem's private
parameter layout (:class:`_Problem`); a fifth of the lines are this documentation of the method.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .blocksolve import (
    diagonal_positions,
    packed_index,
    second_difference_coefficients,
    second_difference_energy,
    second_difference_gradient,
    single_threaded_blas,
    solve_bordered,
)
from .camera import FLIP, left_jacobian, rotation_log, rotation_matrix, skew
from .camera_init import scaled_orthographic_cameras
from .fit_types import ROBUST, FitResult, FitSettings
from .landmark_basis import LandmarkBasis
from .models.base import MorphableModel

_EPS = np.zeros((3, 3, 3))  # Levi-Civita symbol: (a × b)_c = ε_cad a_a b_d
_EPS[0, 1, 2] = _EPS[1, 2, 0] = _EPS[2, 0, 1] = 1.0
_EPS[0, 2, 1] = _EPS[2, 1, 0] = _EPS[1, 0, 2] = -1.0
_CROSS = _EPS.transpose(2, 1, 0).reshape(9, 3)  # rows (d, a), columns c: ε_cad
N_CAMERA = 7  # (rx, ry, rz, tx, ty, tz, scale), see camera.CAMERA_FIELDS
EXACT_IRLS_FRACTION = 0.1  # see _Problem._subtract_down_weighted
CHUNK = 256  # frames per chunk when assembling the normal equations (bounds temporary memory)


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
        e = float(np.sum(self.prior_exp * par.q**2)) + float(np.sum(reg.bound * bound_violation(par.q) ** 2))
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
    """Closed form per frame (:func:`camera_init.scaled_orthographic_cameras`) of the (identity) mean
    landmarks; missing frames interpolated."""
    basis, T = prob.basis, len(prob.valid)
    Xm = basis.mean + (np.tensordot(prob.p_init, basis.id_basis, 1) if prob.K_id else 0)  # (L, 3)
    cam, R0 = scaled_orthographic_cameras(Xm, prob.y, basis.weight, prob.valid, prob.mask, CHUNK)
    p = prob.p_init.copy()
    return _Params(p, np.zeros((T, prob.K)), cam, R0)


# --------------------------------------------------------------------------------------------- the fit


def solve_segment(
    model: MorphableModel, landmarks: np.ndarray, valid: np.ndarray, settings: FitSettings | None = None, p=None, threads: int = 1
) -> FitResult:
    """Fit identity (unless ``p`` is given), expressions and cameras to a segment's landmarks.

    ``landmarks`` (T, 478, 3): x, y pixels, z relative depth (MediaPipe), NaN where missing; ``valid`` (T,)
    bool. Frames without a face keep ``valid = False``: between faces they are bridged by the smoothness
    prior, before the first and after the last face they hold that frame's values. A segment without any face
    gives q = 0, NaN cameras and ``valid`` all False (:func:`tracks.merge_segments`
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
    """Indices of up to ``count`` frames with a face, spread evenly over the video (for :func:`solve_identity`)."""
    good = np.flatnonzero(np.asarray(valid, bool))
    if len(good) <= count:
        return good
    return good[np.round(np.linspace(0, len(good) - 1, count)).astype(int)]


def solve_identity(model: MorphableModel, landmarks: np.ndarray, settings: FitSettings | None = None, threads: int = 1) -> FitResult:
    """Estimate the identity ``p`` from a sample of frames of a video (landmarks (N, 478, 3), all with a
    face, e.g. picked by :func:`identity_frames`). The frames need not be consecutive: the temporal terms are
    off. Every segment of the video is then fitted with this ``p`` fixed, so that they agree."""
    settings = replace(settings or FitSettings(), lambda_q=0.0, lambda_c=0.0)
    landmarks = np.asarray(landmarks)
    return solve_segment(model, landmarks, np.ones(len(landmarks), bool), settings, p=None, threads=threads)


@dataclass
class _Regularisation:
    """Weights of the non-data terms, fixed for a fit (per-component, in the unknowns' order)."""

    smooth: np.ndarray  # (K + 7,) S: λ × unit metric
    hold: np.ndarray  # (7,) camera pull on faceless frames
    hold_ref: np.ndarray  # (T_invalid, 7) where faceless frames are pulled to
    ridge: np.ndarray  # (K + 7,) tiny, keeps undetermined components (e.g. tz with z_weight 0) solvable
    bound: np.ndarray  # (K,) weight of the activation bounds (0 for signed components)


def bound_violation(q: np.ndarray) -> np.ndarray:
    """How far each coefficient lies outside [0, 1]: ``q`` below 0, ``q − 1`` above 1, 0 inside."""
    return np.minimum(q, 0.0) + np.maximum(q - 1.0, 0.0)


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
        bound=s.activation_bounds * unit[: prob.K] * prob.basis.activation,
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
    v = bound_violation(par.q) if reg.bound.any() else None
    if v is not None:  # the bounds' penalty: quadratic where a coefficient is outside [0, 1], flat inside
        diag[:, :K] += reg.bound * (v != 0)
    A[:, diagonal_positions(n)] += diag
    g += reg.smooth * second_difference_gradient(np.concatenate([par.q, par.cam], axis=1))
    g[:, :K] += prob.prior_exp * par.q
    if v is not None:
        g[:, :K] += reg.bound * v
    g[~prob.valid, K:] += reg.hold * (par.cam[~prob.valid] - reg.hold_ref)
    return _System(A, d1[:, None] * reg.smooth, d2[:, None] * reg.smooth, g, E, H_pp, g_p)


def _damped_step(sy: _System, mu: float):
    """Solve (H + μ diag H) δ = −g through the block structure, factorising ``sy.A`` in place; returns
    (δx (T, n), δp)."""
    sy.A[:, diagonal_positions(sy.g.shape[1])] *= 1 + mu
    H_pp = sy.H_pp + mu * np.diag(np.diag(sy.H_pp))
    return solve_bordered(sy.A, sy.b, sy.c, -sy.g, sy.E, H_pp, -sy.g_p, overwrite=True)

