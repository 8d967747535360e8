"""The demo's warp rig: FaceMesh landmark groups, the mesh over the photo and its expression blendshapes.

:func:`build_rig` turns the neutral landmarks of the demo photo into a warp rig: the 852 triangles of the
FaceMesh tessellation, the eye openings and the mouth opening filled with extra triangles, an outer ring of
anchors around the head that moves rigidly with it (hair, neck) and fixed anchors on the image border (the
background stays). It also builds three linear expression blendshapes (:data:`EXPRESSIONS`): mouth opening
(jaw, lower lip and chin move down), eye blink (upper lids close onto the lower lids) and brow raise. Posing and
warping the rig is :mod:`deep_puppets.demo_warp`; the clips are :mod:`deep_puppets.demo`.
"""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import dataclass

import numpy as np

from .models.facemesh import IRIS

EXPRESSIONS = ("mouth_open", "blink", "brow_raise")

# --- MediaPipe FaceMesh landmark groups (478-point topology; "first"/"second" = image left/right eye in the
# unmirrored photo). Lip and lid chains run from one corner to the other.
FACE_OVAL_LOOP = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # closed loop
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
EYE_UPPER = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (263, 466, 388, 387, 386, 385, 384, 398, 362))
EYE_LOWER = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (263, 249, 390, 373, 374, 380, 381, 382, 362))
BROWS = ((46, 53, 52, 65, 55, 70, 63, 105, 66, 107), (276, 283, 282, 295, 285, 300, 293, 334, 296, 336))
FOREHEAD_TOP, CHIN, EAR_LEFT, EAR_RIGHT = 10, 152, 234, 454

# --- Expression blendshape sizes, in face heights (forehead-top to chin distance in the photo).
MOUTH_DROP = 0.16  # jaw drop of the lower lip centre at mouth_open = 1
BROW_LIFT = 0.07  # brow lift at brow_raise = 1


# ---------------------------------------------------------------------------------------------- topology


@functools.lru_cache(maxsize=1)
def tessellation() -> np.ndarray:
    """The 852 triangles (int32, (852, 3)) of the MediaPipe face mesh.

    ``FACEMESH_TESSELATION`` is a frozenset of edges; its source lists each triangle as three consecutive
    edges (a, b), (b, c), (c, a), so the triangles are read from the source in order.
    """
    from mediapipe.python.solutions import face_mesh_connections as fmc

    tree = ast.parse(inspect.getsource(fmc))
    edges = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FACEMESH_TESSELATION" for t in node.targets):
            edges = ast.literal_eval(node.value.args[0])
    if edges is None or len(edges) % 3:
        raise RuntimeError("cannot read FACEMESH_TESSELATION from mediapipe's source")
    tris = []
    for (a, b), (b2, c), (c2, a2) in zip(edges[0::3], edges[1::3], edges[2::3]):
        if (b, c, a) != (b2, c2, a2):
            raise RuntimeError(f"FACEMESH_TESSELATION edges {(a, b), (b2, c), (c2, a2)} are not a triangle")
        tris.append((a, b, c))
    return np.array(tris, dtype=np.int32)


def eye_loop(eye: int) -> tuple[int, ...]:
    """Closed contour of eye ``eye`` (0 or 1): upper lid corner to corner, then the lower lid back."""
    return EYE_UPPER[eye] + EYE_LOWER[eye][-2:0:-1]

# --------------------------------------------------------------------------------------- face geometry


@dataclass(frozen=True)
class FaceFrame:
    """A 2D frame attached to the neutral face: origin at the mouth centre, ``u`` along the eye line (towards
    the image-right eye), ``v`` perpendicular (down the face), ``height`` forehead-top to chin (pixels)."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    height: float

    def coords(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) face coordinates (u, v) of points (N, >=2), in face heights."""
        d = points[:, :2] - self.origin
        return np.stack([d @ self.u, d @ self.v], axis=1) / self.height


def face_frame(neutral: np.ndarray) -> FaceFrame:
    eye0 = neutral[list(eye_loop(0)), :2].mean(0)
    eye1 = neutral[list(eye_loop(1)), :2].mean(0)
    u = (eye1 - eye0) / np.linalg.norm(eye1 - eye0)
    v = np.array([-u[1], u[0]])
    origin = neutral[[13, 14], :2].mean(0)
    height = float((neutral[CHIN, :2] - neutral[FOREHEAD_TOP, :2]) @ v)
    return FaceFrame(origin=origin, u=u, v=v, height=height)


