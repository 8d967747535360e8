"""Posing the demo rig and warping the photo to it: one frame of a demo clip.

:func:`pose_vertices` applies the blendshapes, then a rotation about a pivot behind the face, scale, translation
and an orthographic projection; :func:`render_frame` warps the photo from the neutral mesh to the posed one
(:func:`warp_image`: a piecewise-affine warp through dense inverse maps and ``cv2.remap``; triangles are drawn
far to near, so a turned nose hides the cheek behind it) and paints the open mouth.
"""

from __future__ import annotations

import numpy as np

from .demo_rig import Rig
from .models.base import N_LANDMARKS
from .models.facemesh import IRIS

MOUTH_COLOUR = (52, 22, 24)  # RGB of the inside of an open mouth


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
