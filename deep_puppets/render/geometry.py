"""Screen-space geometry of the conditioning renderer (pure functions): screen space to the camera frame, the
depth range, frame pixels to crop-box image pixels and the correspondence colours (conventions:
:mod:`deep_puppets.render`)."""

from __future__ import annotations

import numpy as np

NEARER_Z = ("smaller", "larger")


def camera_positions(vertices: np.ndarray, nearer_z: str) -> np.ndarray:
    """Screen-space vertices (…, 3) → camera frame (OpenCV: x right, y down, z away from the camera)."""
    if nearer_z not in NEARER_Z:
        raise ValueError(f"nearer_z must be one of {NEARER_Z}, got {nearer_z!r}")
    vertices = np.asarray(vertices)
    return vertices if nearer_z == "smaller" else vertices * np.array([1.0, 1.0, -1.0], dtype=vertices.dtype)


def depth_map(z: np.ndarray, nearer_z: str, margin: float = 0.98) -> tuple[float, float]:
    """``(a, b)`` mapping depth ``z`` to NDC ``a z + b`` in ``[-margin, margin]``, nearer → smaller."""
    lo, hi = float(np.min(z)), float(np.max(z))
    half = max((hi - lo) / 2.0, 1e-6 * max(1.0, abs(hi)))
    s = 1.0 if nearer_z == "larger" else -1.0
    a = -s * margin / half
    return a, -a * (lo + hi) / 2.0


def to_crop_pixels(points: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """Frame pixel coordinates (…, ≥2) → continuous output-image coordinates (…, 2) (pixel u spans [u, u+1))."""
    x0, y0, x1, y1 = (float(b) for b in box)
    w, h = size
    p = np.asarray(points, dtype=np.float64)[..., :2]
    return (p - [x0, y0]) * [w / (x1 - x0), h / (y1 - y0)]


def correspondence_colours(mean: np.ndarray) -> np.ndarray:
    """Per-vertex correspondence colours (N, 3) in [0, 1]: the mean shape normalised per axis."""
    mean = np.asarray(mean, dtype=np.float64)
    lo, hi = mean.min(axis=0), mean.max(axis=0)
    return (mean - lo) / np.where(hi > lo, hi - lo, 1.0)
