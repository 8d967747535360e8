"""Generic block-structured linear algebra: symmetric block-pentadiagonal systems with diagonal off-diagonal
blocks, solved by block Cholesky in O(T n³) time and O(T n²) memory (:func:`solve_packed`), with a dense border
eliminated by its Schur complement (:func:`solve_bordered`); the packed lower-triangle storage of the diagonal
blocks; the coefficients, energy and gradient of second differences in time (whose normal matrix ``DᵀD`` is
what makes those systems pentadiagonal); and :func:`single_threaded_blas` for the many tiny products.

Nothing here knows about faces or models: :mod:`deep_puppets.fitting` builds the systems.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtri

_SCALE_ROWS = 256  # rows of Ap scaled at once in place (bounds the temporary)


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
        with open("/proc/self/maps") as f:
            maps = f.read()
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


def diagonal_positions(n: int) -> np.ndarray:
    """Positions of the diagonal in a packed lower triangle."""
    rows, cols = np.tril_indices(n)
    return np.flatnonzero(rows == cols)


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
    for i in range(0, T, _SCALE_ROWS):  # in place, without a (T, n(n+1)/2) temporary
        Ap[i : i + _SCALE_ROWS] *= d[i : i + _SCALE_ROWS, rows] * d[i : i + _SCALE_ROWS, cols]
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


def second_difference_gradient(x: np.ndarray) -> np.ndarray:
    """DᵀD x for x (T, n)."""
    g = np.zeros_like(x)
    if len(x) >= 3:
        dd = x[:-2] - 2 * x[1:-1] + x[2:]
        g[:-2] += dd
        g[1:-1] -= 2 * dd
        g[2:] += dd
    return g

