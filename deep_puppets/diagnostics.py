"""Tracking diagnostics of a video: how well the fitted model follows the detector, how much it jitters,
what smoothing does to the camera (the seed report's camera-smoothing comparison), and an overlay video.

Landmark error is normalised by the inter-ocular distance (outer eye corners, MediaPipe points 33 and 263)
of the detections. Jitter is the mean norm of the second difference ‖x_{t−1} − 2x_t + x_{t+1}‖ of the 2D
landmarks over consecutive valid frames, in pixels.
"""

from __future__ import annotations

import logging

import numpy as np

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


def tracking_figure(nme: np.ndarray, jitter_raw: np.ndarray, jitter_fit: np.ndarray, jitter_unsmoothed, fps: float, out_png, title: str) -> None:
    plt = _plt()
    t = np.arange(len(nme)) / fps
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    axes[0].plot(t, 100 * nme, lw=1)
    axes[0].set_ylabel("landmark error\n(% inter-ocular)")
    axes[0].set_title(title, fontsize=10)
    axes[0].grid(alpha=0.3)
    axes[1].plot(t, jitter_raw, lw=0.8, color="#d62728", label="detector")
    if jitter_unsmoothed is not None:
        axes[1].plot(t, jitter_unsmoothed, lw=0.8, color="#ff7f0e", label="fit without smoothing")
    axes[1].plot(t, jitter_fit, lw=1.2, color="#1f77b4", label="fit with smoothing")
    axes[1].set_ylabel("jitter (px)\n‖x[t−1] − 2x[t] + x[t+1]‖")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def overlay_frames(frames, fitted2d: np.ndarray, detected: np.ndarray, valid: np.ndarray, edges: np.ndarray):
    """Video frames with the fitted mesh (green wireframe) and detector points (red dots) drawn on them."""
    import cv2

    for t, frame in enumerate(frames):
        img = np.ascontiguousarray(frame.copy())
        pts = fitted2d[t]
        if np.isfinite(pts).all():
            lines = np.round(pts[edges] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
            cv2.polylines(img, list(lines), False, (60, 220, 60), 1, cv2.LINE_AA, shift=2)
        if valid[t]:
            for x, y in np.round(detected[t, :, :2]).astype(int)[::3]:
                cv2.circle(img, (int(x), int(y)), 1, (230, 40, 40), -1)
        else:
            cv2.putText(img, "no face", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 80, 80), 2)
        yield img


def mesh_edges(triangles: np.ndarray) -> np.ndarray:
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


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
