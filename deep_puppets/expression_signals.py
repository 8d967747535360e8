"""A shared, named expression space measured from the 478 MediaPipe landmarks, the same for every actor.

:func:`expression_signals` turns landmark positions (T, 478, 2 or 3) into per-frame scalar signals
(:data:`SIGNALS`) that mean the same thing on anyone's face: detected landmarks of a video, or the landmark
vertices of a fitted or transferred mesh projected to the image. Everything is measured in 2D (x, y only; a z
column is ignored). The expression signals use an *eye frame* that removes the image roll: ``x̂`` along the
eye line from the subject's right eye centre to the left one (each eye's centre = midpoint of its two corners;
image right for a frontal face), ``ŷ`` perpendicular, pointing *down* the face; the head proxies a head frame
(below).

Coordinates: ``y_down=True`` (default) for image points (pixels or normalised, x right, y down: the detector's
convention and :func:`deep_puppets.camera.project`'s); ``y_down=False`` for model-space points (x toward the
subject's left, y up, z toward the viewer: the morphable models' frame), read as their orthographic view.

Signals (lengths divided by the inter-ocular distance IOD = distance between the eye centres, unless said):

- ``eye_aperture_left/right``: mean lid gap of five upper/lower eye-contour pairs along ``ŷ`` / the eye width
  (corner to corner, mean of both eyes: one eye's own width foreshortens with yaw, +33 % at 30° against +3 %
  for the mean). ~0.2 open, ~0 closed. Subject's left/right, as MediaPipe names them.
- ``gaze_x``, ``gaze_y``: iris centre (468/473) minus the eye centre, along ``x̂`` / ``-ŷ``, over the eye width;
  mean of both eyes. Positive = toward image right (the subject's left) / up.
- ``mouth_open``: mean gap of three inner-lip pairs (82/87, 13/14, 312/317) along ``ŷ`` / IOD.
- ``mouth_width``: outer mouth corners 61–291 distance / IOD.
- ``pucker``: lip thickness over mouth width, ((17 − 0) − (14 − 13)) along ``ŷ`` / |61 − 291|: the outer
  lip height less the inner gap (so opening the jaw barely changes it), over the corner distance; pursed or
  pouted lips get thicker and narrower, so it rises. A smile (wider, thinner lips) lowers it.
- ``brow_left/right``: eye centre minus the mean of that brow's ten points, along ``-ŷ`` / IOD (higher brow,
  larger value). Eye corners move little with blinks, so a blink does not move it.
- head-angle proxies, in a *head frame* from the two ear roots (234, 454: the face-oval points at eye level,
  far behind the face and moved by no expression): ``roll`` = angle of the ear line in degrees, ``atan2`` of its
  direction in the input frame with y down (clockwise on screen is positive; for ``y_down=False`` the y axis is
  flipped first so the sign is the same on screen). ``yaw``: the nose bridge (6) minus the ear roots' midpoint
  along the ear line / IOD, growing as the nose turns toward image right (the subject turning to their left; +yaw
  of :func:`deep_puppets.camera.yaw_pitch_roll_matrix` in model space); ``pitch``: the same offset along the
  ear line's upward normal / IOD, growing when the face turns up (a positive model-space pitch ``Rx`` turns the
  nose down and lowers it). ~sin(angle) · depth / IOD: monotonic, not degrees; the rest values differ between
  people (face depth): compare changes. Pitch and roll do not change the IOD (rotation in the image plane, or
  about the eye line, in an orthographic view). Anchoring on the eye corners instead (they move with squints,
  smiles and gaze) made the proxies follow expressions: on clips with a nearly still head (LivePortrait d0,
  d13, M030) their correlation with the fitted head angles fell to −0.4…0.65, against 0.7…0.97 with the ears.

Being 2D, the expression signals are not fully pose-free: a ±20° yaw or pitch changes the apertures and the
mouth opening by up to ~20 % of their rest values and the brows (1 cm in front of the eye corners) by ~±15 %.
Compare two sets of signals under the same head motion, or mind that head motion leaks in.

Per-actor normalisation: :func:`rest_value` (robust rest: the median over valid frames; for apertures the median of
the open frames) and :func:`signal_range` (5–95 % range). :func:`blink_events` finds blinks in an aperture.
Pure numpy; frames with ``valid`` false come out NaN.
"""

