"""How faithfully an expression arrives: two sets of :mod:`deep_puppets.expression_signals` compared per signal
(Pearson r, amplitude ratio), blinks matched as events (recall, precision), a JSON summary and a figure.

The pair's measurement (:func:`fidelity_summary`, job ``expression_fidelity``): the *source* is the signals of
the source video's detected landmarks (independent of any fit); the *transferred* signals are measured on the
target's transferred mesh (its 478 landmark vertices for the transfer's p, q and camera, projected to the
target's image); the *ceiling* is the source's own fitted track projected the same way against the same detected
landmarks, i.e. what tracking and smoothing alone keep. Per signal:

- ``r``: Pearson correlation over the frames valid in both (1 = the signal rises and falls together);
- ``a``: amplitude ratio, the 5–95 % range of the measured signal over the source's (1 = same amplitude; for
  mouth and brows both are relative to each face's size, so a = 0.5 is half the movement; the eye apertures are
  each divided by their own face's rest aperture first, i.e. relative closure, a = 1 when both eyes close by the
  same fraction of their open aperture, the raw ratio kept as ``amplitude_absolute``);
- blinks (eye aperture, mean of both eyes, below half its own median for ≥ 2 frames,
  :func:`deep_puppets.expression_signals.blink_events`): ``recall`` = share of the source's blinks with a
  blink in the measured signal within ±2 frames, ``precision`` = share of the measured blinks that match one
  of the source's (one-to-one); None when there is nothing to count.

``vs_ceiling`` puts the transfer next to the ceiling: ``r_gap`` = r(ceiling) − r(transferred) and
``a_relative`` = a(transferred) / a(ceiling). In ``expression`` mode the target keeps its own head motion,
so only the expression signals are compared for the transfer (the ceiling keeps all of them).
"""

from __future__ import annotations

import numpy as np

from .expression_signals import APERTURES, EXPRESSION_SIGNALS, HEAD_SIGNALS, SIGNALS, blink_events, rest_value, signal_range
from .files import atomic_path

MATCH_FRAMES = 2  # blinks match when their nearest frames are at most this many frames apart


def _both(a, b, valid):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return ok if valid is None else ok & np.asarray(valid, bool)


def pearson(a, b, valid=None) -> float:
    """Pearson correlation of two signals over frames valid and finite in both (NaN when undefined)."""
    ok = _both(a, b, valid)
    if ok.sum() < 3:
        return float("nan")
    x, y = np.asarray(a, float)[ok], np.asarray(b, float)[ok]
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def amplitude_ratio(reference, measured, valid=None) -> float:
    """5–95 % range of ``measured`` over that of ``reference``, on the frames valid and finite in both."""
    ok = _both(reference, measured, valid)
    ref = signal_range(np.asarray(reference, float)[ok])
    return float(signal_range(np.asarray(measured, float)[ok]) / ref) if ref > 0 else float("nan")


def relative_closure_scale(reference, measured, valid=None) -> float:
    """The factor turning an eye aperture's absolute amplitude ratio into its *relative* one: the reference's rest
    aperture over the measured one (:func:`rest_value`, median of the open frames, on the frames valid and finite
    in both), i.e. the ratio of the two signals each divided by its own rest (NaN when a rest is not positive)."""
    ok = _both(reference, measured, valid)
    rest_ref = rest_value(np.asarray(reference, float)[ok], aperture=True)
    rest_mea = rest_value(np.asarray(measured, float)[ok], aperture=True)
    return float(rest_ref / rest_mea) if rest_ref > 0 and rest_mea > 0 else float("nan")


def signal_scores(reference: dict, measured: dict, valid=None, names=SIGNALS) -> dict:
    """Per signal name: ``{"r", "a", "n", "source_range"}`` of ``measured`` against ``reference`` (dicts of (T,) arrays);
    ``source_range`` (the reference's 5–95 % range) tells whether there was movement to measure: r and a of a
    signal that barely moves in the source (a closed mouth, a still head) are noise.

    Eye apertures (:data:`APERTURES`) are compared as fractions of each face's own rest aperture (relative
    closure: two people whose open eyes differ both blink fully with a = 1); their ``amplitude_absolute`` keeps
    the ratio of the raw apertures (lid gap / eye width) and ``rest_source`` / ``rest_measured`` the two rests."""
    out = {}
    for k in names:
        ok = _both(reference[k], measured[k], valid)
        out[k] = {"r": pearson(reference[k], measured[k], ok), "a": amplitude_ratio(reference[k], measured[k], ok), "n": int(ok.sum()),
                  "source_range": signal_range(np.asarray(reference[k], float)[ok])}  # fmt: skip
        if k in APERTURES:
            ref, mea = np.asarray(reference[k], float)[ok], np.asarray(measured[k], float)[ok]
            out[k].update(amplitude_absolute=out[k]["a"], a=out[k]["a"] * relative_closure_scale(ref, mea),
                          rest_source=rest_value(ref, aperture=True), rest_measured=rest_value(mea, aperture=True))  # fmt: skip
    return out


def blink_aperture(signals: dict) -> np.ndarray:
    """The aperture blinks are found in: the mean of both eyes'."""
    return 0.5 * (np.asarray(signals[APERTURES[0]], float) + np.asarray(signals[APERTURES[1]], float))


