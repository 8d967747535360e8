"""Photometric evaluation of synthesized frames against real ones (seed report, "Quantitative Evaluation").

E_col(C_s, C_i) = 1/|C_i| Σ_p ‖C_s(p) − C_i(p)‖₂, colours in [0, 1]: the mean over pixels of the RGB
Euclidean distance. Its per-pixel map is what the heat maps show. PSNR and SSIM are reported too so figures
compare with the literature.

Every method and region is scored on ONE frame set (:func:`scored_frames`): the held-out frames whose face was
detected (not a bridged fit), whose fit rendered (finite parameters) and whose render shows a face. Frames
left out are counted per reason in the summary, the log and the plot's title.
"""

from __future__ import annotations

import numpy as np

from .files import atomic_path

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


def label(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``img`` with ``text`` written in its top-left corner (white on a dark band)."""
    import cv2

    img = np.ascontiguousarray(img.copy())
    scale = max(0.3, img.shape[0] / 400)
    h = int(22 * scale) + 4
    img[:h] = (img[:h] * 0.35).astype(img.dtype)
    cv2.putText(img, text, (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def legend_bar(width: int, vmax: float = HEAT_MAX) -> np.ndarray:
    """A colour bar of the heat maps' fixed scale (0 at the left, ``vmax`` at the right), labelled, for videos."""
    import cv2

    bar = heat_map(np.tile(np.linspace(0, vmax, width)[None, :], (10, 1)), vmax)
    band = np.zeros((14, width, 3), np.uint8)
    font, s = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    right = f"{vmax:g}"
    (tw, _), _ = cv2.getTextSize(right, font, s, 1)
    cv2.putText(band, "0", (1, 11), font, s, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(band, right, (width - tw - 1, 11), font, s, (255, 255, 255), 1, cv2.LINE_AA)
    mid = "RGB L2 error"
    (mw, _), _ = cv2.getTextSize(mid, font, s, 1)
    if mw + 2 * tw + 16 < width:
        cv2.putText(band, mid, ((width - mw) // 2, 11), font, s, (200, 200, 200), 1, cv2.LINE_AA)
    return np.vstack([bar, band])


# Why a held-out frame is not scored, in the order they are checked.
NOT_DETECTED = "no face detected (bridged fit)"
NOT_RENDERED = "no conditioning render (invalid fit)"
NO_FACE = "no face in the render"


def scored_frames(detected, rendered, face_pixels) -> tuple[np.ndarray, dict]:
    """Which held-out frames to score: ``(keep (N,) bool, {"held_out", "scored", "excluded": {reason: n}})``.

    ``detected``: the track's ``valid`` (a face was detected, the fit is not bridged); ``rendered``: the
    conditioning's ``valid``; ``face_pixels``: pixels of the rendered face per frame. Each excluded frame
    counts under the first reason that applies."""
    detected, rendered = np.asarray(detected, bool), np.asarray(rendered, bool)
    face = np.asarray(face_pixels) > 0
    reasons = [(NOT_DETECTED, ~detected), (NOT_RENDERED, detected & ~rendered), (NO_FACE, detected & rendered & ~face)]
    keep = detected & rendered & face
    excluded = {why: int(m.sum()) for why, m in reasons if m.any()}
    return keep, {"held_out": int(len(keep)), "scored": int(keep.sum()), "excluded": excluded}


def describe_frames(counts: dict) -> str:
    """'30 of 32 held-out frames (2 excluded: no face in the render)'."""
    text = f"{counts['scored']} of {counts['held_out']} held-out frames"
    if counts["excluded"]:
        why = ", ".join(f"{n} {reason}" if len(counts["excluded"]) > 1 else reason for reason, n in counts["excluded"].items())
        text += f" ({counts['held_out'] - counts['scored']} excluded: {why})"
    return text


def metrics_table(methods: dict, real: np.ndarray, frames: np.ndarray, mask: np.ndarray | None):
    """Long table (one row per frame, method and region) of E_col, PSNR and SSIM. ``methods`` maps a name to
    synthesized frames (T, H, W, 3) aligned with ``real``; ``mask`` (T, H, W) is the face region."""
    import pandas as pd

    rows = []
    for name, synth in methods.items():
        synth = np.broadcast_to(synth, real.shape)
        whole = e_col(synth, real)
        p_whole = psnr(synth, real)
        face = e_col(synth, real, mask) if mask is not None else None
        p_face = psnr(synth, real, mask) if mask is not None else None
        for i, t in enumerate(frames):
            rows.append({"frame": int(t), "method": name, "region": "frame", "e_col": float(whole[i]), "psnr": float(p_whole[i]), "ssim": ssim(synth[i], real[i])})
            if mask is not None:
                rows.append({"frame": int(t), "method": name, "region": "face", "e_col": float(face[i]), "psnr": float(p_face[i]), "ssim": float("nan")})
    return pd.DataFrame(rows)


def summary_table(df) -> dict:
    """{method: {region: {metric: summarize(...)}}} of a :func:`metrics_table`."""
    out: dict = {}
    for (method, region), g in df.groupby(["method", "region"]):
        out.setdefault(method, {})[region] = {m: summarize(g[m]) for m in ("e_col", "psnr", "ssim") if g[m].notna().any()}
    return out


def e_col_plot(df, out_png, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for method, g in df[df.region == "frame"].groupby("method"):
        ax.plot(g.frame, g.e_col, lw=1.2, label=f"{method} (mean {g.e_col.mean():.4f})")
    ax.set_xlabel("frame (held out from training)")
    ax.set_ylabel("E_col (mean RGB L2, colours in [0,1])")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def comparison_frames(real: np.ndarray, synth: np.ndarray, frames, vmax: float = HEAT_MAX):
    """original | synthesized | heat map, with the frame's E_col written on it, plus the colour scale."""
    errs = error_map(synth, real)
    bar = None
    for i, t in enumerate(frames):
        heat = heat_map(errs[i], vmax)
        row = np.hstack([label(real[i], f"real #{int(t)}"), label(synth[i], f"E_col {errs[i].mean():.4f}"), label(heat, "error")])
        if bar is None:
            bar = legend_bar(row.shape[1], vmax)
        yield np.vstack([row, bar])