from __future__ import annotations

import numpy as np

from .models.facemesh import IRIS_CENTERS, LEFT_EYEBROW, RIGHT_EYEBROW

SIGNALS = (
    "eye_aperture_left",
    "eye_aperture_right",
    "gaze_x",
    "gaze_y",
    "mouth_open",
    "mouth_width",
    "pucker",
    "brow_left",
    "brow_right",
    "yaw",
    "pitch",
    "roll",
)
HEAD_SIGNALS = ("yaw", "pitch", "roll")
EXPRESSION_SIGNALS = tuple(s for s in SIGNALS if s not in HEAD_SIGNALS)
APERTURES = ("eye_aperture_left", "eye_aperture_right")

# Eye corners (outer, inner) and five upper/lower lid pairs of each eye (subject's right = image left).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_LID_PAIRS = ((161, 163), (160, 144), (159, 145), (158, 153), (157, 154))
LEFT_LID_PAIRS = ((388, 390), (387, 373), (386, 374), (385, 380), (384, 381))
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))  # (upper, lower)
OUTER_LIP_MID = (0, 17)  # (upper, lower) outer lip centre
INNER_LIP_MID = (13, 14)
MOUTH_CORNERS = (61, 291)  # subject's right, left
NOSE_BRIDGE = 6  # on the bridge between the eyes: rigid, well in front of the ear roots
EAR_ROOTS = (234, 454)  # subject's right, left: face-oval points at eye level
BLINK_FRACTION = 0.5  # a blink: aperture below this fraction of its median ...
BLINK_MIN_FRAMES = 2  # ... for at least this many consecutive frames


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1)


