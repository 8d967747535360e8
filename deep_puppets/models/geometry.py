"""Small geometric helpers shared by the model providers (pure numpy/scipy functions).

- :func:`similarity_transform`: least-squares similarity (scale, rotation, translation) between point sets
  (Umeyama 1991), optionally weighted; never a reflection.
- :func:`closest_points_on_mesh`: closest surface point (triangle + barycentric weights) of query points.
- :func:`orient_outward`, :func:`fit_sphere`.
"""

from __future__ import annotations

import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Scale ``s``, rotation ``R`` (3, 3) and translation ``t`` (3,) minimising Σ w‖s R src + t − dst‖².

    ``src``, ``dst``: (P, 3). Apply with :func:`apply_similarity`.
    """
    src = np.asarray(src, float)
    dst = np.asarray(dst, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = (u * d) @ vt
    var_s = w @ (xs**2).sum(axis=1)
    scale = float((sig * d).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return scale, rot, t


def apply_similarity(points: np.ndarray, scale: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``scale · R · p + t`` for points (..., 3)."""
    return scale * points @ rot.T + t


def _safe_div(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(np.isfinite(out), out, 0.0)


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights (M, 3) of the point of triangle (a, b, c) closest to ``p`` (all (M, 3)).

    Region tests of Ericson, *Real-Time Collision Detection*, 5.1.5, vectorised: the earliest region that
    applies wins, as in the scalar version.
    """
    dot = lambda x, y: np.einsum("ij,ij->i", x, y)  # noqa: E731
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    v = _safe_div(vb, denom)
    w = _safe_div(vc, denom)
    bary = np.stack([1 - v - w, v, w], axis=1)

    def put(mask, weights):
        bary[mask] = weights[mask] if weights.ndim == 2 else weights

    one = np.ones_like(d1)
    zero = np.zeros_like(d1)
    t_bc = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    t_ac = _safe_div(d2, d2 - d6)
    t_ab = _safe_div(d1, d1 - d3)
    # Later assignments override earlier ones: write in reverse order of Ericson's early returns.
    put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), np.stack([zero, 1 - t_bc, t_bc], 1))
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, zero, t_ac], 1))
    put((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], 1))
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, zero], 1))
    put((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], 1))
    put((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], 1))
    return bary


def closest_points_on_mesh(points, vertices, triangles, candidates=None, k: int = 32):
    """Closest surface point of each query point on a triangle mesh.

    ``candidates``: indices of the triangles allowed (default all). The search evaluates the ``k``
    triangles whose centroids are nearest to each point exactly, which is exact for query points near a
    reasonably uniform mesh (the use here). Returns ``(tri, bary, dist)``: triangle index into
    ``triangles`` (P,), barycentric weights (P, 3) and distance (P,).
    """
    from scipy.spatial import cKDTree  # lazy: keeps importing the models package light

    points = np.atleast_2d(np.asarray(points, float))
    vertices = np.asarray(vertices, float)
    triangles = np.asarray(triangles)
    cand = np.arange(len(triangles)) if candidates is None else np.asarray(candidates)
    corners = vertices[triangles[cand]]  # (C, 3, 3)
    k = min(k, len(cand))
    _, near = cKDTree(corners.mean(axis=1)).query(points, k=k)
    near = near.reshape(len(points), k)
    a, b, c = (corners[near.ravel(), i] for i in range(3))
    bary = closest_point_on_triangles(np.repeat(points, k, axis=0), a, b, c)
    foot = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    dist = np.linalg.norm(foot - np.repeat(points, k, axis=0), axis=1).reshape(len(points), k)
    best = dist.argmin(axis=1)
    rows = np.arange(len(points))
    flat = rows * k + best
    return cand[near[rows, best]], bary[flat], dist[rows, best]


def signed_volume(vertices: np.ndarray, triangles: np.ndarray, origin=None) -> float:
    """Σ det(a − o, b − o, c − o) / 6: positive when the triangles face away from ``origin`` (default centroid)."""
    o = vertices.mean(axis=0) if origin is None else np.asarray(origin, float)
    v = vertices[triangles] - o
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6)


def orient_outward(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``triangles`` with all windings flipped when, on the whole, they face the inside (toward the centroid).

    Only a global flip: the input is assumed consistently wound. Works for closed heads and for open face
    masks (whose centroid lies behind the surface).
    """
    if signed_volume(vertices, triangles) < 0:
        return np.ascontiguousarray(triangles[:, ::-1])
    return triangles


def fit_sphere(points: np.ndarray):
    """Least-squares sphere through points (P, 3): ``(centre (3,), radius)``."""
    a = np.c_[2 * points, np.ones(len(points))]
    sol = np.linalg.lstsq(a, (points**2).sum(axis=1), rcond=None)[0]
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))
