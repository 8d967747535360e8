"""The embedded demo: two short clips animated from a real face photo, with known motion kept as ground truth.

The photo is ``skimage.data.astronaut()`` (512x512, shipped with scikit-image). For each clip:

1. :func:`prepare_photo` crops the head and shoulders (and, for the source, mirrors and tints the photo so
   the two clips look different; the crop is placed with a first FaceMesh run on the photo) and resizes it
   to ``size`` x ``size``. MediaPipe FaceMesh (static image, refined) on that frame gives the *neutral* 3D
   face: 478 landmarks, x, y in pixels, z relative depth in pixels (normalised z x frame width).
2. :func:`build_rig` turns the neutral landmarks into a warp rig: the 852 triangles of the FaceMesh
   tessellation, the eye openings and the mouth opening filled with extra triangles, an outer ring of anchors
   around the head that moves rigidly with it (hair, neck) and fixed anchors on the image border (the
   background stays). It also builds three linear expression blendshapes (:data:`EXPRESSIONS`): mouth
   opening (jaw, lower lip and chin move down), eye blink (upper lids close onto the lower lids) and brow
   raise.
3. :func:`motion_script` draws smooth, seeded motion curves: head yaw/pitch/roll (degrees), 2D translation,
   scale and the three expression scalars in [0, 1].
4. Each frame poses the rig (:func:`pose_vertices`: blendshapes, then a rotation about a pivot behind the
   face, scale, translation, orthographic projection) and warps the photo from the neutral mesh to the posed
   one (:func:`warp_image`: a piecewise-affine warp through dense inverse maps and ``cv2.remap``; triangles
   are drawn far to near, so a turned nose hides the cheek behind it).

Ground truth per frame (layout ``demo_truth``): the 2D landmarks a perfect detector would return (the
posed mesh vertices projected; the 10 iris points, which are not warp vertices, where the warp puts their
pixels), the posed 3D landmarks, the rotation (matrix and yaw/pitch/roll), translation, scale and expression scalars. The
rotation is relative to the head pose in the photo; conventions are in :data:`ROTATION_CONVENTION`.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from . import h5io, video
from .h5io import Dataset, Layout

log = logging.getLogger(__name__)

KINDS = ("source", "target")
EXPRESSIONS = ("mouth_open", "blink", "brow_raise")
N_LANDMARKS = 478
DEFAULTS = {"n_frames": 96, "size": 256, "fps": 25.0, "seed": 0}
ROTATION_CONVENTION = (
    "camera axes x right, y down, z away from the camera (pixels); R = Rz(roll) @ Ry(yaw) @ Rx(pitch), "
    "applied about `pivot`: posed = scale * R @ (p - pivot) + pivot + (tx, ty, 0); "
    "landmarks2d = posed x, y (orthographic). Positive yaw turns the nose towards image left, positive pitch "
    "tilts the face down, positive roll turns it clockwise on screen. Angles are relative to the head pose in "
    "the photo."
)

# --- MediaPipe FaceMesh landmark groups (478-point topology; "first"/"second" = image left/right eye in the
# unmirrored photo). Lip and lid chains run from one corner to the other.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # closed loop
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
EYE_UPPER = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (263, 466, 388, 387, 386, 385, 384, 398, 362))
EYE_LOWER = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (263, 249, 390, 373, 374, 380, 381, 382, 362))
BROWS = ((46, 53, 52, 65, 55, 70, 63, 105, 66, 107), (276, 283, 282, 295, 285, 300, 293, 334, 296, 336))
IRIS = tuple(range(468, 478))
FOREHEAD_TOP, CHIN, EAR_LEFT, EAR_RIGHT = 10, 152, 234, 454

# --- Expression blendshape sizes, in face heights (forehead-top to chin distance in the photo).
MOUTH_DROP = 0.16  # jaw drop of the lower lip centre at mouth_open = 1
BROW_LIFT = 0.07  # brow lift at brow_raise = 1
MOUTH_COLOUR = (52, 22, 24)  # RGB of the inside of an open mouth


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


# ------------------------------------------------------------------------------------------------ photo


@dataclass(frozen=True)
class Look:
    """How one clip presents the photo: mirroring, RGB gains, crop side (in face heights), crop centre offset
    below the face centre (in crop sides)."""

    mirror: bool
    gains: tuple[float, float, float]
    crop_side: float
    crop_drop: float


LOOKS = {
    "target": Look(mirror=False, gains=(1.0, 1.0, 1.0), crop_side=2.2, crop_drop=0.12),
    "source": Look(mirror=True, gains=(1.07, 0.97, 0.86), crop_side=1.95, crop_drop=0.10),
}


def detect_face_mesh(image: np.ndarray) -> np.ndarray:
    """MediaPipe FaceMesh (static image, refined: 478 points) on one RGB uint8 image.

    Returns float64 ``(478, 3)``: x, y in pixels, z relative depth in pixels (scaled like x). Raises
    ``RuntimeError`` when no face is found.
    """
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(np.ascontiguousarray(image))
    if not res.multi_face_landmarks:
        raise RuntimeError("MediaPipe FaceMesh found no face in the demo photo")
    pts = res.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], dtype=np.float64)


def crop_box(landmarks: np.ndarray, image_size: tuple[int, int], side_factor: float,
             drop: float) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) around a face: side = side_factor x face-oval height, centred on the oval
    centre moved down by ``drop`` x side, shifted (and if needed shrunk) to stay inside the image."""
    oval = landmarks[list(FACE_OVAL), :2]
    lo, hi = oval.min(0), oval.max(0)
    h, w = image_size
    side = int(round(min(side_factor * (hi[1] - lo[1]), h, w)))
    cx, cy = (lo + hi) / 2 + (0.0, drop * side)
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, side