def expression_signals(points, valid=None, y_down: bool = True) -> dict[str, np.ndarray]:
    """Per-frame signals (:data:`SIGNALS` → (T,) float arrays) of landmarks ``points`` (T, 478, 2 or 3).

    ``valid`` (T,) bool marks frames with a face (default: frames whose points are finite); other frames give
    NaN. ``y_down``: see the module docstring.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 3 or pts.shape[1] != 478 or pts.shape[2] not in (2, 3):
        raise ValueError(f"need landmarks (T, 478, 2|3), got shape {pts.shape}")
    xy = pts[..., :2].copy()
    if not y_down:
        xy[..., 1] *= -1
    finite = np.isfinite(xy).all(axis=(1, 2))
    ok = finite if valid is None else np.asarray(valid, bool) & finite
    xy[~ok] = 0.0  # computed, then blanked; keeps the arithmetic warning-free

    def p(i):
        return xy[:, i]

    eye_r = 0.5 * (p(RIGHT_EYE_CORNERS[0]) + p(RIGHT_EYE_CORNERS[1]))
    eye_l = 0.5 * (p(LEFT_EYE_CORNERS[0]) + p(LEFT_EYE_CORNERS[1]))
    axis = eye_l - eye_r
    iod = np.linalg.norm(axis, axis=-1)
    iod_safe = np.where(iod > 0, iod, np.nan)
    ex = axis / iod_safe[:, None]
    ey = np.stack([-ex[:, 1], ex[:, 0]], -1)  # x̂ turned 90° on screen: down the face (y down)

    def down(a, b):  # b − a along ŷ
        return _dot(p(b) - p(a), ey)

    def width(a, b):
        w = np.linalg.norm(p(a) - p(b), axis=-1)
        return np.where(w > 0, w, np.nan)

    out = {}
    w_eye = 0.5 * (width(*RIGHT_EYE_CORNERS) + width(*LEFT_EYE_CORNERS))
    out["eye_aperture_left"] = np.mean([down(u, lo) for u, lo in LEFT_LID_PAIRS], axis=0) / w_eye
    out["eye_aperture_right"] = np.mean([down(u, lo) for u, lo in RIGHT_LID_PAIRS], axis=0) / w_eye
    g = 0.5 * (p(IRIS_CENTERS[0]) - eye_r + p(IRIS_CENTERS[1]) - eye_l)
    out["gaze_x"] = _dot(g, ex) / w_eye
    out["gaze_y"] = -_dot(g, ey) / w_eye
    out["mouth_open"] = np.mean([down(u, lo) for u, lo in INNER_LIP_PAIRS], axis=0) / iod_safe
    mw = width(*MOUTH_CORNERS)
    out["mouth_width"] = mw / iod_safe
    out["pucker"] = (down(*OUTER_LIP_MID) - down(*INNER_LIP_MID)) / mw
    out["brow_left"] = -_dot(xy[:, LEFT_EYEBROW].mean(axis=1) - eye_l, ey) / iod_safe
    out["brow_right"] = -_dot(xy[:, RIGHT_EYEBROW].mean(axis=1) - eye_r, ey) / iod_safe
    ear_axis = p(EAR_ROOTS[1]) - p(EAR_ROOTS[0])
    hx = ear_axis / np.where((n := np.linalg.norm(ear_axis, axis=-1)) > 0, n, np.nan)[:, None]
    hy = np.stack([-hx[:, 1], hx[:, 0]], -1)
    nose = p(NOSE_BRIDGE) - 0.5 * (p(EAR_ROOTS[0]) + p(EAR_ROOTS[1]))
    out["yaw"] = _dot(nose, hx) / iod_safe
    out["pitch"] = -_dot(nose, hy) / iod_safe
    out["roll"] = np.degrees(np.arctan2(hx[:, 1], hx[:, 0]))
    for k in out:
        out[k] = np.where(ok, out[k], np.nan)
    return {k: out[k] for k in SIGNALS}


def _values(values, valid=None) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v) if valid is None else np.asarray(valid, bool) & np.isfinite(v)
    return v[keep]


def rest_value(values, valid=None, aperture: bool = False) -> float:
    """An actor's robust rest value of a signal: the median over valid frames.

    ``aperture=True`` (eye apertures): the median of the *open* frames (at least half the 90th percentile), so
    that blinks, however frequent, do not pull the rest down. NaN when no frame is valid.
    """
    v = _values(values, valid)
    if not len(v):
        return float("nan")
    if aperture:
        v = v[v >= BLINK_FRACTION * np.percentile(v, 90)]
    return float(np.median(v))


def signal_range(values, valid=None) -> float:
    """The 5–95 % range of a signal over valid frames (NaN when none): the actor's amplitude."""
    v = _values(values, valid)
    if not len(v):
        return float("nan")
    lo, hi = np.percentile(v, [5, 95])
    return float(hi - lo)


def blink_events(aperture, valid=None, fraction: float = BLINK_FRACTION, min_frames: int = BLINK_MIN_FRAMES) -> list[tuple[int, int]]:
    """Blinks in an eye aperture (T,): runs of ≥ ``min_frames`` consecutive valid frames below ``fraction`` × its
    median over valid frames, as ``(start, stop)`` frame ranges (stop exclusive). An invalid frame ends a run.
    """
    a = np.asarray(aperture, dtype=float)
    ok = np.isfinite(a) if valid is None else np.asarray(valid, bool) & np.isfinite(a)
    if not ok.any():
        return []
    thr = fraction * float(np.median(a[ok]))
    low = np.zeros(len(a) + 2, bool)
    low[1:-1] = ok & (a < thr)
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    return [(int(s), int(e)) for s, e in zip(starts, stops) if e - s >= min_frames]
