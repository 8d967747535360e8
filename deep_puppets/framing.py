"""What part of the video frame the conditioning images (and the generator's frames) show: the crop boxes.

Two modes (config section ``framing``, :class:`FramingSettings`):

* ``frame``: the whole frame, centred and padded to a square (:func:`frame_box`), the same box in every frame.
* ``head`` (default): a square box per frame around the head (:func:`head_boxes`), so that the face fills the
  generator's frames whatever the shot; side ``scale`` × the face size, centre ``offset_y`` face sizes below the
  head point, covering the hair, the ears, the neck and the top of the shoulders. A box may extend past the
  frame; the crops are black there (:func:`deep_puppets.gan.data.crop_resize`, the renderer).

The face size and the head point come from the fit, not from 2D extents of the landmarks, so that neither jumps
when the head turns, the eyes blink or the mouth opens:

* face size (pixels) = camera scale (pixels per model unit) × the face height of the *identity* shape (the
  vertical extent of its 478 landmark points in the model frame: forehead to chin, fixed for the whole video);
* head point = a fixed point of the identity shape: the middle of the landmarks' box in x and y, at the depth
  of their rearmost points (the face contour in front of the ears, near the middle of the head), projected by
  each frame's camera. A point on the face's surface would swing sideways when the head turns; this one turns
  with the head near its pivot.

Frames without a fit (``valid`` false or a non-finite camera) take the box interpolated between the nearest
fitted frames (held at the ends); the centre and side are then smoothed in time with a zero-phase Gaussian whose
standard deviation is ``smoothing`` seconds (× fps frames; at the ends of the video a Gaussian-weighted local
line, :func:`smooth`), so the result does not depend on the frame rate and lags nothing. Every box returned
is finite; a video without any fitted frame falls back on :func:`frame_box`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

FRAMING_MODES = ("head", "frame")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class FramingSettings:
    """Settings of the crop boxes (config section ``framing``); see the module docstring."""

    mode: str = "head"  # head | frame
    scale: float = 2.0  # box side in face sizes (forehead-to-chin heights of the identity shape)
    offset_y: float = 0.05  # box centre below the head point, in face sizes
    smoothing: float = 0.15  # standard deviation of the zero-phase Gaussian smoothing of centre and side, seconds

    def __post_init__(self):
        if self.mode not in FRAMING_MODES:
            raise ConfigError(f"'framing.mode': must be one of {list(FRAMING_MODES)}, got {self.mode!r}")
        if not (_number(self.scale) and 1.0 <= self.scale <= 20.0):
            raise ConfigError(f"'framing.scale': must be a number in [1, 20] (face sizes), got {self.scale!r}")
        if not (_number(self.offset_y) and -2.0 <= self.offset_y <= 2.0):
            raise ConfigError(f"'framing.offset_y': must be a number in [-2, 2] (face sizes), got {self.offset_y!r}")
        if not (_number(self.smoothing) and 0.0 <= self.smoothing <= 10.0):
            raise ConfigError(f"'framing.smoothing': must be a number of seconds in [0, 10], got {self.smoothing!r}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> FramingSettings:
        """Settings from the ``framing`` config section; missing keys take the defaults."""
        from .config import settings_from_section

        return settings_from_section(cls, "framing", cfg)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)


def frame_box(width: int, height: int) -> np.ndarray:
    """The whole video frame, centred and padded to a square (black outside the frame) so that no aspect ratio
    is distorted: ``(x0, y0, x1, y1)`` in frame pixels."""
    side = max(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return np.array([x0, y0, x0 + side, y0 + side], float)


def frame_rectangle(width: int, height: int) -> np.ndarray:
    """The video frame itself, ``(0, 0, width, height)`` in frame pixels: a crop box showing exactly the frame, not
    padded (an output image of another aspect stretches it; :func:`frame_box` pads to a square instead)."""
    return np.array([0.0, 0.0, float(width), float(height)])


# ------------------------------------------------------------------------------------------ head geometry


def face_geometry(model, p) -> tuple[np.ndarray, float]:
    """``(head point (3,), face height)`` of the identity shape ``model.shape(p)`` in model units (model frame,
    y up, z towards the viewer): see the module docstring. Only the landmarks the model places (weight > 0)."""
    points = model.landmark_points(model.shape(p))
    if model.lm_weight is not None and (np.asarray(model.lm_weight) > 0).sum() >= 3:
        points = points[np.asarray(model.lm_weight) > 0]
    lo, hi = points.min(axis=0), points.max(axis=0)
    head = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return head, float(hi[1] - lo[1])


def head_track(model, p, camera, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the projected head point (T, 2), the face size in pixels (T,) and whether both are known
    (T,) bool: a valid frame with a finite camera of positive scale."""
    from .camera import project

    camera = np.asarray(camera, float)
    head, height = face_geometry(model, p)
    with np.errstate(invalid="ignore"):
        centre = project(np.broadcast_to(head, (len(camera), 1, 3)), camera)[:, 0, :2]
        size = camera[:, 6] * height
        known = np.asarray(valid, bool) & np.isfinite(centre).all(axis=1) & np.isfinite(size) & (size > 0)
    return centre, size, known


