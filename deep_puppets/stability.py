"""Temporal stability and out-of-distribution frames of a held-out synthesis (issue 16, item 5).

**Flicker** (:func:`warping_error`): the temporal warping error of a sequence against the REAL video's optical
flow. Frame ``t-1`` is warped to ``t`` with the backward flow of the real frames (:mod:`deep_puppets.gan.flow`:
``real[t](p) ≈ real[t-1](p + flow[t](p))``, in pixels of the head crop at the training size, each frame cropped
at its own box, so the flow includes the crop's motion), and the mean absolute difference to frame ``t`` (RGB in
[0, 1], averaged over the channels) is taken over the pixels whose warped source lies inside the crop: inside
the face mask (``face``) and over the whole head crop (``crop``; the flow exists only there). The same measure
of the real frames is the floor set by the flow itself (occlusions, flow errors, noise): a method flickers by
what it adds above the real video's value.

**Distance to the training frames** (:func:`parameter_features`, :func:`nearest_distance`): per frame, the
Euclidean distance of its parameters to the nearest training frame's, the parameters normalised so that one unit
is comparable: the expression ``q / exp_std`` (standard deviations of the model's prior) and the head rotation
as an axis-angle vector in degrees divided by :data:`ROTATION_UNIT_DEG` (for the small angles between
neighbouring poses the vector difference is the geodesic angle). Translation and scale are left out: the
generator sees the head crop, which follows them. A frame far from every training frame asks for an expression
or pose the target never showed.
"""

from __future__ import annotations

import numpy as np

from .files import atomic_path

ROTATION_UNIT_DEG = 10.0  # degrees of head rotation counted as one unit of distance (as one std of an expression)
FLICKER_REGIONS = ("face", "crop")