def _smoothstep(x, lo, hi):
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def mouth_open_weights(uv: np.ndarray, lower_lip: np.ndarray, upper_lip: np.ndarray, chin_v: float,
                       corner_u: np.ndarray) -> np.ndarray:
    """How far each point moves down (fraction of the jaw drop) when the mouth opens.

    ``uv``: face coordinates (N, 2); ``lower_lip``/``upper_lip``: (N,) bool labels of lip points;
    ``corner_u``: (N,) half-width of the mouth the lip points belong to (inner or outer corners), in face
    heights; ``chin_v``: the chin's v. Upper-lip points stay; lower-lip points follow a parabola that is 0 at
    the corners; everything else follows the jaw: 0 above the mouth, 1 below it, fading sideways and below
    the chin (the neck stretches).
    """
    u, v = uv[:, 0], uv[:, 1]
    lip = np.clip(1 - (u / np.maximum(corner_u, 1e-6)) ** 2, 0, 1) ** 0.5
    jaw = _smoothstep(v, -0.02, 0.10) * np.exp(-0.5 * (u / 0.42) ** 2)
    below_chin = np.clip(v - chin_v, 0, None)
    jaw = jaw * np.exp(-0.5 * (below_chin / 0.22) ** 2)
    w = np.where(lower_lip, lip, jaw)
    return np.where(upper_lip, 0.0, w)


def blink_shift(uv: np.ndarray, upper: np.ndarray, lower: np.ndarray, is_lower: np.ndarray,
                reach: float = 0.08) -> np.ndarray:
    """Downward shift (face heights) of each point when one eye closes fully.

    ``upper``/``lower``: (K, 2) face coordinates of the upper and lower lid, corner to corner. Points
    between the lids are pressed onto the lower lid (shift = lower - v, so the upper lid lands on the lower
    one); skin above the upper lid follows with a falloff over ``reach``; points outside the eye's width,
    below the lower lid or on it (``is_lower``) stay.
    """
    u, v = uv[:, 0], uv[:, 1]
    ou, ol = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    v_up = np.interp(u, upper[ou, 0], upper[ou, 1])
    v_lo = np.interp(u, lower[ol, 0], lower[ol, 1])
    inside = (u > max(upper[:, 0].min(), lower[:, 0].min())) & (u < min(upper[:, 0].max(), lower[:, 0].max()))
    gap = np.clip(v_lo - v_up, 0, None)
    between = np.clip(v_lo - v, 0, None)
    above = v < v_up
    falloff = np.clip(1 - (v_up - v) / reach, 0, 1) ** 2
    shift = np.where(above, gap * falloff, np.where(v <= v_lo, between, 0.0))
    return np.where(inside & ~is_lower, shift, 0.0)


def brow_lift_weights(uv: np.ndarray, brow_uv: np.ndarray, is_brow: np.ndarray, frozen: np.ndarray,
                      sigma: float = 0.06) -> np.ndarray:
    """How far each point moves up (fraction of the brow lift): 1 on the brows, a Gaussian of the distance
    to the nearest brow point elsewhere, 0 for ``frozen`` points (lower lids, eye interior)."""
    d = np.sqrt(((uv[:, None, :] - brow_uv[None, :, :]) ** 2).sum(-1)).min(1)
    w = np.where(is_brow, 1.0, np.exp(-0.5 * (d / sigma) ** 2))
    return np.where(frozen, 0.0, w)


# ------------------------------------------------------------------------------------------------- rig


@dataclass(frozen=True)
class Rig:
    """Everything needed to pose and warp one photo.

    ``vertices`` (V, 3): neutral positions; rows 0..477 are the landmarks, then extra warp vertices (eye
    centres, mouth seam, head ring, border). ``basis`` (E, V, 3): displacement per unit expression scalar.
    ``triangles`` (F, 3) index ``vertices``; ``background`` (F,) marks the triangles outside the face
    (drawn first); ``fill`` (F,) marks the mouth gap (painted :data:`deep_puppets.demo_warp.MOUTH_COLOUR`); ``depth_bias`` (F,)
    pushes eye and mouth interiors behind the lids and lips. ``fixed`` (V,) marks the border anchors.
    Iris landmarks are not warp vertices: their 2D positions follow the triangle that holds them
    (``iris_triangle``, ``iris_bary``), so the truth is exactly where the warp puts their pixels.
    """

    size: int
    vertices: np.ndarray
    basis: np.ndarray
    triangles: np.ndarray
    background: np.ndarray
    fill: np.ndarray
    depth_bias: np.ndarray
    fixed: np.ndarray
    pivot: np.ndarray
    iris_triangle: np.ndarray
    iris_bary: np.ndarray


def _polygon_contains(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    import cv2

    poly = polygon.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0 for x, y in points])


def _mask(n: int, ids, exclude=()) -> np.ndarray:
    m = np.zeros(n, bool)
    m[list(ids)] = True
    m[list(exclude)] = False
    return m


