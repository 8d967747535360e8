"""Photometric evaluation of synthesized frames against real ones (seed report, "Quantitative Evaluation").

E_col(C_s, C_i) = 1/|C_i| Σ_p ‖C_s(p) − C_i(p)‖₂, colours in [0, 1]: the mean over pixels of the RGB
Euclidean distance. Its per-pixel map is what the heat maps show. PSNR and SSIM are reported too so figures
compare with the literature. Frames are scored at full resolution on three regions (:func:`regions`): the
whole frame, the head crop (its box within the frame) and the face (the blend mask at least 0.5); the seam
figures (:func:`seam_sums`) compare the error in the blend band with the mask's interior.

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


def heat_map(err: np.ndarray, vmax: float = HEAT_MAX) -> np.ndarray:
    """Colour an error map (H, W) with the 'inferno' colour map on the fixed scale [0, vmax] → uint8 RGB."""
    import cv2

    level = np.clip(err / vmax, 0, 1)
    bgr = cv2.applyColorMap((level * 255).round().astype(np.uint8), cv2.COLORMAP_INFERNO)
    return bgr[..., ::-1].copy()


def summary_statistics(values) -> dict:
    """Mean, median, p95, max and count of the finite ``values`` (NaN statistics and n = 0 when none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), "median": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()), "n": int(len(v))}


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


def describe_frames(counts: dict, kind: str = "held-out") -> str:
    """'30 of 32 held-out frames (2 excluded: no face in the render)' (``kind``: what the frames are)."""
    text = f"{counts['scored']} of {counts['held_out']} {kind} frames"
    if counts["excluded"]:
        why = ", ".join(f"{n} {reason}" if len(counts["excluded"]) > 1 else reason for reason, n in counts["excluded"].items())
        text += f" ({counts['held_out'] - counts['scored']} excluded: {why})"
    return text


# ------------------------------------------------------------------------------------------------ regions

# The scored regions of a full-resolution frame, in the order tables and plots list them.
FRAME, HEAD, FACE = "frame", "head", "face"
REGIONS = (FRAME, HEAD, FACE)
# The scored methods, in the order tables and plots list them: the generator and the three baselines.
METHODS = ("gan", "nearest", "alpha", "mean")
FACE_LEVEL = 0.5  # the face region: the blend mask at least this opaque
SSIM_WIN = 7  # scikit-image's default window (uniform, 7 × 7)


def regions(alpha: np.ndarray, box) -> dict[str, np.ndarray]:
    """The scored regions of one frame as (H, W) bool masks: ``frame`` (every pixel), ``head`` (the frame
    pixels inside the head crop ``box``, i.e. box ∩ frame) and ``face`` (the blend mask ``alpha`` (H, W) in frame
    coordinates at least :data:`FACE_LEVEL`)."""
    from .composite import box_roi

    alpha = np.asarray(alpha)
    head = np.zeros(alpha.shape, bool)
    roi = box_roi(box, alpha.shape)
    if roi is not None:
        r0, r1, c0, c1 = roi
        head[r0:r1, c0:c1] = True
    return {FRAME: np.ones(alpha.shape, bool), HEAD: head, FACE: alpha >= FACE_LEVEL}


