"""Per-vertex albedo and SH lighting of a tracked face estimated from the colours of its first frames
(:func:`estimate_albedo_and_lighting`, model and gauge: :mod:`deep_puppets.texture`), the bilinear colour
sampling it uses, and baking a per-vertex albedo into a UV texture."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components

from ..mesh import mesh_laplacian
from .lighting import SH_DC_UNIT, sh_basis, sh_light_direction
from .visibility import PIXEL_CENTER, rasterize


def sample_colors(frame: np.ndarray, points2d: np.ndarray) -> np.ndarray:
    """Bilinear RGB samples (N, 3) in [0, 1] of ``frame`` (H, W, 3) at image points (N, 2).

    uint8 frames are divided by 255, float frames taken as they are. Points use :data:`~.visibility.PIXEL_CENTER`;
    points outside the image take the nearest border value; non-finite points give NaN.
    """
    img = np.asarray(frame)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h, w = img.shape[:2]
    p = np.asarray(points2d, dtype=np.float64)[:, :2]
    good = np.isfinite(p).all(1)
    col = np.where(good, p[:, 0], 0.0) - PIXEL_CENTER
    row = np.where(good, p[:, 1], 0.0) - PIXEL_CENTER
    c0 = np.clip(np.floor(col), 0, max(w - 2, 0)).astype(np.int64)
    r0 = np.clip(np.floor(row), 0, max(h - 2, 0)).astype(np.int64)
    c1 = np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    fx = np.clip(col - c0, 0, 1)[:, None]
    fy = np.clip(row - r0, 0, 1)[:, None]
    out = (img[r0, c0] * (1 - fx) + img[r0, c1] * fx) * (1 - fy) + (img[r1, c0] * (1 - fx) + img[r1, c1] * fx) * fy
    out[~good] = np.nan
    return out


def estimate_albedo_and_lighting(
    frames,
    points2d,
    normals,
    visible,
    *,
    triangles=None,
    valid=None,
    weights=None,
    n_frames: int = 10,
    n_iter: int = 30,
    smooth: float = 0.05,
    robust: bool = True,
    saturation: float = 250 / 255,
    tol: float = 1e-4,
):
    """Per-vertex albedo (N, 3) and SH lighting (9, 3) explaining the colours of the first valid frames.

    Inputs per frame t: ``frames[t]`` RGB (H, W, 3), ``points2d[t]`` (N, 2) image projections of the
    vertices, ``normals[t]`` (N, 3) unit normals in camera coordinates, ``visible[t]`` (N,) bool
    (:func:`~.visibility.visible_vertices`). ``valid`` (T,) flags usable frames (others are skipped); the first
    ``n_frames`` valid frames with any visible vertex are used. ``weights`` (T, N) optionally down-weights
    samples (e.g. by facing cosine). Samples with a channel ≥ ``saturation`` (clipped highlights) or with
    non-finite inputs are ignored.

    Model: ``c_ti ≈ a_i · s_ti`` per channel with shading ``s_ti = sh_basis(n_ti) @ L``. It is solved in two
    stages:

    1. lighting: for a given ``L`` the least-squares albedo is closed-form per vertex,
       ``a_i = Σ_t w s c / Σ_t w s²``; eliminating it (variable projection) leaves a small nonlinear problem
       in the 8 non-DC coefficients of each channel (the DC is held at :data:`~.lighting.SH_DC_UNIT`: the gauge of the
       module doc), solved by Levenberg–Marquardt from ambient-only light. With ``robust``, Huber weights
       on the per-sample residuals (scale from their median) are refreshed every iteration (specularities,
       occluders, tracking errors). At most ``n_iter`` iterations; stops once no coefficient moves by
       more than ``tol``. The lighting is identified by the head *moving* under it: each vertex is
       seen under several normals. A static head leaves it (nearly) unidentified; a tiny ridge on the
       non-DC terms then keeps the lighting close to ambient and the albedo close to the observed colours.
    2. albedo: given the lighting, ``argmin Σ w (a s − c)² + λ Σ_edges |a_i − a_j|²`` per channel, with
       λ = ``smooth`` × the median number of observations per vertex, when ``triangles`` is given: one
       sparse solve that also fills never-visible vertices by harmonic diffusion from their neighbours (mesh
       parts with no observation at all get the mean albedo). Without ``triangles``: the per-vertex least
       squares, unobserved vertices get the mean. Clipped to [0, 1].

    Returns ``(albedo (N, 3) float32, sh (9, 3) float32, stats dict)``; ``stats`` has the frames used, the
    number of samples, iterations, reproduction errors (``mae``, ``rmse`` over used samples), the observed
    and clipped fractions of vertices and the dominant ``light_direction``.
    """
    pts = np.asarray(points2d, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    t_all, n = vis.shape
    valid = np.ones(t_all, bool) if valid is None else np.asarray(valid, dtype=bool)
    use = [t for t in range(t_all) if valid[t] and vis[t].any()][:n_frames]
    if not use:
        raise ValueError("no valid frame with visible vertices to estimate albedo and lighting from")

    # Samples: (frame, vertex) pairs that are visible, finite and unsaturated.
    cols = np.stack([sample_colors(frames[t], pts[t]) for t in use])  # (K, N, 3)
    m = vis[use] & np.isfinite(cols).all(-1) & np.isfinite(nrm[use]).all(-1)
    m &= np.nan_to_num(cols, nan=1.0).max(-1) < saturation
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64)[use]
        m &= np.isfinite(wt) & (wt > 0)
    k_idx, v_idx = np.nonzero(m)
    if len(v_idx) < 9:
        raise ValueError(f"only {len(v_idx)} usable colour samples; need at least 9")
    c = cols[k_idx, v_idx].astype(np.float64)  # (S, 3)
    b = sh_basis(nrm[use][k_idx, v_idx])  # (S, 9)
    w0 = np.ones(len(v_idx)) if weights is None else wt[k_idx, v_idx]

    sh, w, it = _fit_lighting(b, c, v_idx, n, w0, n_iter, robust, tol)

    counts = np.bincount(v_idx, minlength=n).astype(np.float64)
    observed = counts > 0
    s = b @ sh
    lap = mesh_laplacian(triangles, n) if triangles is not None else None
    lam = max(smooth, 1e-6) * float(np.median(counts[observed]))
    albedo = np.clip(_solve_albedo(v_idx, s, c, w, n, lap, lam), 0.0, 1.0)

    res = albedo[v_idx] * s - c
    stats = {
        "frames_used": [int(t) for t in use],
        "n_samples": int(len(v_idx)),
        "n_iter": it,
        "mae": float(np.abs(res).mean()),
        "rmse": float(np.sqrt((res**2).mean())),
        "observed_fraction": float(observed.mean()),
        "clipped_fraction": float(((albedo <= 0) | (albedo >= 1)).any(1).mean()),
        "light_direction": sh_light_direction(sh).tolist(),
    }
    return albedo.astype(np.float32), sh.astype(np.float32), stats


def _albedo_given_shading(v_idx, s, c, w, n):
    """Closed-form per-vertex least-squares albedo of one channel: numerator, denominator, value (0 if unseen)."""
    num = np.bincount(v_idx, w * s * c, minlength=n)
    den = np.bincount(v_idx, w * s * s, minlength=n)
    a = np.divide(num, den, out=np.zeros(n), where=den > 1e-12)
    return num, den, a


def _projected_cost(b, c, v_idx, n, w, L, ridge):
    """Variable-projection cost of one channel: Σ w (a(L) s − c)² + ridge |L[1:]|², and its residuals."""
    s = b @ L
    _, _, a = _albedo_given_shading(v_idx, s, c, w, n)
    r = a[v_idx] * s - c
    return float(w @ (r * r) + ridge * (L[1:] @ L[1:])), r


def _fit_lighting(b, c, v_idx, n, w0, n_iter, robust, tol):
    """SH (9, 3) by Levenberg–Marquardt on the albedo-eliminated problem, DC fixed; IRLS Huber weights."""
    sh = np.zeros((9, 3))
    sh[0] = SH_DC_UNIT
    mu = np.full(3, 1e-3)
    w = w0.copy()
    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 -- `it`, the number of iterations run, is returned after the loop
        step = 0.0
        for k in range(3):
            L, ck = sh[:, k], c[:, k]
            ridge = 1e-6 * float(w.sum())
            s = b @ L
            _, den, a = _albedo_given_shading(v_idx, s, ck, w, n)
            r = a[v_idx] * s - ck
            cost = float(w @ (r * r) + ridge * (L[1:] @ L[1:]))
            # d a_i / d L = Σ_t w (c − 2 a s) b / Σ_t w s²   (quotient rule on num / den)
            g = (w * (ck - 2 * a[v_idx] * s))[:, None] * b
            da = np.stack([np.bincount(v_idx, g[:, j], minlength=n) for j in range(9)], 1)
            da = np.divide(da, den[:, None], out=np.zeros_like(da), where=den[:, None] > 1e-12)
            jac = (a[v_idx, None] * b + s[:, None] * da[v_idx])[:, 1:]  # DC held fixed (gauge)
            jtj = (jac.T * w) @ jac + ridge * np.eye(8)
            grad = (jac.T * w) @ r + ridge * L[1:]
            for _ in range(10):  # Levenberg–Marquardt: shrink the step until the cost drops
                delta = np.linalg.solve(jtj + mu[k] * np.diag(np.diag(jtj) + 1e-12), -grad)
                trial = L.copy()
                trial[1:] += delta
                new_cost, _ = _projected_cost(b, ck, v_idx, n, w, trial, ridge)
                if new_cost <= cost:
                    sh[:, k] = trial
                    mu[k] = max(mu[k] / 3, 1e-9)
                    step = max(step, float(np.abs(delta).max()))
                    break
                mu[k] *= 10
        if robust:
            r = np.stack([_projected_cost(b, c[:, k], v_idx, n, w, sh[:, k], 0.0)[1] for k in range(3)], 1)
            e = np.abs(r).mean(1)
            sigma = 1.4826 * float(np.median(e)) + 1e-6
            w = w0 * np.minimum(1.0, 2.0 * sigma / np.maximum(e, 1e-12))
        if step < tol:
            break
    return sh, w, it


def _solve_albedo(v_idx, s, c, w, n, lap, lam):
    """Albedo (N, 3) minimising Σ w (a s − c)² + λ aᵀ Lap a (the Laplacian term also fills unseen vertices).

    Connected mesh parts without any observation get the mean albedo; the rest is one sparse SPD system
    per channel, solved by Jacobi-preconditioned conjugate gradients from the per-vertex solution.
    """
    out = np.empty((n, 3))
    for k in range(3):
        rhs, d, a = _albedo_given_shading(v_idx, s[:, k], c[:, k], w, n)
        seen = d > 1e-12
        mean = float(np.average(a[seen], weights=d[seen]))
        out[:, k] = np.where(seen, a, mean)
        if lap is None:
            continue
        if k == 0:
            _, comp = connected_components(lap, directed=False)
            free = np.flatnonzero(np.bincount(comp, seen)[comp] > 0)
            sub_lap = lap[free][:, free]
        mat = (sp.diags(d[free]) + lam * sub_lap).tocsr()
        precond = sp.diags(1.0 / mat.diagonal())
        x, _ = spla.cg(mat, rhs[free], x0=out[free, k], rtol=1e-7, maxiter=5000, M=precond)
        out[free, k] = x
    return out


def bake_uv_texture(albedo, triangles, uv, triangles_uv, size: int = 512) -> np.ndarray:
    """Per-vertex albedo baked into a (size, size, 3) float32 UV texture (for models with UVs).

    ``uv`` (M, 2) in [0, 1] with v up (OpenGL/OBJ: texel row = (1 − v) × size); ``triangles_uv`` (F, 3)
    indexes ``uv`` corner by corner like ``triangles`` (F, 3) indexes the vertices. Texels are coloured by
    barycentric interpolation of the corners' albedo; texels outside every triangle take the nearest
    covered texel's colour (so bilinear lookups at seams do not bleed black).
    """
    from scipy.ndimage import (
        distance_transform_edt,  # (inside: scipy.ndimage only for UV models)
    )

    uvp = np.asarray(uv, dtype=np.float64)
    xy = np.stack([uvp[:, 0] * size - PIXEL_CENTER, (1.0 - uvp[:, 1]) * size - PIXEL_CENTER], 1)
    _, tri_id, bary = rasterize(xy, triangles_uv, (size, size))
    corner = np.asarray(albedo, dtype=np.float64)[np.asarray(triangles)]  # (F, 3, 3)
    covered = tri_id >= 0
    tex = np.zeros((size, size, 3))
    tex[covered] = np.einsum("pk,pkc->pc", bary[covered], corner[tri_id[covered]])
    if covered.any() and not covered.all():
        _, (ri, ci) = distance_transform_edt(~covered, return_indices=True)
        tex = tex[ri, ci]
    return tex.astype(np.float32)
