"""Motion fidelity of the synthesised output: the named signals (:mod:`deep_puppets.expression_signals`) of the
landmarks detected on the re-enactment video, compared per frame with the conditioning it was asked to follow and
with the source (job ``output_fidelity``, :func:`deep_puppets.jobs.transfer.output_fidelity`).

Three signal sets, on the output's frames (output frame k shows pair frame ``pair_frames[k]``,
:func:`deep_puppets.reenactment.pair_frames_for_output`, whose source frame is the transfer's ``source_frame``):

- **output**: the detector's landmarks on the re-enactment (full resolution); frames where it finds no face while
  the conditioning drew one are *missing* (``missing_fraction``), never scored;
- **conditioning**: the transferred mesh's projected landmarks with its named expressions, what the pair render
  drew (the "transferred" signals of :mod:`deep_puppets.expression_fidelity`);
- **source**: the source video's detected landmarks.

``vs_conditioning`` (all signals: in ``expression`` mode the render keeps the target's own head motion and so does
the output) and ``vs_source`` (only the expression signals in ``expression`` mode) hold, per signal, r and the
amplitude ratio a of :func:`deep_puppets.expression_fidelity.signal_scores` with the conditioning / the source as
the reference; blinks are matched as events the same way. ``conditioning_vs_source`` is the render against the
source on the same frames, so that a(output/source) ≈ a(output/conditioning) · a(conditioning/source).

``bar``: the issue's criterion for the generator, on the mouth opening against the conditioning: a ≥
:data:`MOUTH_A_BAR` with r ≥ :data:`MOUTH_R_BAR` (a network that pulls the mouth toward the target's typical face
keeps the timing, r, but shrinks the amplitude, a).
"""

from __future__ import annotations

import numpy as np

from .expression_fidelity import blink_scores, compared_signals, signal_scores
from .expression_signals import APERTURES, SIGNALS, rest_value
from .files import atomic_path

MOUTH_A_BAR = 0.85  # the output's mouth-opening amplitude over its conditioning's, at least
MOUTH_R_BAR = 0.9  # and their correlation, at least


def on_output_frames(signals: dict, index) -> dict:
    """Each signal of ``signals`` (dict of (T,) arrays) taken at ``index`` (one entry per output frame)."""
    index = np.asarray(index, np.int64)
    return {k: np.asarray(v, float)[index] for k, v in signals.items()}


def output_fidelity_summary(output: dict, output_valid, conditioning: dict, conditioning_valid, source: dict, source_valid, mode: str) -> dict:
    """The comparison on the output's frames (all arguments aligned per output frame: signal dicts and (T,) valid
    masks); see the module docstring for the keys."""
    out_ok, cond_ok, src_ok = (np.asarray(v, bool) for v in (output_valid, conditioning_valid, source_valid))
    if not len(out_ok) == len(cond_ok) == len(src_ok):
        raise ValueError(f"output, conditioning and source frames differ: {len(out_ok)}, {len(cond_ok)}, {len(src_ok)}")
    asked = int(cond_ok.sum())
    missing = int((cond_ok & ~out_ok).sum())
    src_names = compared_signals(mode)
    summary = {
        "mode": mode,
        "n_frames": len(out_ok),
        "n_detected": int(out_ok.sum()),
        "n_conditioned": asked,
        "missing_fraction": missing / asked if asked else None,
        "signals_conditioning": list(SIGNALS),
        "signals_source": list(src_names),
        "vs_conditioning": signal_scores(conditioning, output, out_ok & cond_ok, SIGNALS),
        "vs_source": signal_scores(source, output, out_ok & src_ok, src_names),
        "conditioning_vs_source": signal_scores(source, conditioning, cond_ok & src_ok, src_names),
        "blinks": {"vs_conditioning": blink_scores(conditioning, output, out_ok & cond_ok), "vs_source": blink_scores(source, output, out_ok & src_ok)},
    }
    mouth = summary["vs_conditioning"]["mouth_open"]
    summary["bar"] = {"signal": "mouth_open", "a": mouth["a"], "r": mouth["r"], "a_min": MOUTH_A_BAR, "r_min": MOUTH_R_BAR,
                      "passes": bool(mouth["a"] >= MOUTH_A_BAR and mouth["r"] >= MOUTH_R_BAR)}  # NaN compares False  # fmt: skip
    return summary


def _change(y, ok, k):
    y = np.where(ok, np.asarray(y, float), np.nan)
    return y / rest_value(y, aperture=True) - 1 if k in APERTURES else y - rest_value(y)


def output_fidelity_figure(out_png, output: dict, output_valid, conditioning: dict, conditioning_valid, source: dict, source_valid,
                           summary: dict, fps: float, title: str) -> None:  # fmt: skip
    """Per signal over time: the source (black), the conditioning (red, dashed) and the output (green), each as its
    change from its own rest (eye apertures as a fraction of it); frames without a face in the output are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 3, figsize=(14, 10), sharex=True)
    out_ok = np.asarray(output_valid, bool)
    t = np.arange(len(out_ok)) / fps
    missing = np.asarray(conditioning_valid, bool) & ~out_ok
    for ax, k in zip(axes.ravel(), SIGNALS):
        if k in summary["signals_source"]:
            ax.plot(t, _change(source[k], source_valid, k), color="k", lw=0.9, label="source (detected)")
        ax.plot(t, _change(conditioning[k], conditioning_valid, k), color="#d62728", lw=1.0, ls="--", label="conditioning (drawn)")
        ax.plot(t, _change(output[k], out_ok, k), color="#2ca02c", lw=1.2, label="output (detected)")
        for i in np.flatnonzero(missing):
            ax.axvspan(t[i] - 0.5 / fps, t[i] + 0.5 / fps, color="0.85", lw=0)
        c = summary["vs_conditioning"][k]
        head = f"vs cond. r {c['r']:.2f} a {c['a']:.2f}"
        if k in summary["vs_source"]:
            s = summary["vs_source"][k]
            head += f" | vs source r {s['r']:.2f} a {s['a']:.2f}"
        ax.set_title(f"{k}: {head}", fontsize=8)
        ax.set_ylabel("aperture / own rest − 1" if k in APERTURES else "change from own rest", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    b, bar = summary["blinks"]["vs_conditioning"], summary["bar"]
    fmt = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    verdict = "passes" if bar["passes"] else "misses"
    fig.suptitle(f"{title} · output vs its conditioning: mouth a {bar['a']:.2f}, r {bar['r']:.2f} ({verdict} a ≥ {bar['a_min']}, r ≥ {bar['r_min']}) · "
                 f"no face in {fmt(summary['missing_fraction'])} of the output (grey) · blinks recall {fmt(b['recall'])}, precision {fmt(b['precision'])}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
