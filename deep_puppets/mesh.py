"""Per-vertex quantities of a triangle mesh of fixed topology: the vertex–triangle incidence, vertex normals
and the uniform graph Laplacian.

There are two vertex-normal functions, both area-weighted sums of the incident faces' ``(v1 - v0) × (v2 - v0)``
normalised, which differ in their last bits and so are kept apart (outputs must not change):

* :func:`vertex_normals_float64` — float64 whatever the input, batched over leading dimensions (frames), length
  ``np.linalg.norm`` with a 1e-30 floor (the texture estimate's normals);
* :func:`vertex_normals_keep_dtype` — in the vertices' own precision (float32 in the renderer, per frame), one
  mesh with a precomputed incidence, length ``sqrt(einsum)``. In float64 the two differ by ≤ 1 ulp (in the
  length) on about 10% of a face mesh's vertices.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def vertex_face_incidence(triangles: np.ndarray, n: int, dtype=np.float64) -> sp.csr_matrix:
    """Sparse (N, F) vertex–triangle incidence of ``dtype`` (1 where the vertex is a corner of the triangle):
    summing per-triangle values (e.g. area-weighted face normals) onto the vertices."""
    triangles = np.asarray(triangles, dtype=np.int64)
    f = len(triangles)
    rows = triangles.reshape(-1)
    cols = np.repeat(np.arange(f), 3)
    return sp.csr_matrix((np.ones(3 * f, dtype), (rows, cols)), shape=(n, f))


def vertex_normals_float64(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (…, N, 3) float64, outward for counter-clockwise triangles.

    Each vertex gets the sum of ``(v1 - v0) × (v2 - v0)`` (twice the area times the unit normal) of its
    triangles, normalised. Vertices in no triangle (or with cancelling normals) get a zero vector, which
    never passes a facing test. Batched over any leading dimensions (e.g. frames).
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    n = v.shape[-2]
    lead = v.shape[:-2]
    vb = v.reshape(-1, n, 3)
    fn = np.cross(vb[:, tri[:, 1]] - vb[:, tri[:, 0]], vb[:, tri[:, 2]] - vb[:, tri[:, 0]])  # (B, F, 3)
    inc = vertex_face_incidence(tri, n)  # (N, F)
    b = vb.shape[0]
    vn = (inc @ fn.transpose(1, 0, 2).reshape(len(tri), b * 3)).reshape(n, b, 3).transpose(1, 0, 2)
    norm = np.linalg.norm(vn, axis=-1, keepdims=True)
    vn = np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 1e-30)
    return vn.reshape(*lead, n, 3)


def vertex_normals_keep_dtype(vertices: np.ndarray, faces: np.ndarray, incidence: sp.csr_matrix) -> np.ndarray:
    """Unit vertex normals (N, 3) in the vertices' precision: area-weighted mean of the incident faces'
    ``(v1 - v0) × (v2 - v0)``, one mesh, ``incidence`` from :func:`vertex_face_incidence` (built once per topology).

    The normal points to the side from which the triangles are seen counter-clockwise in a right-handed
    frame. A vertex without faces (or with a degenerate fan) gets (0, 0, 0).
    """
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    n = incidence @ np.cross(v1 - v0, v2 - v0)
    length = np.sqrt(np.einsum("ij,ij->i", n, n))
    return n / np.where(length > 0, length, 1.0)[:, None]


def mesh_laplacian(triangles: np.ndarray, n: int) -> sp.csr_matrix:
    """Uniform graph Laplacian (degree − adjacency) of the mesh edges, (N, N) sparse, symmetric PSD."""
    t = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    e = e[e[:, 0] != e[:, 1]]
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    adj = (adj + adj.T).tocsr()  # duplicates (edges shared by two triangles) are summed ...
    adj.data[:] = 1.0  # ... and reset: an unweighted graph
    return (sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj).tocsr()
