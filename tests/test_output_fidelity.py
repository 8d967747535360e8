"""Motion fidelity of the output (deep_puppets/output_fidelity.py, job output_fidelity in jobs/transfer.py): the
comparison on hand-made signal arrays (a damped mouth misses the bar, missing frames are counted and not scored, the
source comparison drops the head in expression mode), and the rule's outputs in the shared tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_puppets.expression_signals import EXPRESSION_SIGNALS, SIGNALS
from deep_puppets.output_fidelity import MOUTH_A_BAR, on_output_frames, output_fidelity_figure, output_fidelity_summary
from deep_puppets.video import probe_video

T = 150


def _signals(seed=0):
    t = np.arange(T)
    rng = np.random.default_rng(seed)
    s = {k: 1 + 0.2 * np.sin(t / (4 + i)) + 0.01 * rng.normal(size=T) for i, k in enumerate(SIGNALS)}
    for k in ("eye_aperture_left", "eye_aperture_right"):
        s[k] = np.where((t % 50) < 3, 0.02, 0.3)  # three blinks
    return s


def _damped(signals, name, factor):
    rest = np.median(signals[name])
    return {**signals, name: rest + factor * (signals[name] - rest)}


def test_a_damped_mouth_keeps_r_misses_the_amplitude_bar():
    cond = _signals()
    ok = np.ones(T, bool)
    s = output_fidelity_summary(_damped(cond, "mouth_open", 0.5), ok, cond, ok, cond, ok, "pose+expression")
    m = s["vs_conditioning"]["mouth_open"]
    assert m["r"] > 0.99 and m["a"] == pytest.approx(0.5, abs=0.02)
    assert s["bar"]["passes"] is False and s["bar"]["a"] == pytest.approx(0.5, abs=0.02)
    assert s["vs_conditioning"]["yaw"]["a"] == pytest.approx(1.0)
    assert s["blinks"]["vs_conditioning"]["recall"] == 1 and s["blinks"]["vs_conditioning"]["precision"] == 1
    s = output_fidelity_summary(_damped(cond, "mouth_open", 0.9), ok, cond, ok, cond, ok, "pose+expression")
    assert s["bar"]["passes"] is True and s["bar"]["a"] >= MOUTH_A_BAR


def test_missing_frames_are_counted_not_scored_and_expression_mode_compares_the_head_with_the_conditioning_only():
    cond, source = _signals(), _signals(1)
    out = _damped(cond, "mouth_open", 0.5)
    out_ok = np.ones(T, bool)
    out_ok[100:130] = False  # no face found in the output there ...
    out = {k: np.where(out_ok, v, np.nan) for k, v in out.items()}  # ... so no signal
    cond_ok = np.ones(T, bool)
    cond_ok[120:] = False  # nothing was drawn from frame 120 on: not missing
    s = output_fidelity_summary(out, out_ok, cond, cond_ok, source, np.ones(T, bool), "expression")
    assert (s["n_frames"], s["n_detected"], s["n_conditioned"]) == (T, T - 30, 120)
    assert s["missing_fraction"] == pytest.approx(20 / 120)
    assert s["vs_conditioning"]["mouth_open"]["n"] == 100 and s["vs_conditioning"]["mouth_open"]["a"] == pytest.approx(0.5, abs=0.03)
    assert set(s["vs_conditioning"]) == set(SIGNALS) and set(s["vs_source"]) == set(EXPRESSION_SIGNALS) == set(s["conditioning_vs_source"])
    with pytest.raises(ValueError, match="frames differ"):
        output_fidelity_summary(out, out_ok[:-1], cond, cond_ok, source, cond_ok, "expression")


def test_on_output_frames_repeats_pair_frames_and_the_figure_is_written(tmp_path):
    cond = _signals()
    idx = np.repeat(np.arange(T // 2), 2)  # a target at twice the source's rate
    on = on_output_frames(cond, idx)
    assert set(on) == set(SIGNALS) and len(on["mouth_open"]) == T and on["mouth_open"][3] == cond["mouth_open"][1]
    ok = np.ones(T, bool)
    ok[5:9] = False
    s = output_fidelity_summary(on, ok, on, np.ones(T, bool), on, np.ones(T, bool), "pose+expression")
    output_fidelity_figure(tmp_path / "f.png", on, ok, on, np.ones(T, bool), on, np.ones(T, bool), s, 25.0, "test")
    assert (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.slow
def test_rule_all_measures_every_pairs_output_in_the_tiny_run(tiny_full_run):
    """The shared tiny run made the rule's outputs (it is part of rule all): the detector ran on every output frame,
    every signal is scored (NaN -> null when the tiny generator's face is not found) and the figure exists."""
    pairs = sorted((tiny_full_run / "results" / "pairs").iterdir())
    assert pairs
    for pair in pairs:
        d = pair / "output_fidelity"
        s = json.loads((d / "summary.json").read_text())
        assert s["pair"] == pair.name and s["n_frames"] == probe_video(pair / "reenactment.mp4").n_frames > 0
        assert set(s["vs_conditioning"]) == set(SIGNALS) and set(s["signals_source"]) <= set(SIGNALS)
        assert 0 <= s["n_detected"] <= s["n_frames"] and s["detector"]["mediapipe"]
        assert s["missing_fraction"] is None or 0 <= s["missing_fraction"] <= 1
        assert set(s["bar"]) >= {"a", "r", "passes"} and (d / "output_fidelity.png").stat().st_size > 10_000