def prepare_photo(kind: str, size: int) -> np.ndarray:
    """The astronaut photo as clip ``kind`` shows it: (mirrored, tinted,) cropped to the head and shoulders
    and resized to ``size`` x ``size`` RGB uint8."""
    import cv2
    from skimage import data

    look = LOOKS[kind]
    photo = data.astronaut()
    if look.mirror:
        photo = photo[:, ::-1]
    photo = np.clip(photo.astype(np.float32) * np.float32(look.gains), 0, 255).astype(np.uint8)
    x0, y0, side = crop_box(detect_face_mesh(photo), photo.shape[:2], look.crop_side, look.crop_drop)
    crop = np.ascontiguousarray(photo[y0 : y0 + side, x0 : x0 + side])
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


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
    (drawn first); ``fill`` (F,) marks the mouth gap (painted :data:`MOUTH_COLOUR`); ``depth_bias`` (F,)
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
    oval = neutral[list(FACE_OVAL), :2]
    centre = oval.mean(0)
    margin = 0.04 * size
    ring = np.clip(centre + ring_scale * (oval - centre), margin, size - 1 - margin)
    ring_ids = mesh.add_vertices(np.column_stack([ring, np.full(len(ring), depth)]))
    edge = np.linspace(-1.0, size, 9)
    lo, hi = np.full(9, -1.0), np.full(9, float(size))
    sides = ((edge, lo), (edge, hi), (lo, edge), (hi, edge))
    border = np.unique(np.concatenate([np.column_stack(side) for side in sides]), axis=0)
    border_ids = mesh.add_vertices(np.column_stack([border, np.full(len(border), depth)]))
    ids = np.array(list(FACE_OVAL) + ring_ids + border_ids)
    outer = _outer_triangles(mesh.all_vertices()[ids, :2], len(FACE_OVAL))
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
    centre = neutral[list(FACE_OVAL), :2].mean(0)
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