def match_events(reference: list, measured: list, tolerance: int = MATCH_FRAMES) -> int:
    """How many events (start, stop exclusive) match one-to-one (greedy in time): overlapping, or their nearest
    frames at most ``tolerance`` frames apart."""
    used = np.zeros(len(measured), bool)
    matched = 0
    for s, e in reference:
        for j, (s2, e2) in enumerate(measured):
            if not used[j] and s2 < e + tolerance and s < e2 + tolerance:
                used[j] = True
                matched += 1
                break
    return matched


def blink_scores(reference: dict, measured: dict, valid=None, tolerance: int = MATCH_FRAMES) -> dict:
    """Blink recall and precision of ``measured`` against ``reference`` (signal dicts), on ``valid`` frames."""
    ev_ref = blink_events(blink_aperture(reference), valid)
    ev_mea = blink_events(blink_aperture(measured), valid)
    matched = match_events(ev_ref, ev_mea, tolerance)
    return {
        "recall": matched / len(ev_ref) if ev_ref else None,
        "precision": matched / len(ev_mea) if ev_mea else None,
        "n_source": len(ev_ref),
        "n_measured": len(ev_mea),
        "matched": matched,
        "source_events": [list(e) for e in ev_ref],
        "measured_events": [list(e) for e in ev_mea],
    }


def compared_signals(mode: str) -> tuple[str, ...]:
    """The signals compared for a transfer in ``mode``: all, or the expression ones in ``expression`` mode."""
    return EXPRESSION_SIGNALS if mode == "expression" else SIGNALS


def fidelity_summary(source: dict, transferred: dict, transfer_valid, ceiling: dict, ceiling_valid, mode: str) -> dict:
    """The pair's summary: ``transferred`` (frames aligned with ``source``, valid where ``transfer_valid``) and the
    ``ceiling`` (the source's track, valid where ``ceiling_valid``), each against the ``source`` signals."""
    names = compared_signals(mode)
    out = {
        "mode": mode,
        "signals": list(names),
        "transferred": signal_scores(source, transferred, transfer_valid, names),
        "ceiling": signal_scores(source, ceiling, ceiling_valid, SIGNALS),
        "blinks": {"transferred": blink_scores(source, transferred, transfer_valid), "ceiling": blink_scores(source, ceiling, ceiling_valid)},
    }
    out["vs_ceiling"] = {
        k: {
            "r_gap": out["ceiling"][k]["r"] - out["transferred"][k]["r"],
            "a_relative": out["transferred"][k]["a"] / out["ceiling"][k]["a"] if out["ceiling"][k]["a"] else float("nan"),
        }
        for k in names
    }
    return out


def fidelity_figure(out_png, source: dict, transferred: dict, transfer_valid, ceiling: dict, ceiling_valid, summary: dict, fps: float, title: str) -> None:
    """Per signal, the source's detected signal, the transferred one and the source's track over time, each as
    its change from its own rest (:func:`rest_value`; eye apertures as a fraction of it, relative closure), with
    r / a in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = set(summary["signals"])
    fig, axes = plt.subplots(4, 3, figsize=(14, 10), sharex=True)
    t = np.arange(len(source[SIGNALS[0]])) / fps
    blinks = summary["blinks"]["transferred"]["source_events"]
    for ax, k in zip(axes.ravel(), SIGNALS):
        curves = (
            ("source (detected)", source[k], None, dict(color="k", lw=1.0)),
            ("source track (ceiling)", ceiling[k], ceiling_valid, dict(color="#1f77b4", lw=0.8, ls="--")),
            ("transferred", transferred[k], transfer_valid, dict(color="#d62728", lw=1.1)),
        )
        for label, y, ok, style in curves:
            y = np.asarray(y, float) if ok is None else np.where(ok, y, np.nan)
            if label == "transferred" and k not in compared:
                continue
            ax.plot(t, y / rest_value(y, aperture=True) - 1 if k in APERTURES else y - rest_value(y), label=label, **style)
        if k in APERTURES:
            for s, e in blinks:
                ax.axvspan(s / fps, e / fps, color="0.85", lw=0)
        c = summary["ceiling"][k]
        head = f"ceiling r {c['r']:.2f} a {c['a']:.2f}"
        if k in compared:
            m = summary["transferred"][k]
            raw = f" (raw {m['amplitude_absolute']:.2f})" if "amplitude_absolute" in m else ""
            head = f"r {m['r']:.2f} a {m['a']:.2f}{raw} | " + head
        elif k in HEAD_SIGNALS:
            head = "not compared (target's own head motion) | " + head
        ax.set_title(f"{k}: {head}", fontsize=8)
        ax.set_ylabel("aperture / own rest − 1" if k in APERTURES else "change from own rest", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    b = summary["blinks"]["transferred"]
    fmt = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    fig.suptitle(f"{title} · change from each face's rest (eyes: relative closure) · blinks: recall {fmt(b['recall'])}, precision {fmt(b['precision'])} "
                 f"({b['n_source']} in the source, {b['n_measured']} transferred; grey = source blinks)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
