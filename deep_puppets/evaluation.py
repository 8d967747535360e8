"""Photometric evaluation of synthesized frames against real ones (seed report, "Quantitative Evaluation").

E_col(C_s, C_i) = 1/|C_i| Σ_p ‖C_s(p) − C_i(p)‖₂, colours in [0, 1]: the mean over pixels of the RGB
Euclidean distance. Its per-pixel map is what the heat maps show. PSNR and SSIM are reported too so figures
compare with the literature.
"""

from __future__ import annotations

import numpy as np

# The heat maps use a fixed colour scale so that videos and frames compare: 0 → black, HEAT_MAX → white.
# sqrt(3) is the largest possible distance; 0.5 already is a gross error.
HEAT_MAX = 0.5


def to_float(img) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def error_map(synth, real) -> np.ndarray:
    """Per-pixel RGB L2 distance (…, H, W) with colours in [0, 1]."""
    return np.linalg.norm(to_float(synth) - to_float(real), axis=-1)


def e_col(synth, real, mask=None) -> np.ndarray | float:
    """E_col per frame (for (T,H,W,3) inputs) or for one frame; ``mask`` (…,H,W) restricts the mean."""
    err = error_map(synth, real)
    if mask is None:
        return err.mean(axis=(-2, -1))
    mask = np.broadcast_to(np.asarray(mask, bool), err.shape)
    num = (err * mask).sum(axis=(-2, -1))
    den = mask.sum(axis=(-2, -1))
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def psnr(synth, real, mask=None) -> np.ndarray | float:
    """Peak signal-to-noise ratio in dB (peak 1.0), per frame; inf for identical frames."""
    sq = ((to_float(synth) - to_float(real)) ** 2).mean(axis=-1)
    if mask is None:
        mse = sq.mean(axis=(-2, -1))
    else:
        mask = np.broadcast_to(np.asarray(mask, bool), sq.shape)
        mse = (sq * mask).sum(axis=(-2, -1)) / np.maximum(mask.sum(axis=(-2, -1)), 1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim(synth, real) -> float:
    """Structural similarity of one RGB frame pair (scikit-image, data range 1)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(to_float(synth), to_float(real), channel_axis=-1, data_range=1.0))


def heat_map(err: np.ndarray, vmax: float = HEAT_MAX) -> np.ndarray:
    """Colour an error map (H, W) with the 'inferno' colour map on the fixed scale [0, vmax] → uint8 RGB."""
    import cv2

    level = np.clip(err / vmax, 0, 1)
    bgr = cv2.applyColorMap((level * 255).round().astype(np.uint8), cv2.COLORMAP_INFERNO)
    return bgr[..., ::-1].copy()


def summarize(values) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), "median": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()), "n": int(len(v))}
