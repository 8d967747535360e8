"""Where the face mesh runs (pure geometry, no MediaPipe): square regions of interest (ROIs) from a box or from
the previous frame's landmarks, face detections with their duplicate suppression and their ranking under the
single-person assumption, and the face detector's pyramid of tiles. :mod:`deep_puppets.landmarks` runs the
models on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RIGHT_EYE_OUTER = 33  # landmark indices MediaPipe uses to level the ROI (subject's right, image left)
LEFT_EYE_OUTER = 263
NMS_IOU = 0.3  # detections from overlapping tiles with a larger IoU are the same face


@dataclass(frozen=True)
class Roi:
    """A square region of interest in pixels: centre, side, and rotation (radians, MediaPipe's sign)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    @property
    def box(self) -> np.ndarray:
        h = self.side / 2
        return np.array([self.cx - h, self.cy - h, self.cx + h, self.cy + h], np.float32)


def roll_angle(start: np.ndarray, end: np.ndarray) -> float:
    """Rotation (radians) that makes the vector start->end (pixels, y down) horizontal, as MediaPipe does."""
    angle = -math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0]))
    return (angle + math.pi) % (2 * math.pi) - math.pi


def roi_from_box(box, scale: float, angle: float = 0.0) -> Roi:
    """Square ROI around an ``x0, y0, x1, y1`` box: centred, side = scale * longer side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, scale * max(x1 - x0, y1 - y0), angle)


def roi_from_landmarks(landmarks: np.ndarray, scale: float, rotate: bool) -> Roi:
    """The ROI for the next frame from this frame's (478, 3) pixel landmarks (MediaPipe's tracking ROI)."""
    xy = landmarks[:, :2]
    box = np.concatenate([xy.min(0), xy.max(0)])
    angle = roll_angle(xy[RIGHT_EYE_OUTER], xy[LEFT_EYE_OUTER]) if rotate else 0.0
    return roi_from_box(box, scale, angle)


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in pixels of the full frame."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    right_eye: tuple[float, float]  # subject's right eye (image left)
    left_eye: tuple[float, float]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def roi(self, scale: float, rotate: bool) -> Roi:
        angle = roll_angle(np.array(self.right_eye), np.array(self.left_eye)) if rotate else 0.0
        return roi_from_box(self.box, scale, angle)


def iou(a, b) -> float:
    """Intersection over union of two ``x0, y0, x1, y1`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def suppress_duplicates(dets: list[Detection], max_iou: float = NMS_IOU) -> list[Detection]:
    """Non-maximum suppression: keep the most confident of detections overlapping more than ``max_iou``."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(iou(d.box, k.box) <= max_iou for k in kept):
            kept.append(d)
    return kept


def rank_detections(dets: list[Detection], reference_box=None) -> list[Detection]:
    """Detections in order of preference under the single-person assumption.

    With a ``reference_box`` (the last box where the followed face was), the one overlapping it most,
    then the nearest; without one, the largest, then the most confident.
    """
    if reference_box is None:
        return sorted(dets, key=lambda d: (-d.area, -d.score))
    rx, ry = (reference_box[0] + reference_box[2]) / 2, (reference_box[1] + reference_box[3]) / 2

    def key(d: Detection):
        cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
        return (-iou(d.box, reference_box), math.hypot(cx - rx, cy - ry), -d.score)

    return sorted(dets, key=key)


def _spread(length: int, tile: int) -> list[int]:
    """Tile origins covering ``[0, length)`` with tiles of ``tile`` overlapping by at least half."""
    if tile >= length:
        return [0]
    n = math.ceil((length - tile) / (tile / 2)) + 1
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]


def detector_tiles(width: int, height: int, levels: int) -> list[list[tuple[int, int, int, int]]]:
    """The detector's search pyramid: per level, the ``x0, y0, x1, y1`` windows it runs on.

    Level 0 is the whole frame; level k >= 1 covers the frame with square tiles of side
    ``short_side / 2**(k-1)`` overlapping by half (so every face up to half a tile lies wholly inside one).
    A level whose windows equal the previous level's is skipped (square frames).
    """
    pyramid = [[(0, 0, width, height)]]
    for k in range(1, levels):
        side = max(16, round(min(width, height) / 2 ** (k - 1)))
        tiles = [
            (x, y, min(x + side, width), min(y + side, height))
            for y in _spread(height, side)
            for x in _spread(width, side)
        ]
        if tiles != pyramid[-1]:
            pyramid.append(tiles)
    return pyramid