def _strip(a: list[int], b: list[int]) -> list[tuple[int, int, int]]:
    """Triangles between two chains of equal length that share their end points."""
    tris = [(a[0], a[1], b[1])]
    for i in range(1, len(a) - 2):
        tris += [(a[i], a[i + 1], b[i + 1]), (a[i], b[i + 1], b[i])]
    tris.append((a[-2], a[-1], b[-2]))
    return tris


def _outer_triangles(points: np.ndarray, n_oval: int) -> np.ndarray:
    """Delaunay triangles of (oval, ring, border) points that lie outside the oval (the first ``n_oval``)."""
    from scipy.spatial import Delaunay

    tri = Delaunay(points).simplices
    keep = ~_polygon_contains(points[:n_oval], points[tri].mean(1))
    tri = tri[keep]
    edges = {frozenset(e) for t in tri for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    missing = [i for i in range(n_oval) if frozenset((i, (i + 1) % n_oval)) not in edges]
    if missing:
        raise RuntimeError(f"demo rig: the outer triangulation misses face-oval edges {missing}")
    return tri


def _barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, F, 3) of points (N, 2) in triangles (F, 3, 2)."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    m = np.stack([b - a, c - a], axis=-1)  # (F, 2, 2)
    det = np.linalg.det(m)
    m_inv = np.linalg.inv(np.where(np.abs(det)[:, None, None] > 1e-12, m, np.eye(2)))
    lam = np.einsum("fij,nfj->nfi", m_inv, points[:, None, :] - a[None])
    return np.concatenate([1 - lam.sum(-1, keepdims=True), lam], axis=-1)


class _MeshBuilder:
    """Vertices and flagged triangles of a rig under construction (see :class:`Rig`)."""

    def __init__(self, landmarks: np.ndarray):
        self.vertices = [np.asarray(landmarks, dtype=np.float64)]
        self.n = len(landmarks)
        self.triangles: list[tuple[int, int, int]] = []
        self.flags: list[tuple[bool, bool, bool]] = []  # background, fill, interior

    def add_vertices(self, points) -> list[int]:
        points = np.atleast_2d(points)
        self.vertices.append(points)
        self.n += len(points)
        return list(range(self.n - len(points), self.n))

    def add_triangles(self, tris, background=False, fill=False, interior=False) -> None:
        self.triangles.extend(tuple(int(i) for i in t) for t in tris)
        self.flags.extend([(background, fill, interior)] * len(tris))

    def all_vertices(self) -> np.ndarray:
        return np.concatenate(self.vertices)


def _add_eye_openings(mesh: _MeshBuilder, neutral: np.ndarray) -> list[int]:
    """Fill each eye opening with a fan around a new centre vertex; returns the centres."""
    centres = []
    for eye in (0, 1):
        loop = list(eye_loop(eye))
        (c,) = mesh.add_vertices(neutral[loop].mean(0))
        centres.append(c)
        mesh.add_triangles([(c, loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))], interior=True)
    return centres


def _add_mouth_opening(mesh: _MeshBuilder, neutral: np.ndarray) -> tuple[list[int], list[int]]:
    """Fill the mouth opening. The seam between the lips is doubled: the upper copy moves with the upper lip
    (carrying the upper teeth), the lower copy with the lower lip, and the gap that opens between them is
    painted as the inside of the mouth. Returns the two seam chains (corner to corner)."""
    up, lo = list(UPPER_LIP_INNER), list(LOWER_LIP_INNER)
    seam = (neutral[up[1:-1]] + neutral[lo[1:-1]]) / 2
    seam_up = [up[0]] + mesh.add_vertices(seam) + [up[-1]]
    seam_lo = [lo[0]] + mesh.add_vertices(seam) + [lo[-1]]
    mesh.add_triangles(_strip(up, seam_up), interior=True)
    mesh.add_triangles(_strip(seam_lo, lo), interior=True)
    mesh.add_triangles(_strip(seam_up, seam_lo), fill=True, interior=True)
    return seam_up, seam_lo


def _add_outer_region(mesh: _MeshBuilder, neutral: np.ndarray, size: int, depth: float, ring_scale: float) -> list[int]:
    """Triangulate from the face oval to the image border: a ring of anchors around the head (the oval
    scaled ``ring_scale`` times about its centre, kept inside the frame, at ``depth`` like a head's
    silhouette) that moves with the head, and fixed anchors just outside the image. Returns the border
    anchors."""
    oval = neutral[list(FACE_OVAL_LOOP), :2]
    centre = oval.mean(0)
    margin = 0.04 * size
    ring = np.clip(centre + ring_scale * (oval - centre), margin, size - 1 - margin)
    ring_ids = mesh.add_vertices(np.column_stack([ring, np.full(len(ring), depth)]))
    edge = np.linspace(-1.0, size, 9)
    lo, hi = np.full(9, -1.0), np.full(9, float(size))
    sides = ((edge, lo), (edge, hi), (lo, edge), (hi, edge))
    border = np.unique(np.concatenate([np.column_stack(side) for side in sides]), axis=0)
    border_ids = mesh.add_vertices(np.column_stack([border, np.full(len(border), depth)]))
    ids = np.array(list(FACE_OVAL_LOOP) + ring_ids + border_ids)
    outer = _outer_triangles(mesh.all_vertices()[ids, :2], len(FACE_OVAL_LOOP))
    mesh.add_triangles(ids[outer], background=True)
    return border_ids


