"""Tracking diagnostics of a video: how well the fitted model follows the detector, how much it jitters,
what smoothing does to the camera (the seed report's camera-smoothing comparison), and an overlay video.

Landmark error is normalised by the inter-ocular distance (outer eye corners, MediaPipe points 33 and 263)
of the detections. Jitter is the mean norm of the second difference ‖x_{t−1} − 2x_t + x_{t+1}‖ of the 2D
landmarks over consecutive valid frames, in pixels.
"""

from __future__ import annotations

import logging

import numpy as np

from .camera import (
    FLIP,
    project_rotation,
    rotation_log,
    rotation_matrix,
    yaw_pitch_roll,
)
from .files import atomic_path

log = logging.getLogger(__name__)

OUTER_EYE_CORNERS = (33, 263)


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Inter-ocular distance (T,) in pixels of detections (T, 478, ≥2)."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(landmarks[:, a, :2] - landmarks[:, b, :2], axis=-1)


def landmark_nme(fitted: np.ndarray, detected: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame mean 2D landmark distance ÷ inter-ocular distance (NaN where not valid)."""
    err = np.linalg.norm(fitted[..., :2] - detected[..., :2], axis=-1).mean(axis=1) / interocular(detected)
    return np.where(valid, err, np.nan)


def jitter(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame second-difference norm (T,) averaged over landmarks; NaN unless t−1, t, t+1 are valid."""
    out = np.full(len(points), np.nan)
    ok = valid[:-2] & valid[1:-1] & valid[2:]
    d2 = np.linalg.norm(points[:-2, :, :2] - 2 * points[1:-1, :, :2] + points[2:, :, :2], axis=-1).mean(axis=1)
    out[1:-1] = np.where(ok, d2, np.nan)
    return out


def camera_degrees(camera: np.ndarray) -> np.ndarray:
    """Camera rotations as (yaw, pitch, roll)-like angles in degrees: the axis-angle vector × 180/π."""
    return np.degrees(camera[:, :3])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def camera_smoothing_figure(raw: np.ndarray, smooth: np.ndarray, fps: float, out_png, title: str) -> None:
    """Camera parameters over time, without and with smoothing (the report's comparison)."""
    plt = _plt()
    t = np.arange(len(raw)) / fps
    deg_raw, deg_smooth = camera_degrees(raw), camera_degrees(smooth)
    panels = [
        *((f"rotation {axis} (°)", deg_raw[:, i], deg_smooth[:, i]) for i, axis in enumerate("xyz")),
        ("translation x (px)", raw[:, 3], smooth[:, 3]),
        ("translation y (px)", raw[:, 4], smooth[:, 4]),
        ("scale (px / unit)", raw[:, 6], smooth[:, 6]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.9 * len(panels)), sharex=True)
    for ax, (label, a, b) in zip(axes, panels):
        ax.plot(t, a, color="#d62728", lw=0.9, label="without smoothing (λ = 0)")
        ax.plot(t, b, color="#1f77b4", lw=1.4, label="with smoothing")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[0].set_title(title, fontsize=10)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def tracking_figure(nme: np.ndarray, jitter_raw: np.ndarray, jitter_fit: np.ndarray, jitter_unsmoothed, fps: float, out_png, title: str,
                    truth: dict | None = None) -> None:
    """Landmark error (top) and jitter (middle); with ``truth`` (:func:`rotation_vs_truth`'s ``curves``, demo
    clips) a bottom panel of the fitted head rotation against the true one."""
    plt = _plt()
    t = np.arange(len(nme)) / fps
    n = 3 if truth is not None else 2
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n + 0.4), sharex=True)
    axes[0].plot(t, 100 * nme, lw=1)
    axes[0].set_ylabel("landmark error\n(% inter-ocular)")
    axes[0].set_title(title, fontsize=10)
    axes[0].grid(alpha=0.3)
    axes[1].plot(t, jitter_raw, lw=0.8, color="#d62728", label="detector")
    if jitter_unsmoothed is not None:
        axes[1].plot(t, jitter_unsmoothed, lw=0.8, color="#ff7f0e", label="fit without smoothing")
    axes[1].plot(t, jitter_fit, lw=1.2, color="#1f77b4", label="fit with smoothing")
    axes[1].set_ylabel("jitter (px)\n‖x[t−1] − 2x[t] + x[t+1]‖")
    axes[1].legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    axes[1].grid(alpha=0.3)
    if truth is not None:
        for i, (name, colour) in enumerate(zip(ANGLES, ("C0", "C1", "C2"))):
            axes[2].plot(t, truth["true"][:, i], color=colour, lw=2.4, alpha=0.35, label=f"{name}, true")
            axes[2].plot(t, truth["fitted"][:, i], color=colour, lw=1.1, label=f"{name}, fitted")
        axes[2].set_ylabel("head rotation (°)")
        axes[2].legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        axes[2].grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- demo clips: the known motion

ANGLES = ("yaw", "pitch", "roll")


