"""scripts/fidelity_table.py: the README's fidelity table read from results folders, with the issue-15 bars marked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from deep_puppets.expression_fidelity import fidelity_summary
from deep_puppets.expression_signals import SIGNALS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fidelity_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("fidelity_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(root: Path, pair: str, summary: dict) -> None:
    d = root / "pairs" / pair / "fidelity"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({**summary, "pair": pair}))


def test_table_marks_missed_bars(tmp_path):
    t = np.arange(120)
    source = {k: np.sin(t / (5 + i)) + 2 for i, k in enumerate(SIGNALS)}
    for k in ("eye_aperture_left", "eye_aperture_right"):
        source[k] = np.where((t % 40) < 3, 0.02, 0.3)  # three blinks
    valid = np.ones(120, bool)
    good = fidelity_summary(source, source, valid, source, valid, "pose+expression")
    weak = {**source, "mouth_open": source["mouth_open"] + np.random.default_rng(0).normal(0, 1.0, 120), "eye_aperture_left": np.full(120, 0.3)}
    bad = fidelity_summary(source, weak, valid, source, valid, "pose+expression")
    _write(tmp_path / "a", "s__t__pose", good)
    _write(tmp_path / "b", "s__t__pose", bad)
    _write(tmp_path / "b", "s__t__expr", fidelity_summary(source, source, valid, source, valid, "expression"))  # left out
    lines = _script().table([("before", str(tmp_path / "b")), ("after", str(tmp_path / "a"))]).splitlines()
    assert len(lines) == 2 + 1 + 3  # header, rule, the pair, one shared ceiling, two transfers
    ceiling, before, after = lines[3:]
    assert ceiling.startswith("| | ceiling (before, after) |") and ceiling.endswith("| all met |")
    assert after.startswith("| | after |") and after.endswith("| all met |") and "✗" not in after
    assert "mouth r " in before and "< 0.9" in before and "eye L r" in before and "blink recall 0%" in before