# ---------------------------------------------------------------------------------------------- posing


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees (see :data:`ROTATION_CONVENTION`)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def yaw_pitch_roll(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix` (degrees), for |yaw| < 90."""
    r = np.asarray(rotation)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1, 1))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def pose_vertices(rig: Rig, expression, rotation: np.ndarray, scale: float, translation) -> np.ndarray:
    """Posed 3D vertices (V, 3): neutral + expression blendshapes, then the head's similarity transform
    about ``rig.pivot``; border anchors stay where they are."""
    pts = rig.vertices + np.tensordot(np.asarray(expression, dtype=np.float64), rig.basis, axes=1)
    moved = scale * (pts - rig.pivot) @ np.asarray(rotation).T + rig.pivot
    moved[:, :2] += np.asarray(translation, dtype=np.float64)
    return np.where(rig.fixed[:, None], rig.vertices, moved)


def landmarks_2d(rig: Rig, posed: np.ndarray) -> np.ndarray:
    """(478, 2) image positions of the landmarks in a frame posed as ``posed``: vertices project
    orthographically; iris points follow the triangle that carries their pixels."""
    out = posed[:N_LANDMARKS, :2].copy()
    corners = posed[rig.triangles[rig.iris_triangle], :2]  # (10, 3, 2)
    out[list(IRIS)] = np.einsum("ki,kij->kj", rig.iris_bary, corners)
    return out


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas (F,) of triangles over 2D points (positive = counter-clockwise in x-right, y-up)."""
    a, b, c = (points[triangles[:, k], :2] for k in range(3))
    return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


def draw_order(rig: Rig, posed: np.ndarray) -> np.ndarray:
    """Triangle indices in painting order: background first (folded-over ones before the others, so a fold
    shows its outer sheets), then face triangles far to near."""
    depth = posed[rig.triangles, 2].mean(1) + rig.depth_bias
    folded = np.sign(signed_areas(posed, rig.triangles)) != np.sign(signed_areas(rig.vertices, rig.triangles))
    bg = np.flatnonzero(rig.background)
    fg = np.flatnonzero(~rig.background)
    return np.concatenate([bg[np.argsort(~folded[bg], kind="stable")], fg[np.argsort(-depth[fg], kind="stable")]])


# ----------------------------------------------------------------------------------------------- warp


def triangle_affines(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle, the 2x3 affine map taking destination pixels to source pixels, and whether the
    destination triangle is non-degenerate (a degenerate one covers no pixel and has no map)."""
    d = np.concatenate([dst[triangles].transpose(0, 2, 1), np.ones((len(triangles), 1, 3))], axis=1)  # (F,3,3)
    s = src[triangles].transpose(0, 2, 1)  # (F, 2, 3)
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-9
    d_inv = np.linalg.inv(np.where(ok[:, None, None], d, np.eye(3)))
    return s @ d_inv, ok


def inverse_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, shape: tuple[int, int],
                 order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense inverse maps of the piecewise-affine warp taking ``src`` points to ``dst`` points.

    Triangles are rasterised into an index image in ``order`` (later ones cover earlier ones) with 1/16
    pixel precision; every pixel then maps through its triangle's affine map. Returns ``map_x``, ``map_y``
    (float32, for ``cv2.remap``) and the triangle index per pixel (-1 where none: identity map).
    """
    import cv2

    h, w = shape
    src = np.asarray(src, dtype=np.float64)[:, :2]
    dst = np.asarray(dst, dtype=np.float64)[:, :2]
    affines, ok = triangle_affines(src, dst, triangles)
    ids = np.full((h, w), -1, np.int32)
    fixed_pts = np.round(dst[triangles] * 16).astype(np.int32)  # (F, 3, 2), 4 fractional bits
    for k in range(len(triangles)) if order is None else order:
        if ok[k]:
            cv2.fillConvexPoly(ids, fixed_pts[k], int(k), lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a = affines[np.maximum(ids, 0)]  # (h, w, 2, 3)
    map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    none = ids < 0
    map_x[none], map_y[none] = xs[none], ys[none]
    return map_x.astype(np.float32), map_y.astype(np.float32), ids


def warp_image(image: np.ndarray, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
               order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp of ``image`` moving points ``src`` to ``dst`` (bilinear sampling, edge pixels
    reflected). Returns the warped image and the per-pixel triangle index (see :func:`inverse_maps`)."""
    import cv2

    map_x, map_y, ids = inverse_maps(src, dst, triangles, image.shape[:2], order)
    out = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out, ids


def paint_mouth(image: np.ndarray, ids: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Paint the pixels of the ``fill`` triangles (the open mouth) :data:`MOUTH_COLOUR`, softly edged."""
    import cv2

    fill_ids = np.flatnonzero(fill)
    mask = np.isin(ids, fill_ids).astype(np.float32)
    if not mask.any():
        return image
    alpha = cv2.GaussianBlur(mask, (3, 3), 0.6)[..., None]
    out = image.astype(np.float32) * (1 - alpha) + np.float32(MOUTH_COLOUR) * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_frame(rig: Rig, photo: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """The photo warped to the posed rig, the open mouth painted."""
    out, ids = warp_image(photo, rig.vertices, posed, rig.triangles, draw_order(rig, posed))
    return paint_mouth(out, ids, rig.fill)


# -------------------------------------------------------------------------------------------- motion


def smooth_curve(rng: np.random.Generator, t: np.ndarray, amplitude: float, freqs=(0.15, 0.6),
                 n_waves: int = 3) -> np.ndarray:
    """A sum of ``n_waves`` sinusoids (random frequencies in ``freqs`` Hz, phases, weights) scaled so its
    largest absolute value is ``amplitude``."""
    f = rng.uniform(*freqs, n_waves)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    weight = rng.uniform(0.5, 1.0, n_waves)
    c = (weight[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + phase[:, None])).sum(0)
    peak = np.abs(c).max()
    return amplitude * c / peak if peak > 0 else c


def blink_curve(rng: np.random.Generator, t: np.ndarray, interval=(1.3, 2.8), close_s: float = 0.05) -> np.ndarray:
    """Blinks in [0, 1]: quick closures (Gaussian, ``close_s`` closing, 1.6x slower opening) at random
    intervals; the first comes 0.3-1.0 s in."""
    b = np.zeros_like(t)
    t0 = rng.uniform(0.3, 1.0)
    while t0 < t[-1] + 0.5:
        width = np.where(t < t0, close_s, 1.6 * close_s)
        b = np.maximum(b, np.exp(-0.5 * ((t - t0) / width) ** 2))
        t0 += rng.uniform(*interval)
    return b


def talk_curve(rng: np.random.Generator, t: np.ndarray, amplitude: float, rate: float = 3.5) -> np.ndarray:
    """Talking-like mouth opening in [0, amplitude]: syllables at about ``rate`` Hz under a phrase envelope."""
    dt = np.diff(t, prepend=t[0])
    freq = rate * (1 + smooth_curve(rng, t, 0.25))
    phase = np.cumsum(2 * np.pi * freq * dt) + rng.uniform(0, 2 * np.pi)
    syllables = 0.5 - 0.5 * np.cos(phase)
    envelope = np.clip(0.65 + 0.45 * smooth_curve(rng, t, 1.0, freqs=(0.2, 0.5)), 0, 1)
    return amplitude * syllables * envelope


@dataclass(frozen=True)
class MotionStyle:
    """Amplitudes of one clip's motion: head angles (degrees), translation (fraction of the frame size),
    scale change (fraction), talking mouth, wide mouth opening, brow raise (expression units)."""

    yaw: float
    pitch: float
    roll: float
    shift: float
    zoom: float
    talk: float
    wide_mouth: float
    brow: float


STYLES = {
    "target": MotionStyle(yaw=7, pitch=4, roll=5, shift=0.012, zoom=0.025, talk=0.5, wide_mouth=0.0, brow=0.25),
    "source": MotionStyle(yaw=14, pitch=8, roll=9, shift=0.025, zoom=0.05, talk=0.25, wide_mouth=0.75, brow=1.0),
}


def motion_script(kind: str, n_frames: int, fps: float, size: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded smooth motion of clip ``kind``: ``yaw_pitch_roll_deg`` (T, 3), ``translation`` (T, 2) pixels,
    ``scale`` (T,), ``expression`` (T, 3) in [0, 1] (order :data:`EXPRESSIONS`)."""
    st = STYLES[kind]
    rng = np.random.default_rng([int(seed), KINDS.index(kind)])
    t = np.arange(n_frames) / float(fps)
    ypr = np.stack([smooth_curve(rng, t, a) for a in (st.yaw, st.pitch, st.roll)], axis=1)
    translation = np.stack([smooth_curve(rng, t, st.shift * size) for _ in range(2)], axis=1)
    scale = 1 + smooth_curve(rng, t, st.zoom)
    mouth = talk_curve(rng, t, st.talk)
    if st.wide_mouth:
        mouth = mouth + st.wide_mouth * (0.5 + 0.5 * smooth_curve(rng, t, 1.0, freqs=(0.3, 0.8), n_waves=2))
    blink = blink_curve(rng, t)
    brow = st.brow * (0.5 + 0.5 * smooth_curve(rng, t, 1.0, freqs=(0.2, 0.6), n_waves=2))
    expression = np.clip(np.stack([mouth, blink, brow], axis=1), 0, 1)
    return {"yaw_pitch_roll_deg": ypr, "translation": translation, "scale": scale, "expression": expression}


# ---------------------------------------------------------------------------------------------- clips


DEMO_TRUTH = h5io.register(
    Layout(
        name="demo_truth",
        version=1,
        doc=(
            "Ground truth of a demo clip: the astronaut photo (skimage.data.astronaut) warped with known head "
            "motion and expressions (deep_puppets/demo.py). Landmark rows follow MediaPipe FaceMesh (478 "
            "points); `landmarks2d` is what a perfect detector returns. " + ROTATION_CONVENTION
        ),
        datasets={
            "landmarks2d": Dataset("float32", ("T", 478, 2), "x, y in pixels of the output frame"),
            "landmarks3d": Dataset("float32", ("T", 478, 3), "posed 3D landmarks (pixels; z away from the camera)"),
            "rotation": Dataset("float64", ("T", 3, 3), "head rotation relative to the photo's pose"),
            "yaw_pitch_roll_deg": Dataset("float64", ("T", 3), "the same rotation as yaw, pitch, roll in degrees"),
            "translation": Dataset("float64", ("T", 2), "head translation in pixels (x, y)"),
            "scale": Dataset("float64", ("T",), "head scale (1 = the photo's)"),
            "expression": Dataset("float64", ("T", "E"), "expression scalars in [0, 1], names in attr `expressions`"),
            "neutral_landmarks3d": Dataset("float64", (478, 3), "MediaPipe landmarks of the neutral (unwarped) frame"),
            "expression_basis": Dataset(
                "float64", ("E", 478, 3), "landmark displacement per unit expression (pixels, neutral pose)"
            ),
            "pivot": Dataset("float64", (3,), "centre of the head rotation and scale (pixels)"),
        },
        attrs={
            "kind": "source or target",
            "fps": "frames per second",
            "width": "frame width in pixels",
            "height": "frame height in pixels",
            "n_frames": "frames in the clip",
            "seed": "seed of the motion curves",
            "expressions": "JSON list of the expression names (columns of `expression`)",
            "photo": "where the face comes from",
        },
    )
)


def render_clip(kind: str, n_frames: int = DEFAULTS["n_frames"], size: int = DEFAULTS["size"],
                fps: float = DEFAULTS["fps"], seed: int = DEFAULTS["seed"]) -> tuple[np.ndarray, dict, dict]:
    """Frames (T, size, size, 3) uint8, truth arrays and attrs of demo clip ``kind`` (no files written)."""
    if kind not in KINDS:
        raise ValueError(f"demo clip kind must be one of {KINDS}, not {kind!r}")
    photo = prepare_photo(kind, size)
    neutral = detect_face_mesh(photo)
    rig = build_rig(neutral, size)
    motion = motion_script(kind, n_frames, fps, size, seed)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    rotations = np.empty((n_frames, 3, 3))
    lm2d = np.empty((n_frames, N_LANDMARKS, 2))
    lm3d = np.empty((n_frames, N_LANDMARKS, 3))
    for i in range(n_frames):
        rotations[i] = rotation_matrix(*motion["yaw_pitch_roll_deg"][i])
        posed = pose_vertices(rig, motion["expression"][i], rotations[i], motion["scale"][i], motion["translation"][i])
        frames[i] = render_frame(rig, photo, posed)
        lm2d[i] = landmarks_2d(rig, posed)
        lm3d[i] = posed[:N_LANDMARKS]
    truth = {
        "landmarks2d": lm2d,
        "landmarks3d": lm3d,
        "rotation": rotations,
        **motion,
        "neutral_landmarks3d": neutral,
        "expression_basis": rig.basis[:, :N_LANDMARKS],
        "pivot": rig.pivot,
    }
    attrs = {
        "kind": kind, "fps": float(fps), "width": size, "height": size, "n_frames": n_frames, "seed": int(seed),
        "expressions": json.dumps(list(EXPRESSIONS)),
        "photo": "skimage.data.astronaut()" + (" mirrored and tinted" if LOOKS[kind].mirror else ""),
    }
    return frames, truth, attrs


def make_demo_clip(kind: str, out_video, out_truth, n_frames: int = DEFAULTS["n_frames"], size: int = DEFAULTS["size"],
                   fps: float = DEFAULTS["fps"], seed: int = DEFAULTS["seed"]) -> dict:
    """Write demo clip ``kind`` ('source' or 'target') as an H.264 mp4 and its ground truth (layout
    ``demo_truth``); returns a summary."""
    started = time.perf_counter()
    frames, truth, attrs = render_clip(kind, n_frames=n_frames, size=size, fps=fps, seed=seed)
    video.write_mp4(out_video, frames, fps)
    h5io.write(out_truth, DEMO_TRUTH, truth, attrs)
    ypr = truth["yaw_pitch_roll_deg"]
    summary = {
        "kind": kind, "video": str(out_video), "truth": str(out_truth), "n_frames": n_frames, "size": size,
        "fps": float(fps), "seed": int(seed), "seconds": round(time.perf_counter() - started, 2),
        "max_abs_yaw_pitch_roll_deg": np.abs(ypr).max(0).round(2).tolist(),
        "max_expression": dict(zip(EXPRESSIONS, truth["expression"].max(0).round(3).tolist())),
    }
    log.info("demo clip %s: %s", kind, summary)
    return summary


def read_truth(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a demo truth file (arrays, attrs)."""
    return h5io.read(path, DEMO_TRUTH)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write one demo clip and its ground truth.")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("video")
    ap.add_argument("truth")
    for key, value in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    a = ap.parse_args()
    print(json.dumps(make_demo_clip(a.kind, a.video, a.truth, a.n_frames, a.size, a.fps, a.seed), indent=1))