def _float(img) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def warp_previous(prev, flow) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t-1`` warped to ``t`` with the backward flow ``flow[t]`` (H, W, 2): ``out(p) = prev(p + flow(p))``
    (bilinear), and the (H, W) bool mask of the pixels whose source lies inside the frame."""
    import cv2

    prev = _float(prev)
    flow = np.asarray(flow, np.float32)
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(prev, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return (out[..., None] if out.ndim == 2 else out), inside


def warping_error(prev, cur, flow, mask=None) -> float:
    """Mean absolute difference (colours in [0, 1], mean over channels) between ``cur`` and ``prev`` warped with
    ``flow``, over the pixels of ``mask`` (H, W) whose source is inside the frame; NaN when there are none."""
    warped, inside = warp_previous(prev, flow)
    diff = np.abs(warped - _float(cur)).mean(axis=-1)
    m = inside if mask is None else inside & np.asarray(mask, bool)
    return float(diff[m].mean()) if m.any() else float("nan")


def flicker_of_sequence(frames, flows, masks=None) -> np.ndarray:
    """Warping error of every frame of a sequence ``frames`` (T, H, W, 3) with ``flows`` (T, H, W, 2) (``flows[t]``
    from frame t to t-1) inside ``masks`` (T, H, W) or everywhere: ``(T,)``, NaN for the first frame."""
    out = np.full(len(frames), np.nan)
    for t in range(1, len(frames)):
        out[t] = warping_error(frames[t - 1], frames[t], flows[t], None if masks is None else masks[t])
    return out


# ------------------------------------------------------------------------------------ parameter distance


def parameter_features(q, camera, exp_std) -> np.ndarray:
    """Normalised parameters (T, K + 3): ``q / exp_std`` and the rotation vector in units of
    :data:`ROTATION_UNIT_DEG` degrees (``camera[:, :3]``, radians). A zero ``exp_std`` counts as 1."""
    q = np.asarray(q, np.float64)
    std = np.asarray(exp_std, np.float64)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    rot = np.degrees(np.asarray(camera, np.float64)[:, :3]) / ROTATION_UNIT_DEG
    return np.hstack([q / std, rot])


def nearest_distance(features, train, query) -> tuple[np.ndarray, np.ndarray]:
    """For each ``query`` row of ``features`` (T, D), the distance to the nearest ``train`` row and that row's index
    (``(distances (N,), frames (N,))``); rows with non-finite features are skipped as training frames and give NaN
    (frame -1) as queries."""
    f = np.asarray(features, np.float64)
    train = np.asarray(train, np.int64)
    train = train[np.isfinite(f[train]).all(axis=1)]
    query = np.asarray(query, np.int64)
    dist, near = np.full(len(query), np.nan), np.full(len(query), -1, np.int64)
    if not len(train):
        return dist, near
    b = f[train]
    for i, t in enumerate(query):
        if not np.isfinite(f[t]).all():
            continue
        d = np.sqrt(((b - f[t]) ** 2).sum(axis=1))
        j = int(d.argmin())
        dist[i], near[i] = d[j], train[j]
    return dist, near


def spearman(x, y) -> float:
    """Spearman rank correlation of the finite pairs (NaN with fewer than 3 or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


# ------------------------------------------------------------------------------------------------ figures


def flicker_plot(frames, series: dict, out_png, title: str) -> None:
    """Warping error per held-out frame, one panel per region (face, crop); ``series``: {method: {region: (N,)}},
    the real video's own value (``real``) in black, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FLICKER_REGIONS), figsize=(5.4 * len(FLICKER_REGIONS), 4.6), sharex=True, squeeze=False)
    titles = {"face": "face (blend mask)", "crop": "whole head crop"}
    for ax, region in zip(axes[0], FLICKER_REGIONS):
        for i, (method, values) in enumerate(series.items()):
            v = np.asarray(values[region], float)
            # the network drawn last and bold, the real video dashed black, the baselines thin behind them
            style = {"color": "k", "ls": "--", "lw": 1.3, "zorder": 3} if method == "real" else (
                {"color": f"C{i}", "lw": 1.8, "zorder": 4} if method == "gan" else {"color": f"C{i}", "lw": 0.9, "alpha": 0.7, "zorder": 2})
            ax.plot(frames, v, marker=".", ms=3, label=f"{method}: mean {np.nanmean(v) if np.isfinite(v).any() else float('nan'):.4f}", **style)
        ax.set_title(titles[region], fontsize=11)
        ax.set_xlabel("held-out frame", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    axes[0, 0].set_ylabel("warping error |frame t - warped t-1| (0-1)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def distance_plot(frames, distance, error, out_png, title: str, rho: float) -> None:
    """Left: each held-out frame's face-region error against its distance to the nearest training frame; right:
    both over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames, distance, error = np.asarray(frames), np.asarray(distance, float), np.asarray(error, float)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
    sc = ax.scatter(distance, error, c=frames, cmap="viridis", s=18)
    fig.colorbar(sc, ax=ax, label="held-out frame")
    ax.set_xlabel(f"distance to the nearest training frame (expression in std, rotation in {ROTATION_UNIT_DEG:g} deg)", fontsize=9)
    ax.set_ylabel("GAN face-region E_col", fontsize=10)
    ax.set_title(f"Spearman rho = {rho:.2f}", fontsize=10)
    ax.grid(alpha=0.3)
    bx.plot(frames, distance, color="C0", lw=1.3, marker=".", ms=4)
    bx.set_xlabel("held-out frame", fontsize=10)
    bx.set_ylabel("distance to the training frames", color="C0", fontsize=10)
    bx.grid(alpha=0.3)
    cx = bx.twinx()
    cx.plot(frames, error, color="C3", lw=1.1, marker=".", ms=4)
    cx.set_ylabel("GAN face-region E_col", color="C3", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def pair_distance_plot(distance, reference: float, out_png, title: str) -> None:
    """A pair's transferred frames' distance to the target's training frames over time, with ``reference`` (the
    target's own held-out frames' 95th percentile) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distance = np.asarray(distance, float)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(np.arange(len(distance)), distance, lw=1.2, color="C0", label="transferred parameters")
    if np.isfinite(reference):
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"the target's own held-out frames, p95 ({reference:.2f})")
    ax.set_xlabel("output frame (source frame)", fontsize=10)
    ax.set_ylabel(f"distance to the nearest training frame\n(expression in std, rotation in {ROTATION_UNIT_DEG:g} deg)", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