def rotation_vs_truth(camera: np.ndarray, valid: np.ndarray, true_rotation: np.ndarray) -> dict:
    """The fitted head rotation of a demo clip scored against the clip's known rotation (layout ``demo_truth``).

    The fit's rotation in image axes is ``F·R(r)`` (:mod:`deep_puppets.camera`); the truth is relative to the
    head's pose in the photo, so the two differ by one constant rotation ``G`` (the photo's own pose, the model's
    axes): ``F·R(t) ≈ R_true(t)·G``. ``G`` is fitted by least squares over the valid frames (one rotation, three
    numbers, for the whole clip) and removed; then both are written as yaw, pitch, roll in the demo's convention
    (:func:`deep_puppets.camera.yaw_pitch_roll`) and compared. Returns the summary (``frames``, per-angle
    ``rms_deg``, ``correlation``, ``true_std_deg``, ``geodesic_deg`` mean/p95/max, ``offset_deg`` = the angle of
    ``G``) and, under ``curves``, the per-frame ``fitted`` and ``true`` angles (T, 3) (NaN where not valid)."""
    camera, true_rotation = np.asarray(camera, float), np.asarray(true_rotation, float)
    if len(camera) != len(true_rotation):
        raise ValueError(f"the fit has {len(camera)} frames, the truth {len(true_rotation)}")
    ok = np.asarray(valid, bool) & np.isfinite(camera[:, :3]).all(axis=1)
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} valid frames to compare with the truth")
    image_rot = FLIP @ rotation_matrix(np.where(ok[:, None], camera[:, :3], 0.0))
    G = project_rotation((np.swapaxes(true_rotation[ok], 1, 2) @ image_rot[ok]).sum(axis=0))
    aligned = image_rot @ G.T
    fitted, true = yaw_pitch_roll(aligned), yaw_pitch_roll(true_rotation)
    fitted[~ok] = np.nan
    err = fitted[ok] - true[ok]
    geo = np.degrees(np.linalg.norm(rotation_log(np.swapaxes(aligned[ok], 1, 2) @ true_rotation[ok]), axis=-1))

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    return {
        "frames": int(ok.sum()),
        "method": "one constant rotation (the photo's pose, the model's axes) fitted by least squares and removed; "
                  "yaw, pitch, roll in the demo's convention (deep_puppets.demo.ROTATION_CONVENTION)",
        "rms_deg": {a: float(np.sqrt(np.mean(err[:, i] ** 2))) for i, a in enumerate(ANGLES)},
        "correlation": {a: corr(fitted[ok, i], true[ok, i]) for i, a in enumerate(ANGLES)},
        "true_std_deg": {a: float(true[ok, i].std()) for i, a in enumerate(ANGLES)},
        "geodesic_deg": {"mean": float(geo.mean()), "p95": float(np.percentile(geo, 95)), "max": float(geo.max())},
        "offset_deg": float(np.degrees(np.linalg.norm(rotation_log(FLIP @ G)))),  # G = F·R_photo: the photo's pose
        "curves": {"fitted": fitted, "true": true},
    }


# ------------------------------------------------------------------------------------------ overlay video


def overlay_frames(frames, fitted2d: np.ndarray, detected: np.ndarray, valid: np.ndarray, edges: np.ndarray, every: int = 4):
    """Video frames with the fitted face's outlines (green: face oval, brows, eyes, lips, nose — ``edges``
    between the fitted 478 landmarks ``fitted2d``), every ``every``-th of those outline points as the detector
    placed it (red dots) and the frame number burned in at the top. Lines and dots grow with the frame."""
    import cv2

    from .annotate import label

    outline = np.unique(edges.ravel())[::every]
    n = len(fitted2d)
    for t, frame in enumerate(frames):
        img = np.ascontiguousarray(frame.copy())
        thick = max(1, int(round(min(img.shape[:2]) / 300)))
        dot = max(1, int(round(min(img.shape[:2]) / 200)))
        pts = fitted2d[t, :, :2]
        if np.isfinite(pts[edges]).all():
            lines = np.round(pts[edges] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
            cv2.polylines(img, list(lines), False, (60, 230, 60), thick, cv2.LINE_AA, shift=2)
        if valid[t]:
            for x, y in np.round(detected[t, outline, :2]).astype(int):
                cv2.circle(img, (int(x), int(y)), dot, (235, 40, 40), -1, cv2.LINE_AA)
        yield label(img, f"frame {t} / {n - 1}" + ("" if valid[t] else ": no face detected"))


def outline_edges() -> np.ndarray:
    """Edges (E, 2) of the FaceMesh outlines: face oval, eyebrows, eyes, lips and nose."""
    from .models.facemesh import connection_edges

    return np.concatenate([connection_edges(g) for g in ("face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "lips", "nose")])


def summary(nme, jitter_raw, jitter_fit, jitter_unsmoothed, valid) -> dict:
    jr, jf = np.nanmean(jitter_raw), np.nanmean(jitter_fit)
    out = {
        "frames": int(len(valid)),
        "valid_frames": int(valid.sum()),
        "nme_mean": float(np.nanmean(nme)),
        "nme_median": float(np.nanmedian(nme)),
        "nme_p95": float(np.nanpercentile(nme, 95)),
        "jitter_detector_px": float(jr),
        "jitter_fit_px": float(jf),
        "jitter_ratio": float(jf / jr) if jr > 0 else float("nan"),
    }
    if jitter_unsmoothed is not None:
        out["jitter_fit_unsmoothed_px"] = float(np.nanmean(jitter_unsmoothed))
    return out
