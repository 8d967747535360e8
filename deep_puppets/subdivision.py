"""Loop subdivision as a linear operator (vertex normals: :mod:`deep_puppets.mesh`).

Loop subdivision is linear in the vertex positions: the refined vertices are ``S @ V`` for a sparse matrix
``S`` that depends on the topology only. :func:`loop_subdivision` builds ``S`` once (any number of levels);
each frame then costs one sparse product instead of a mesh rebuild. The same ``S`` carries any per-vertex
attribute (albedo, correspondence colours) onto the refined mesh.

Rules (Loop 1987 with the usual boundary rules; identical to ``trimesh.remesh.subdivide_loop`` on closed
meshes, while trimesh also averages boundary neighbours joined by interior edges):

* new vertex on an interior edge ``ab`` with opposite vertices ``c, d``: ``3/8 (a + b) + 1/8 (c + d)``;
  on a boundary edge: ``(a + b) / 2``;
* interior old vertex with ``k`` neighbours: ``(1 - k β) v + β Σ neighbours``,
  ``β = (40 - (3 + 2 cos(2π/k))²) / (64 k)``;
* boundary old vertex: ``3/4 v + 1/8 (b0 + b1)`` over its two boundary neighbours (``1/4`` shared equally
  when a vertex touches more than two boundary edges).

Each triangle ``(v0, v1, v2)`` becomes ``(v0, m01, m20), (m01, v1, m12), (m20, m12, v2), (m01, m12, m20)``, so the
winding (front side) is preserved. Old vertices keep their indices; edge vertices follow.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected edges (E, 2) sorted, the edge of each half-edge (F, 3), and each edge's face count.

    Half-edge ``k`` of face ``f`` runs from ``faces[f, k]`` to ``faces[f, (k + 1) % 3]``.
    """
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)
    edges, inverse, counts = np.unique(np.sort(half, axis=1), axis=0, return_inverse=True, return_counts=True)
    return edges, inverse.reshape(faces.shape), counts


def loop_step(faces: np.ndarray, n_vertices: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """One level of Loop subdivision: ``(S, new_faces)`` with ``S`` of shape (n_vertices + E, n_vertices)."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    edges, edge_of, counts = _edges(faces)
    if (counts > 2).any():
        raise ValueError(f"{int((counts > 2).sum())} edges are shared by more than two triangles (non-manifold mesh)")
    n, e = n_vertices, len(edges)
    boundary_edge = counts == 1

    # odd (edge) vertices, accumulated per half-edge: an interior edge is visited twice
    a, b = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    c = np.roll(faces, -2, axis=1).reshape(-1)  # vertex opposite the half-edge
    he = edge_of.reshape(-1)
    bnd = boundary_edge[he]
    w_ab = np.where(bnd, 0.5, 3.0 / 16.0)
    w_c = np.where(bnd, 0.0, 1.0 / 8.0)
    rows = [n + he, n + he, n + he]
    cols = [a, b, c]
    vals = [w_ab, w_ab, w_c]

    # even (old) vertices
    degree = np.bincount(edges.ravel(), minlength=n)
    n_boundary = np.bincount(edges[boundary_edge].ravel(), minlength=n)
    on_boundary = n_boundary > 0
    k = np.maximum(degree, 1).astype(np.float64)
    beta = (40.0 - (3.0 + 2.0 * np.cos(2.0 * np.pi / k)) ** 2) / (64.0 * k)
    beta[degree == 0] = 0.0
    self_w = np.where(on_boundary, 0.75, 1.0 - degree * beta)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(self_w)
    for src, dst in ((0, 1), (1, 0)):  # each undirected edge feeds both of its end points
        v, u = edges[:, src], edges[:, dst]
        interior_v = ~on_boundary[v]
        w = np.where(interior_v, beta[v], np.where(boundary_edge, 0.25 / np.maximum(n_boundary[v], 1), 0.0))
        rows.append(v)
        cols.append(u)
        vals.append(w)

    S = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n + e, n)).tocsr()
    S.eliminate_zeros()

    m01, m12, m20 = (n + edge_of[:, k] for k in range(3))
    v0, v1, v2 = faces.T
    new_faces = np.stack(
        [
            np.stack([v0, m01, m20], 1),
            np.stack([m01, v1, m12], 1),
            np.stack([m20, m12, v2], 1),
            np.stack([m01, m12, m20], 1),
        ],
        axis=1,
    ).reshape(-1, 3)
    return S, new_faces


def loop_subdivision(faces: np.ndarray, n_vertices: int, levels: int = 1) -> tuple[sp.csr_matrix, np.ndarray]:
    """``levels`` Loop steps composed: refined vertices are ``S @ V``; returns ``(S, faces)``.

    ``levels = 0`` gives the identity and the input faces.
    """
    S = sp.identity(n_vertices, format="csr", dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    for _ in range(levels):
        step, faces = loop_step(faces, S.shape[0])
        S = (step @ S).tocsr()
    return S, faces
