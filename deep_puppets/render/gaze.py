"""The gaze conditioning image: eye openings and irises drawn in 2D on the CPU (OpenCV) from eye landmarks,
for a landmark layout described by an :class:`EyeLayout` (MediaPipe's 478 points by default)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import to_crop_pixels


@dataclass(frozen=True)
class EyeLayout:
    """Where the eyes are in a landmark array: per eye an iris centre, 4 iris rim points in cyclic order
    (opposite points are 2 apart) and a closed eyelid contour (ordered)."""

    name: str
    iris_centre: tuple[int, ...]
    iris_rim: tuple[tuple[int, int, int, int], ...]
    eyelids: tuple[tuple[int, ...], ...]


MEDIAPIPE_EYES = EyeLayout(
    name="mediapipe478",
    iris_centre=(468, 473),
    iris_rim=((469, 470, 471, 472), (474, 475, 476, 477)),
    eyelids=(
        (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
        (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    ),
)

_SHIFT = 4  # sub-pixel bits of cv2.fillPoly


_CIRCLE = np.stack(
    [np.cos(np.linspace(0, 2 * np.pi, 48, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 48, endpoint=False))], 1
)


def iris_ellipse(centre: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """Polygon (48, 2) of the ellipse ``centre + A (cos t, sin t)`` through 4 rim points in cyclic order
    (``A``'s columns are the half-differences of opposite rim points)."""
    a = np.stack([rim[0] - rim[2], rim[1] - rim[3]], axis=1) * 0.5  # (2, 2), columns
    return centre + _CIRCLE @ a.T


def _fill(mask: np.ndarray, polygon: np.ndarray, origin=(0, 0)) -> None:
    """Fill ``polygon`` (continuous image coordinates, pixel centres at +0.5) into a uint8 ``mask`` whose
    pixel (0, 0) is image pixel ``origin``; cv2 samples pixel centres (no anti-aliasing)."""
    import cv2  # (inside: keeps OpenCV out of the import of the render package's light modules)

    if not np.isfinite(polygon).all():
        return
    pts = np.round((polygon - np.add(origin, 0.5)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=_SHIFT)


def _roi(points: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Pixel bounds (x0, y0, x1, y1) of finite ``points`` (P, 2) inside a ``size`` image, None if empty."""
    if not np.isfinite(points).all():
        return None
    (x0, y0), (x1, y1) = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0)) + 1
    x0, x1 = int(max(x0, 0)), int(min(x1, size[0]))
    y0, y1 = int(max(y0, 0)), int(min(y1, size[1]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def draw_gaze(
    points: np.ndarray | None,
    box,
    size: tuple[int, int],
    layout: EyeLayout = MEDIAPIPE_EYES,
    iris_colour=(255, 0, 0),
    eye_colour=(255, 255, 255),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gaze image (H, W, 3) uint8 from landmark ``points`` (P, ≥2) in frame pixels; ``None`` → black.

    Eye openings (eyelid polygons) in ``eye_colour``, irises on top in ``iris_colour``, clipped to the eye
    opening (the visible iris). ``eye_colour=None`` leaves the openings out and draws whole irises. Work is
    confined to each eye's bounding box. An eye with a non-finite point is left out.
    """
    w, h = size
    img = np.zeros((h, w, 3), np.uint8) if out is None else out
    img[...] = 0
    if points is None:
        return img
    for centre, rim, lids in zip(layout.iris_centre, layout.iris_rim, layout.eyelids):
        eye = to_crop_pixels(np.asarray(points)[[centre, *rim, *lids]], box, size)
        eyelid, iris = eye[5:], iris_ellipse(eye[0], eye[1:5])
        roi = _roi(np.concatenate([eyelid, iris]), (w, h))
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        eye_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        iris_mask = np.zeros_like(eye_mask)
        _fill(iris_mask, iris, (x0, y0))
        view = img[y0:y1, x0:x1]
        if eye_colour is not None:
            _fill(eye_mask, eyelid, (x0, y0))
            view[eye_mask > 0] = eye_colour
            iris_mask &= eye_mask
        view[iris_mask > 0] = iris_colour
    return img