def fill_gaps(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``x`` (T, ...) with the rows where ``known`` is false linearly interpolated between the nearest known rows
    (held at the ends). At least one row must be known."""
    x = np.asarray(x, float)
    known = np.asarray(known, bool)
    idx = np.flatnonzero(known)
    if not len(idx):
        raise ValueError("no known frame to fill the gaps from")
    t = np.arange(len(x))
    flat = x.reshape(len(x), -1)
    out = np.stack([np.interp(t, idx, flat[idx, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(x.shape)


def smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Zero-phase smoothing of ``x`` (T, ...) along time: at each frame, the value at that frame of the straight
    line fitted by least squares with Gaussian weights (standard deviation ``sigma_frames``, cut at 4σ) around it.

    Away from the ends this is exactly the Gaussian moving average (with symmetric weights the slope drops
    out); near the ends the fit becomes one-sided but still follows a moving head without bias, where a
    Gaussian average of a padded sequence would pull the ends towards the inside. ``sigma_frames`` 0: ``x``."""
    from scipy.ndimage import correlate1d

    x = np.asarray(x, float)
    if sigma_frames <= 0 or len(x) < 3:
        return x.copy()
    r = max(1, int(np.ceil(4.0 * sigma_frames)))
    d = np.arange(-r, r + 1, dtype=float)
    g = np.exp(-0.5 * (d / sigma_frames) ** 2)
    flat = x.reshape(len(x), -1)
    ones = np.ones((len(x), 1))

    def window_sum(kernel, y):  # Σ_k kernel(k - t) y(k) over the frames that exist
        return correlate1d(y, kernel, axis=0, mode="constant", cval=0.0)

    s0, s1, s2 = window_sum(g, ones), window_sum(g * d, ones), window_sum(g * d * d, ones)
    y0, y1 = window_sum(g, flat), window_sum(g * d, flat)
    det = s0 * s2 - s1 * s1
    line = (s2 * y0 - s1 * y1) / np.where(det > 1e-12 * s0 * s2, det, np.inf)
    mean = y0 / s0  # (a window holding a single frame: its value)
    out = np.where(det > 1e-12 * s0 * s2, line, mean)
    return out.reshape(x.shape)


def boxes_from(centre: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Square boxes (T, 4) ``x0, y0, x1, y1`` of centres (T, 2) and sides (T,)."""
    half = np.asarray(side, float)[:, None] / 2
    return np.hstack([centre - half, centre + half])


def head_boxes(model, p, camera, valid, fps: float, settings: FramingSettings, width: int, height: int) -> np.ndarray:
    """The crop box of every frame (T, 4) float64, ``x0, y0, x1, y1`` in frame pixels, finite for every frame.

    ``model``, ``p`` (identity), ``camera`` (T, 7) and ``valid`` (T,) are those of a fit (a track, or a transfer
    onto the target's model); ``fps`` converts ``settings.smoothing`` to frames. ``mode='frame'``, or a fit
    without any usable frame, gives :func:`frame_box` in every frame."""
    n = len(camera)
    if settings.mode == "frame":
        return np.tile(frame_box(width, height), (n, 1))
    centre, size, known = head_track(model, p, camera, valid)
    if not known.any():
        if n:
            log.warning("no frame with a fit: the crop boxes show the whole frame")
        return np.tile(frame_box(width, height), (n, 1))
    centre, size = fill_gaps(centre, known), fill_gaps(size, known)
    sigma = settings.smoothing * float(fps)
    centre, size = smooth(centre, sigma), smooth(size, sigma)
    centre = centre + np.stack([np.zeros(n), settings.offset_y * size], axis=1)
    return boxes_from(centre, settings.scale * size)


def fit_boxes(model, fit, fps: float, settings: FramingSettings, width: int, height: int) -> np.ndarray:
    """:func:`head_boxes` of a :class:`~deep_puppets.fit_types.FitResult` (a track or a transfer's ``to_fit()``)."""
    return head_boxes(model, fit.p, fit.camera, fit.valid, fps, settings, width, height)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """Centres (T, 2) of boxes (T, 4)."""
    boxes = np.asarray(boxes, float)
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def smoothness(boxes: np.ndarray) -> float:
    """RMS (pixels) of the second difference in time of the box centres: the crop's jitter + acceleration."""
    c = box_centres(boxes)
    if len(c) < 3:
        return 0.0
    return float(np.sqrt(np.mean(np.sum(np.diff(c, n=2, axis=0) ** 2, axis=1))))