def ssim_map(synth, real) -> np.ndarray:
    """Per-pixel SSIM (H, W) of one RGB frame pair (scikit-image ``full=True``, data range 1, the channels'
    mean), to be averaged over a region.

    Where the two frames agree over a whole window the map is exactly 1, so it is computed only on the
    bounding box of the differing pixels grown by two window radii (the windows of every pixel whose value
    can differ from 1 then lie inside it, or meet the frame's border as they would in the whole frame) and set
    to 1 elsewhere: the same map, a fraction of the cost when only the head differs."""
    from skimage.metrics import structural_similarity

    a, b = to_float(synth), to_float(real)
    out = np.ones(a.shape[:2], np.float64)
    ys, xs = np.nonzero((a != b).any(axis=-1))
    if not len(ys):
        return out
    pad = 2 * (SSIM_WIN // 2)
    h, w = out.shape
    r0, r1 = max(ys.min() - pad, 0), min(ys.max() + 1 + pad, h)
    c0, c1 = max(xs.min() - pad, 0), min(xs.max() + 1 + pad, w)
    if r1 - r0 < SSIM_WIN or c1 - c0 < SSIM_WIN:
        r0, r1, c0, c1 = 0, h, 0, w
    _, full = structural_similarity(a[r0:r1, c0:c1], b[r0:r1, c0:c1], win_size=SSIM_WIN, channel_axis=-1, data_range=1.0, full=True)
    out[r0:r1, c0:c1] = full.mean(axis=-1)
    return out


def region_scores(synth, real, masks: dict[str, np.ndarray]) -> tuple[dict, np.ndarray]:
    """E_col, PSNR and SSIM of one frame pair over each region of ``masks``: ``({region: {metric: value}},
    error map)``. The SSIM map is computed once and averaged over each region."""
    diff = to_float(synth) - to_float(real)
    err = np.linalg.norm(diff, axis=-1)
    sq = (diff**2).mean(axis=-1)
    smap = ssim_map(synth, real)
    out = {}
    for region, m in masks.items():
        if not m.any():
            out[region] = {"e_col": float("nan"), "psnr": float("nan"), "ssim": float("nan")}
            continue
        with np.errstate(divide="ignore"):
            p = 10.0 * np.log10(1.0 / sq[m].mean())
        out[region] = {"e_col": float(err[m].mean()), "psnr": float(p), "ssim": float(smap[m].mean())}
    return out, err


# ---------------------------------------------------------------------------------------------- the seam

SEAM_BAR = 1.3  # the blend band's mean error may be at most this many times the interior's


def seam_sums(err: np.ndarray, alpha: np.ndarray) -> dict:
    """Error sums and pixel counts of the blend band (0 < alpha < 1, where the generated crop is mixed with the
    plate) and of the interior (alpha == 1, the generated crop alone): ``{"band": (sum, n), "interior": (sum, n)}``."""
    alpha = np.asarray(alpha)
    band = (alpha > 0) & (alpha < 1)
    interior = alpha >= 1
    return {"band": (float(err[band].sum()), int(band.sum())), "interior": (float(err[interior].sum()), int(interior.sum()))}


def seam_summary(sums: list[dict]) -> dict:
    """The seam figures over frames: pixel-weighted mean error of the band and of the interior, their ratio,
    the bar (:data:`SEAM_BAR`) and whether it is met."""
    def mean(part):
        total, n = sum(s[part][0] for s in sums), sum(s[part][1] for s in sums)
        return total / n if n else float("nan")

    band, interior = mean("band"), mean("interior")
    ratio = band / interior if interior > 0 else float("nan")
    return {"band_e_col": band, "interior_e_col": interior, "ratio": ratio, "bar": SEAM_BAR,
            "meets_bar": bool(ratio <= SEAM_BAR), "n_frames": len(sums)}


def seam_plot(frames, sums: list[dict], out_png, title: str) -> None:
    """Per frame: the GAN's mean error in the blend band and in the interior (top) and their ratio against the
    bar (bottom); the pooled figures in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def per_frame(part):
        return np.array([s[part][0] / s[part][1] if s[part][1] else np.nan for s in sums])

    band, interior = per_frame("band"), per_frame("interior")
    overall = seam_summary(sums)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 5.4), sharex=True)
    ax.plot(frames, band, lw=1.2, label=f"blend band 0<alpha<1 (mean {overall['band_e_col']:.4f})")
    ax.plot(frames, interior, lw=1.2, label=f"interior alpha=1 (mean {overall['interior_e_col']:.4f})")
    ax.set_ylabel("GAN E_col")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with np.errstate(divide="ignore", invalid="ignore"):
        bx.plot(frames, band / interior, lw=1.2, color="C2", label=f"band / interior (overall {overall['ratio']:.2f})")
    bx.axhline(SEAM_BAR, color="C3", ls="--", lw=1, label=f"bar {SEAM_BAR:g}")
    bx.set_xlabel("frame (held out from training)")
    bx.set_ylabel("seam ratio")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ tables and figures


def summary_table(df) -> dict:
    """{method: {region: {metric: summary_statistics(...)}}} of a long table (columns frame, method, region, e_col,
    psnr, ssim)."""
    out: dict = {}
    for (method, region), g in df.groupby(["method", "region"]):
        out.setdefault(method, {})[region] = {m: summary_statistics(g[m]) for m in ("e_col", "psnr", "ssim") if m in g and g[m].notna().any()}
    return out


def improvement_db(methods: dict, ours: str = "gan", region: str = FACE) -> dict:
    """Mean PSNR of ``ours`` minus each other method's on ``region`` (dB; positive: ours is better)."""
    mine = methods[ours][region]["psnr"]["mean"]
    return {m: mine - r[region]["psnr"]["mean"] for m, r in methods.items() if m != ours}


def method_summary(methods: dict) -> dict:
    """The summary keys every scored comparison shares: the regions, :func:`summary_table`'s ``methods``, their means
    per region (methods in :data:`METHODS` order) and the GAN's face PSNR gain over each other method."""
    return {
        "regions": list(REGIONS),
        "methods": methods,
        "mean": {m: {r: {k: v["mean"] for k, v in methods[m][r].items()} for r in REGIONS} for m in METHODS},
        "gan_improvement_db": {"region": FACE, **improvement_db(methods, "gan", FACE)},
    }


REGION_TITLES = {FRAME: "whole frame", HEAD: "head crop", FACE: "face (blend mask)"}


def e_col_plot(df, out_png, title: str) -> None:
    """E_col per held-out frame and method, one panel per region side by side (whole frame, head crop, face: the
    face's error beside the whole frame's), each method in the same colour everywhere; per panel, a legend below
    the axes with each method's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [r for r in REGIONS if r in set(df.region)] or sorted(set(df.region))
    methods = list(dict.fromkeys(df.method))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 4.6), sharex=True, squeeze=False)
    for ax, region in zip(axes[0], present):
        for method, g in df[df.region == region].groupby("method", sort=False):
            ax.plot(g.frame, g.e_col, lw=1.4, color=colours[method], label=f"{method}: mean {g.e_col.mean():.4f}")
        ax.set_title(REGION_TITLES.get(region, region), fontsize=11)
        ax.set_xlabel("held-out frame", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    axes[0, 0].set_ylabel("E_col (RGB L2 error, colours 0-1)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def comparison_frame(real: np.ndarray, synth: np.ndarray, err: np.ndarray, t: int, e: float, vmax: float = HEAT_MAX) -> np.ndarray:
    """real | synthesized | heat map (one frame, e.g. the head crops at a viewing size) labelled with the
    frame number and ``e`` (its E_col), with the heat maps' colour scale below."""
    from .annotate import label

    row = np.hstack([label(real, f"real, frame {int(t)}"), label(synth, f"GAN pasted, E_col {e:.3f}"), label(heat_map(err, vmax), "error")])
    return np.vstack([row, legend_bar(row.shape[1], vmax)])