def expression_basis(vertices: np.ndarray, frame: FaceFrame, seam_up: list[int], seam_lo: list[int],
                     eye_centres: list[int]) -> np.ndarray:
    """Blendshapes (E, V, 3) in pixels for :data:`EXPRESSIONS`, all along the face's downward axis ``v``:
    mouth opening (jaw drop :data:`MOUTH_DROP`), blink (upper lids onto lower lids), brow raise
    (:data:`BROW_LIFT`). ``seam_up``/``seam_lo``: the mouth seam copies moving with each lip."""
    n = len(vertices)
    uv = frame.coords(vertices)

    corners = [78, 308, 61, 291]  # inner and outer mouth corners stay put
    inner = list(UPPER_LIP_INNER + LOWER_LIP_INNER) + seam_up + seam_lo
    outer = list(UPPER_LIP_OUTER + LOWER_LIP_OUTER)
    upper_lip = _mask(n, list(UPPER_LIP_INNER + UPPER_LIP_OUTER) + seam_up, corners)
    lower_lip = _mask(n, list(LOWER_LIP_INNER + LOWER_LIP_OUTER) + seam_lo, corners)
    corner_u = np.ones(n)
    corner_u[inner] = np.abs(uv[[78, 308], 0]).mean()
    corner_u[outer] = np.abs(uv[[61, 291], 0]).mean()
    mouth = mouth_open_weights(uv, lower_lip, upper_lip, uv[CHIN, 1], corner_u)
    mouth[corners] = 0.0

    blink = sum(blink_shift(uv, uv[list(EYE_UPPER[e])], uv[list(EYE_LOWER[e])], _mask(n, EYE_LOWER[e])) for e in (0, 1))

    frozen = _mask(n, [i for e in (0, 1) for i in EYE_LOWER[e]] + eye_centres + list(IRIS))
    is_brow = _mask(n, [i for b in BROWS for i in b])
    brow = brow_lift_weights(uv, uv[is_brow], is_brow, frozen)

    down = np.array([frame.v[0], frame.v[1], 0.0]) * frame.height
    return np.stack([MOUTH_DROP * mouth, blink, -BROW_LIFT * brow])[:, :, None] * down


def build_rig(neutral: np.ndarray, size: int, ring_scale: float = 1.5) -> Rig:
    """Warp rig and expression blendshapes for a photo of ``size`` x ``size`` whose neutral landmarks are
    ``neutral`` (478, 3). The pivot lies at the depth of the face's sides (in front of the ears), a little
    behind, which puts it near the head's centre."""
    neutral = np.asarray(neutral, dtype=np.float64)
    width = float(np.linalg.norm(neutral[EAR_RIGHT, :2] - neutral[EAR_LEFT, :2]))
    centre = neutral[list(FACE_OVAL_LOOP), :2].mean(0)
    pivot = np.array([centre[0], centre[1], neutral[[EAR_LEFT, EAR_RIGHT], 2].mean() + 0.1 * width])

    mesh = _MeshBuilder(neutral)
    mesh.add_triangles(tessellation())
    eye_centres = _add_eye_openings(mesh, neutral)
    seam_up, seam_lo = _add_mouth_opening(mesh, neutral)
    border = _add_outer_region(mesh, neutral, size, pivot[2], ring_scale)

    vertices = mesh.all_vertices()
    triangles = np.array(mesh.triangles, dtype=np.int32)
    background, fill, interior = np.array(mesh.flags).T
    fixed = _mask(len(vertices), border)
    basis = expression_basis(vertices, face_frame(neutral), seam_up, seam_lo, eye_centres)
    basis[:, fixed] = 0.0

    # Iris landmarks: the face triangle holding each one in the neutral photo, and where in it.
    face_tris = np.flatnonzero(~background & ~fill)
    bary = _barycentric(neutral[list(IRIS), :2], vertices[triangles[face_tris], :2])
    best = bary.min(-1).argmax(1)

    return Rig(
        size=size, vertices=vertices, basis=basis, triangles=triangles, background=background, fill=fill,
        depth_bias=np.where(interior, 0.05 * width, 0.0), fixed=fixed, pivot=pivot,
        iris_triangle=face_tris[best], iris_bary=bary[np.arange(len(IRIS)), best],
    )
