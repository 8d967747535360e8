"""Print the expression-fidelity table (README "Expression fidelity") of one or more results folders as markdown.

    .venv/bin/python scripts/fidelity_table.py person-before=RESULTS_A person=RESULTS_B ict=RESULTS_C

Each ``label=folder`` is a results folder whose ``pairs/*/fidelity/summary.json`` were written by the
``expression_fidelity`` rule. Per pair: the source's tracking ceiling of each model (once per distinct ceiling)
and each labelled transfer, as r / a for the eye apertures (a as relative closure), mouth opening, yaw, pitch and
roll, blink recall / precision, and the bars of issue 15 each is checked against: r ≥ 0.9 (mouth, eyes, yaw,
roll) or ≥ 0.85 (pitch), r within 0.05 of the same model's ceiling, eye amplitude 0.8–1.25 × the ceiling's,
blink recall and precision ≥ 90 %. A cell marked ✗ misses a bar; the last column lists the misses with numbers.
"""

from __future__ import annotations

import glob
import json
import os
import sys

COLUMNS = (("eye_aperture_left", "eye L"), ("eye_aperture_right", "eye R"), ("mouth_open", "mouth"), ("yaw", "yaw"), ("pitch", "pitch"), ("roll", "roll"))
R_MIN = {"pitch": 0.85}  # every other column: 0.9
R_GAP = 0.05
EYE_A = (0.8, 1.25)
BLINK_MIN = 0.9
EYES = ("eye_aperture_left", "eye_aperture_right")


def _f(v, pct=False) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:.0%}" if pct else f"{v:.2f}"


def misses(scores: dict, blinks: dict, ceiling: dict | None) -> dict:
    """Per column key (and "blinks"): the bars ``scores`` misses, as one short text with the numbers."""
    out: dict = {}
    for k, name in COLUMNS:
        if k not in scores:
            continue
        s, lo, bad = scores[k], R_MIN.get(k, 0.9), []
        c = ceiling[k] if ceiling is not None else None
        r_bad = [f"< {lo}"] if not s["r"] >= lo else []
        if c is not None and not c["r"] - s["r"] <= R_GAP:
            r_bad.append(f"ceiling {_f(c['r'])} (−{_f(c['r'] - s['r'])})")
        if r_bad:
            bad.append(f"r {_f(s['r'])}: " + ", ".join(r_bad))
        rel = s["a"] / c["a"] if c is not None and c["a"] else float("nan")
        if c is not None and k in EYES and not EYE_A[0] <= rel <= EYE_A[1]:
            bad.append(f"a {_f(rel)} × the ceiling's")
        if bad:
            out[k] = f"{name} " + ", ".join(bad)
    if blinks["n_source"]:
        bad = [f"{key} {_f(blinks[key], True)}" for key in ("recall", "precision") if blinks[key] is None or blinks[key] < BLINK_MIN]
        if bad:
            out["blinks"] = "blink " + ", ".join(bad)
    return out


def _row(label: str, scores: dict, blinks: dict, ceiling: dict | None) -> str:
    bad = misses(scores, blinks, ceiling)
    cells = [f"{_f(scores[k]['r'])} / {_f(scores[k]['a'])}{' ✗' if k in bad else ''}" if k in scores else "–" for k, _ in COLUMNS]
    b = f"{_f(blinks['recall'], True)} / {_f(blinks['precision'], True)} ({blinks['n_source']}→{blinks['n_measured']}){' ✗' if 'blinks' in bad else ''}"
    listed = "; ".join(bad.values()) or "all met"
    return f"| | {label} | " + " | ".join(cells) + f" | {b} | {listed} |"


def table(folders: list[tuple[str, str]]) -> str:
    """The markdown table of labelled results folders (see the module docstring)."""
    summaries: dict = {}
    for label, root in folders:
        files = sorted(glob.glob(os.path.join(root, "pairs", "*", "fidelity", "summary.json")))
        if not files:
            raise SystemExit(f"{root}: no pairs/*/fidelity/summary.json")
        for path in files:
            with open(path) as fh:
                s = json.load(fh)
            if s["mode"] != "expression":
                summaries.setdefault(s["pair"], []).append((label, s))
    head = "| pair | row | " + " | ".join(f"{n} r / a" for _, n in COLUMNS) + " | blinks recall / precision (source→measured) | bars missed |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for pair, rows in summaries.items():
        lines.append(f"| **{pair}** |" + " |" * (len(COLUMNS) + 3))
        ceilings: dict = {}  # one row per distinct ceiling (the same model gives the same one), named by its transfers
        for label, s in rows:
            ceilings.setdefault(json.dumps(s["ceiling"], sort_keys=True), []).append((label, s))
        for group in ceilings.values():
            s = group[0][1]
            lines.append(_row(f"ceiling ({', '.join(label for label, _ in group)})", s["ceiling"], s["blinks"]["ceiling"], None))
            for label, s in group:
                lines.append(_row(label, s["transferred"], s["blinks"]["transferred"], s["ceiling"]))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if not argv or any("=" not in a for a in argv):
        raise SystemExit(__doc__)
    print(table([tuple(a.split("=", 1)) for a in argv]))


if __name__ == "__main__":
    main(sys.argv[1:])
