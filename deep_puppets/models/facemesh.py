"""The MediaPipe FaceMesh topology and the correspondence of its 478 landmarks to other face meshes.

Landmarks: 0..467 are the mesh vertices, 468..477 the iris points of ``refine_landmarks=True``:
468 = centre of the subject's RIGHT iris (image left for a non-mirrored frontal face), 469..472 its contour,
473 = centre of the subject's LEFT iris, 474..477 its contour. Contour order (checked on a real image): image
right (+x), top, image left, bottom. "Left"/"right" are the subject's, as in MediaPipe's own names.

Triangles: ``FACEMESH_TESSELATION`` is a frozenset of edges, but the source file lists them as consecutive
triples (a, b), (b, c), (c, a), one triangle each; reading the list in source order gives the 852 triangles
(a 3-clique search over the edge set finds 2 false extra ones). The source is read from the installed
mediapipe package's file (the equivalent of ``inspect.getsource``) without importing mediapipe (1.5 s).

Winding convention (all meshes of this package): counter-clockwise as seen from the viewer for a face looking
at the camera. In a model frame with y up and z toward the viewer this is a normal ``(v1-v0) × (v2-v0)`` with
positive z (OpenGL's default front face); in image pixel coordinates (x right, y down) it is a NEGATIVE
``(x1-x0)(y2-y0) - (x2-x0)(y1-y0)``.

The canonical face (:func:`canonical_face`) and the 68-point iBUG ↔ MediaPipe table
(:data:`IBUG68_TO_MEDIAPIPE`) let :func:`embed_landmarks` place the 478 detector landmarks on any face mesh
that carries the 68 iBUG landmark vertices (ICT, a BFM with a 68-point file).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ._canonical_face import canonical_vertices
from .geometry import apply_similarity, closest_points_on_mesh, similarity_transform

N_MESH_VERTICES = 468
N_TRIANGLES = 852
RIGHT_IRIS = (468, 469, 470, 471, 472)  # subject's right: centre, then image-right, top, image-left, bottom
LEFT_IRIS = (473, 474, 475, 476, 477)
IRIS = RIGHT_IRIS + LEFT_IRIS
IRIS_CENTERS = (468, 473)
IRIS_RADIUS_CM = 0.585  # mean human iris radius (diameter ≈ 11.7 mm)

# Index of the MediaPipe landmark corresponding to each of the 68 iBUG / Multi-PIE points (0-based iBUG
# order). Interior points (17..67) were checked against ICT's 68 landmark vertices after a similarity fit of
# the canonical face (nearest canonical vertex, left/right symmetric). The jaw line (0..16) is a silhouette
# in images and differs between annotations: approximate, not used as an embedding anchor.
IBUG68_TO_MEDIAPIPE = np.array(
    [127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356]  # jaw 0..16
    + [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]  # brows 17..26 (subject's right first)
    + [168, 197, 195, 4, 98, 97, 2, 326, 327]  # nose bridge 27..30 (30 = tip), nostrils 31..35
    + [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380]  # eyes 36..47
    + [61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91]  # outer lips 48..59
    + [78, 81, 13, 311, 308, 402, 14, 178]  # inner lips 60..67
)
IBUG_INTERIOR = np.arange(17, 68)


# --------------------------------------------------------------------------------------------- topology
def _connections_source() -> tuple[str, str]:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mediapipe is not installed; it provides the FaceMesh topology")
    path = Path(spec.submodule_search_locations[0]) / "python" / "solutions" / "face_mesh_connections.py"
    return path.read_text(), str(path)


@lru_cache(maxsize=1)
def _connection_lists() -> dict[str, list[tuple[int, int]]]:
    """Every ``NAME = frozenset([...])`` of face_mesh_connections, as edge lists in source order."""
    text, where = _connections_source()
    out = {}
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if getattr(call.func, "id", None) == "frozenset" and len(call.args) == 1 and isinstance(call.args[0], ast.List):
            out[node.targets[0].id] = [tuple(e) for e in ast.literal_eval(call.args[0])]
    if "FACEMESH_TESSELATION" not in out:
        raise RuntimeError(f"{where}: FACEMESH_TESSELATION not found")
    return out


def _triangles_from_edge_triples(edges: list[tuple[int, int]]) -> np.ndarray:
    if len(edges) % 3:
        raise RuntimeError(f"tessellation has {len(edges)} edges, not a multiple of 3")
    tri = np.array(edges, dtype=np.int64).reshape(-1, 3, 2)
    closed = (tri[:, 0, 1] == tri[:, 1, 0]) & (tri[:, 1, 1] == tri[:, 2, 0]) & (tri[:, 2, 1] == tri[:, 0, 0])
    if not closed.all():
        raise RuntimeError(f"{(~closed).sum()} edge triples of the tessellation are not closed triangles")
    return tri[:, :, 0]


@lru_cache(maxsize=1)
def _triangles() -> np.ndarray:
    tri = _triangles_from_edge_triples(_connection_lists()["FACEMESH_TESSELATION"])
    # Make the winding consistent, then face the viewer (+z) on the canonical face (y up, z to the viewer).
    tri = _consistent_winding(tri)
    normals_z = _normals_z(canonical_vertices(), tri)
    if normals_z.sum() < 0:
        tri = tri[:, ::-1]
    tri = np.ascontiguousarray(tri, dtype=np.int32)
    tri.setflags(write=False)
    return tri


def _normals_z(v, tri):
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    return np.cross(b - a, c - a)[:, 2]


def _consistent_winding(tri: np.ndarray) -> np.ndarray:
    """Flip triangles so that every shared edge is used in opposite directions (breadth-first over faces)."""
    tri = tri.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for f, t in enumerate(tri):
        for i in range(3):
            edge_faces.setdefault(tuple(sorted((t[i], t[(i + 1) % 3]))), []).append(f)
    done = np.zeros(len(tri), bool)
    for seed in range(len(tri)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            f = stack.pop()
            t = tri[f]
            for i in range(3):
                a, b = t[i], t[(i + 1) % 3]
                for g in edge_faces[tuple(sorted((a, b)))]:
                    if done[g]:
                        continue
                    u = tri[g]
                    same = any(u[j] == a and u[(j + 1) % 3] == b for j in range(3))
                    if same:
                        tri[g] = u[::-1]
                    done[g] = True
                    stack.append(g)
    return tri


def triangles() -> np.ndarray:
    """The 852 FaceMesh triangles (852, 3) int32 over vertices 0..467, read-only, wound as documented above."""
    return _triangles()


def _group(name: str) -> np.ndarray:
    idx = np.unique(np.array(_connection_lists()[name]).ravel())
    idx.setflags(write=False)
    return idx


def landmark_group(name: str) -> np.ndarray:
    """Sorted landmark indices of a face_mesh_connections group: 'lips', 'left_eye', 'right_eye',
    'left_eyebrow', 'right_eyebrow', 'face_oval', 'nose', 'left_iris', 'right_iris' (subject's left/right)."""
    return _group("FACEMESH_" + name.upper())


def connection_edges(name: str) -> np.ndarray:
    """Edges (E, 2) of a face_mesh_connections group (names as in :func:`landmark_group`)."""
    return np.array(_connection_lists()["FACEMESH_" + name.upper()], dtype=np.int64).reshape(-1, 2)


LIPS = landmark_group("lips")
LEFT_EYE = landmark_group("left_eye")
RIGHT_EYE = landmark_group("right_eye")
LEFT_EYEBROW = landmark_group("left_eyebrow")
RIGHT_EYEBROW = landmark_group("right_eyebrow")
FACE_OVAL = landmark_group("face_oval")
# Landmark weight of the face-oval points in a model file's fit (ICT, BFM): the detector's jaw and cheek contour
# slides along the silhouette, which no fixed mesh vertex follows.
OVAL_WEIGHT = 0.3
NOSE = landmark_group("nose")
# The detector's first ring above each upper lid margin (MediaPipe's rightEyeUpper1 / leftEyeUpper1: lid skin
# below the crease). When a blink closes the eye it moves by 0-40 % of the margin's travel (per eye, on the clips
# measured: d3 32-34 %, d6 27-39 %, d9 7-14 %, d0 6-16 %, d13 0-8 %), while a mesh point embedded there on a model's lid
# skin (ICT's eyeBlink: 71 %) goes most of the way down with the margin; fitted with full weight it holds the
# lid half open.
RIGHT_EYE_UPPER1 = np.array([247, 30, 29, 27, 28, 56, 190])
LEFT_EYE_UPPER1 = np.array([467, 260, 259, 257, 258, 286, 414])
EYELID_SKIN = np.concatenate([RIGHT_EYE_UPPER1, LEFT_EYE_UPPER1])

# Points that move little with expression, for rigid alignment: forehead, nose bridge and tip, eye corners.
STABLE_POINTS = np.array(
    [10, 151, 9, 109, 338, 67, 297, 108, 337]  # forehead
    + [168, 6, 197, 195, 5, 4, 1]  # nose bridge and tip
    + [33, 133, 362, 263]  # eye corners
    + [127, 356, 234, 454]  # sides of the head at eye level (ear roots)
)


# ---------------------------------------------------------------------------------------- canonical face
def iris_points(eye_ring: np.ndarray, radius: float, right_axis=(1.0, 0.0, 0.0), up_axis=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Five iris points (centre, +x, +y, -x, -y) for an eye whose contour points are ``eye_ring`` (P, 3).

    The centre is the mean of the contour; the four contour points lie ``radius`` away along the frame's
    x (image right) and y (up) axes: MediaPipe's order.
    """
    c = eye_ring.mean(axis=0)
    ex, ey = np.asarray(right_axis, float) * radius, np.asarray(up_axis, float) * radius
    return np.stack([c, c + ex, c + ey, c - ex, c - ey])


@lru_cache(maxsize=1)
def _canonical_face() -> np.ndarray:
    v = canonical_vertices()
    right = iris_points(v[RIGHT_EYE], IRIS_RADIUS_CM)
    left = iris_points(v[LEFT_EYE], IRIS_RADIUS_CM)
    out = np.concatenate([v, right, left])
    out.setflags(write=False)
    return out


def canonical_face() -> np.ndarray:
    """MediaPipe's canonical face (478, 3) in cm (x image right, y up, z toward the viewer).

    The irises (468..477), absent from the canonical model, are placed at the centre of each eye's contour
    with a 0.585 cm radius (looking straight ahead).
    """
    return _canonical_face()


# -------------------------------------------------------------------------------------------- embedding
@dataclass(frozen=True)
class Embedding:
    """The 478 detector landmarks placed on a mesh."""

    tri: np.ndarray  # (478,) triangle index into the mesh's triangles
    bary: np.ndarray  # (478, 3) barycentric weights
    points: np.ndarray  # (478, 3) the surface points
    distance: np.ndarray  # (478,) how far the warped canonical point was from the surface (mesh units)
    anchor_rms: float  # RMS residual of the similarity fit on the anchors (mesh units), before the warp
    scale: float  # canonical cm → mesh units (similarity scale)


def embed_landmarks(
    vertices: np.ndarray,
    triangles: np.ndarray,
    ibug68_vertices,
    candidates=None,
    anchors=IBUG_INTERIOR,
    smoothing: float = 0.1,
) -> Embedding:
    """Place the 478 MediaPipe landmarks on a mesh that has the 68 iBUG landmark vertices.

    1. similarity fit of the canonical face onto the mesh with the anchor pairs (canonical point of
       :data:`IBUG68_TO_MEDIAPIPE` ↔ mesh vertex ``ibug68_vertices``; by default the 51 interior points,
       the jaw line being silhouette-dependent);
    2. non-rigid refinement: the anchor residuals are spread over all points with a thin-plate spline
       (``smoothing`` > 0 tolerates annotation noise);
    3. each warped point is projected to the closest surface point among ``candidates`` (triangle indices,
       default all; restrict to the skin so that points do not land on eyeballs or teeth).

    Iris points 468..477 go through the same steps (the canonical irises look straight ahead); providers
    with eyeball meshes replace them (see :mod:`.ict`). Takes ~0.03 s on ICT (26.7k vertices).
    """
    from scipy.interpolate import RBFInterpolator

    vertices = np.asarray(vertices, float)
    ibug = np.asarray(ibug68_vertices, dtype=np.int64)
    if ibug.shape != (68,):
        raise ValueError(f"need 68 iBUG landmark vertices, got shape {ibug.shape}")
    anchors = np.asarray(anchors)
    src = canonical_face()
    src_anchor = src[IBUG68_TO_MEDIAPIPE[anchors]]
    dst_anchor = vertices[ibug[anchors]]
    s, rot, t = similarity_transform(src_anchor, dst_anchor)
    warped = apply_similarity(src, s, rot, t)
    moved = apply_similarity(src_anchor, s, rot, t)
    anchor_rms = float(np.sqrt(((moved - dst_anchor) ** 2).sum(axis=1).mean()))
    if smoothing is not None:
        tps = RBFInterpolator(moved, dst_anchor - moved, kernel="thin_plate_spline", smoothing=smoothing * s**2)
        warped = warped + tps(warped)
    tri, bary, dist = closest_points_on_mesh(warped, vertices, triangles, candidates=candidates)
    points = np.einsum("lkd,lk->ld", vertices[np.asarray(triangles)[tri]], bary)
    return Embedding(tri=tri.astype(np.int64), bary=bary, points=points, distance=dist, anchor_rms=anchor_rms, scale=s)


def vertex_correspondence(triangles: np.ndarray, landmark_vertices: np.ndarray):
    """``(lm_tri, lm_bary)`` for landmarks that sit exactly on mesh vertices (weight 1 on that corner).

    ``landmark_vertices`` (478,) vertex index per landmark; each must belong to some triangle.
    """
    triangles = np.asarray(triangles)
    lv = np.asarray(landmark_vertices, dtype=np.int64)
    flat = triangles.ravel()
    first = np.full(max(int(flat.max()), int(lv.max())) + 1, -1, dtype=np.int64)
    first[flat[::-1]] = np.arange(len(flat))[::-1]  # first (triangle, corner) slot holding each vertex
    slot = first[lv]
    if (slot < 0).any():
        bad = lv[slot < 0][:5].tolist()
        raise ValueError(f"landmark vertices {bad} belong to no triangle")
    bary = np.zeros((len(lv), 3))
    bary[np.arange(len(lv)), slot % 3] = 1.0
    return slot // 3, bary
