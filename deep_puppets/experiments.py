"""Experiments: variants of the ``gan`` settings trained on the same target and held-out split, compared.

The ``experiments`` config section names variants (each overrides keys of the ``gan`` section only) and the
seeds and targets they run on; :func:`expand_experiments` checks it while the Snakefile is parsed (one-line
:class:`ConfigError` naming the key) and expands it into a plan; :func:`variant_gan` is the ``gan`` section of one
variant and seed. Every upstream result (conditioning, flow, track) is shared with the main run, so a variant
differs from the default only in what it overrides. :func:`experiment_records` / :func:`variant_table` aggregate
the held-out evaluations over seeds (mean ± spread), :func:`quality_plot` draws quality against training minutes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .config import job_params, load_schema
from .errors import ConfigError, InputError
from .files import atomic_path

DEFAULT_VARIANT = "default"  # the config's own gan settings, always part of every table
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENTRY_KEYS = ("gan", "seeds")
# gan keys a variant may not change: they would no longer train on the same split or the shared files
FIXED_GAN_KEYS = {
    "held_out_fraction": "every variant is scored on the same held-out frames",
    "flow_preset": "the flow file is shared with the main run",
    "seed": "list the seeds in 'seeds'",
}
# (column, region, metric) of the table: the GAN's held-out means per region
TABLE_METRICS = (
    ("face_psnr", "face", "psnr"),
    ("head_psnr", "head", "psnr"),
    ("frame_psnr", "frame", "psnr"),
    ("face_ssim", "face", "ssim"),
    ("head_ssim", "head", "ssim"),
    ("frame_ssim", "frame", "ssim"),
    ("face_e_col", "face", "e_col"),
)
# (column, region) of the table: the GAN's flicker (warping error against the real video's flow) in excess of the
# real video's own, per flicker region of the evaluation (lower is steadier; 0 = as steady as the real video)
FLICKER_METRICS = (
    ("face_flicker_excess", "face"),
    ("crop_flicker_excess", "crop"),
)
# (column, signals, statistic) of the table: the motion fidelity of the run's re-enactments against the conditioning
# they were asked to follow (``output_fidelity/summary.json``, ``vs_conditioning``): correlation r and amplitude
# ratio a, mean over the target's pairs (and both eyes)
MOTION_METRICS = (
    ("mouth_r", ("mouth_open",), "r"),
    ("mouth_a", ("mouth_open",), "a"),
    ("eyes_r", ("eye_aperture_left", "eye_aperture_right"), "r"),
    ("eyes_a", ("eye_aperture_left", "eye_aperture_right"), "a"),
)
COLUMNS = (*(m[0] for m in TABLE_METRICS), *(m[0] for m in FLICKER_METRICS), *(m[0] for m in MOTION_METRICS))


def _seeds(value, key: str) -> list[int]:
    if not isinstance(value, list) or not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
        raise ConfigError(f"'{key}': {value!r} is not a non-empty list of seeds (integers >= 0)")
    if len(set(value)) != len(value):
        raise ConfigError(f"'{key}': {value!r} lists a seed twice")
    return [int(s) for s in value]


def _check_gan_overrides(name: str, overrides, gan_schema: dict) -> dict:
    import jsonschema

    where = f"experiments.variants.{name}.gan"
    if not isinstance(overrides, dict):
        raise ConfigError(f"'{where}': expected a mapping of gan settings, got {overrides!r}")
    props = gan_schema["properties"]
    for key, value in overrides.items():
        if key not in props:
            raise ConfigError(f"'{where}': unknown gan key {key!r}")
        if key in FIXED_GAN_KEYS:
            raise ConfigError(f"'{where}.{key}': a variant may not change it ({FIXED_GAN_KEYS[key]})")
        errors = list(jsonschema.Draft202012Validator(props[key]).iter_errors(value))
        if errors:
            raise ConfigError(f"'{where}.{key}': {jsonschema.exceptions.best_match(errors).message}")
    return dict(overrides)


def expand_experiments(config: dict, targets) -> dict:
    """The prepared ``config``'s ``experiments`` section checked and expanded: ``{"targets": [...], "variants":
    {name: {"overrides": {...}, "seeds": [...]}}}``, the variant ``default`` (no overrides) first. ``targets``: the
    configured pairs' targets (the default, and what ``experiments.targets`` must name)."""
    from .needs import check_stage_settings

    section = config.get("experiments") or {}
    gan_schema = load_schema()["properties"]["gan"]
    seeds = _seeds(section["seeds"], "experiments.seeds") if section.get("seeds") is not None else [int(config["gan"]["seed"])]
    chosen = section.get("targets")
    known = sorted(targets)
    if chosen is None:
        chosen = known
    for i, video in enumerate(chosen):
        if video not in known:
            raise ConfigError(f"'experiments.targets[{i}]': {video!r} is not the target of a pair (targets: {', '.join(known) or 'none'})")
    variants = {DEFAULT_VARIANT: {"overrides": {}, "seeds": seeds}}
    for name, entry in (section.get("variants") or {}).items():
        where = f"experiments.variants.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(f"'{where}': a variant's name must be an identifier (letters, digits and '_', not starting with a digit)")
        if name == DEFAULT_VARIANT:
            raise ConfigError(f"'{where}': the name {DEFAULT_VARIANT!r} is reserved for the gan section's own settings")
        if not isinstance(entry, dict):
            raise ConfigError(f"'{where}': expected a mapping with 'gan' (and optionally 'seeds'), got {entry!r}")
        for key in entry:
            if key not in ENTRY_KEYS:
                reason = " - a variant changes gan settings only; a different render needs its own conditioning" if key in config else ""
                raise ConfigError(f"'{where}': unknown key {key!r}{reason} (known: gan, seeds)")
        overrides = _check_gan_overrides(name, entry.get("gan", {}), gan_schema)
        try:
            check_stage_settings({**config, "gan": {**config["gan"], **overrides}})
        except ConfigError as e:
            raise ConfigError(f"'{where}': {e}") from None
        variants[name] = {"overrides": overrides, "seeds": _seeds(entry["seeds"], f"{where}.seeds") if "seeds" in entry else seeds}
    return {"targets": list(chosen), "variants": variants}


def variant_gan(config: dict, plan: dict, variant: str, seed) -> dict:
    """The ``gan`` section of ``variant`` trained with ``seed``: the config's, overridden by the variant's keys."""
    return {**job_params(config, "gan"), **plan["variants"][variant]["overrides"], "seed": int(seed)}


def experiment_runs(plan: dict) -> list[tuple[str, int]]:
    """Every ``(variant, seed)`` of the plan, in table order."""
    return [(name, s) for name, v in plan["variants"].items() for s in v["seeds"]]


def describe_overrides(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the gan section's settings"


# ------------------------------------------------------------------------------------------------ aggregation


def training_minutes(benchmark_tsv) -> tuple[float, float]:
    """``(wall-clock, CPU)`` minutes of a training job from its Snakemake benchmark file (columns ``s`` and
    ``cpu_time``; CPU NaN where the file has none). CPU minutes depend less on other jobs sharing the machine."""
    import pandas as pd

    try:
        b = pd.read_csv(benchmark_tsv, sep="\t")
        s = b["s"].to_numpy(float)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(benchmark_tsv, f"is not a Snakemake benchmark file with a column 's' ({e})") from None
    if not len(s) or not np.isfinite(s).all():
        raise InputError(benchmark_tsv, "holds no finite run time")
    cpu = pd.to_numeric(b["cpu_time"], errors="coerce").to_numpy(float) if "cpu_time" in b else np.array([math.nan])
    return float(s.mean()) / 60.0, float(cpu.mean()) / 60.0


def motion_record(fidelity: list[dict], where=()) -> dict:
    """The :data:`MOTION_METRICS` columns of one run from its pairs' output-fidelity summaries (NaN without pairs);
    ``where``: the summaries' files, named in the error about a summary that lacks a value."""
    row = {}
    for column, signals, statistic in MOTION_METRICS:
        values = []
        for k, summary in enumerate(fidelity):
            try:
                values += [float(summary["vs_conditioning"][signal][statistic]) for signal in signals]
            except (KeyError, TypeError, ValueError) as e:
                name = where[k] if k < len(where) else f"output-fidelity summary {k}"
                raise InputError(name, f"is not an output-fidelity summary with {e} against the conditioning") from None
        values = [v for v in values if math.isfinite(v)]
        row[column] = float(np.mean(values)) if values else math.nan
    return row


def experiment_record(variant: str, seed: int, summary: dict, minutes: float, cpu_minutes: float = math.nan, where="",
                      method: str = "gan", motion: dict | None = None) -> dict:
    """One run's row: variant, seed, training minutes (wall clock and CPU), ``method``'s held-out means
    (:data:`TABLE_METRICS`), its flicker in excess of the real video's (:data:`FLICKER_METRICS`; NaN where the
    summary has no flicker, e.g. no consecutive held-out frames were scored) and ``motion``
    (:func:`motion_record`; NaN columns when None)."""
    row = {"variant": variant, "seed": int(seed), "minutes": float(minutes), "cpu_minutes": float(cpu_minutes)}
    row.update(motion if motion is not None else {m[0]: math.nan for m in MOTION_METRICS})
    try:
        means = summary["mean"][method]
        for column, region, metric in TABLE_METRICS:
            row[column] = float(means[region][metric])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(where or variant, f"is not an evaluation summary with {method}'s mean {e} per region") from None
    excess = ((summary.get("flicker") or {}).get("excess_over_real") or {}).get(method) or {}
    for column, region in FLICKER_METRICS:
        value = excess.get(region)
        row[column] = math.nan if value is None else float(value)
    return row


def variant_table(records: list[dict], overrides: dict[str, dict] | None = None):
    """Per variant (in order of first appearance): seeds run, and mean and spread (sample standard deviation
    over seeds; NaN with one seed) of the training minutes (wall clock and CPU) and every column of :data:`COLUMNS`."""
    import pandas as pd

    if not records:
        raise ValueError("no experiment runs to tabulate")
    df = pd.DataFrame(records)
    rows = []
    for variant, g in df.groupby("variant", sort=False):
        row = {"variant": variant, "settings": describe_overrides((overrides or {}).get(variant, {})), "seeds": " ".join(str(s) for s in g["seed"]),
               "n_seeds": len(g)}
        for column in ("minutes", "cpu_minutes", *COLUMNS):
            v = g[column].to_numpy(float)
            row[column] = float(v.mean())
            row[f"{column}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(table, csv_path, html_path, title: str) -> None:
    """The table as CSV (full precision) and as an HTML page (mean ± spread, rounded)."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    shown = table[["variant", "settings", "seeds"]].copy()
    for column in ("minutes", "cpu_minutes", *COLUMNS):
        digits = 4 if column.endswith("flicker_excess") else 3 if column.endswith(("ssim", "e_col", "_r", "_a")) else 2
        shown[column] = [f"{m:.{digits}f}" + ("" if math.isnan(s) else f" ± {s:.{digits}f}") for m, s in zip(table[column], table[f"{column}_sd"])]
    html = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>\n<h1>{title}</h1>\n"
            "<p>Held-out self-reenactment at full resolution (the GAN's mean per region); mean ± sample standard deviation over "
            "seeds; minutes: wall-clock training time (jobs running side by side share the cores), cpu_minutes: the CPU time "
            "the training used; *_flicker_excess: the mean warping error of consecutive held-out outputs (with the real "
            "video's flow, RGB 0-1) minus the real video's own, in the face and the whole head crop (0: as steady as the "
            "real video); mouth_r, mouth_a, eyes_r, eyes_a: the run's re-enactments of the target's pairs against the "
            "conditioning they follow (landmarks detected on the output): correlation and amplitude ratio of the mouth "
            "opening and the eye apertures, mean over pairs (1: the output moves as its conditioning).</p>\n"
            + shown.to_html(index=False, border=0) + "\n</body></html>\n")
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(html)


def quality_plot(table, out_png, title: str, baselines: dict | None = None) -> None:
    """Held-out PSNR and SSIM per region, the flicker in excess of the real video's and the re-enactments' mouth
    r and a against training minutes: one point per variant, error bars the spread over seeds; ``baselines``
    ({method: {column: value}}) drawn as dotted horizontal lines for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = [(c, f"{region}: {metric.upper()}", metric.upper() + (" (dB)" if metric == "psnr" else "")) for c, region, metric in TABLE_METRICS
               if metric != "e_col"]
    steadiness = [(c, f"{region}: flicker above the real video", "warping error − real's (RGB 0-1)") for c, region in FLICKER_METRICS]
    motion = [("mouth_r", "re-enactments: mouth r", "correlation with the conditioning"),
              ("mouth_a", "re-enactments: mouth a", "amplitude / the conditioning's")]
    panels = quality[:3] + steadiness[:1] + motion[:1] + quality[3:] + steadiness[1:] + motion[1:]  # a PSNR row, an SSIM row
    fig, axes = plt.subplots(2, 5, figsize=(22, 8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (column, heading, ylabel) in zip(axes.ravel(), panels):
        for i, r in enumerate(table.itertuples(index=False)):
            r = r._asdict()
            ax.errorbar(r["minutes"], r[column], xerr=np.nan_to_num(r["minutes_sd"]), yerr=np.nan_to_num(r[f"{column}_sd"]), fmt="o",
                        color=colours(i % 10), capsize=3, label=f"{r['variant']} (n={r['n_seeds']})")
            ax.annotate(r["variant"], (r["minutes"], r[column]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        for j, (method, values) in enumerate((baselines or {}).items()):
            if column in values and np.isfinite(values[column]):
                ax.axhline(values[column], ls=":", color="grey", lw=1)
                ax.annotate(method, (0, values[column]), xycoords=("axes fraction", "data"), fontsize=7, color="grey", xytext=(2, 2 + 6 * j),
                            textcoords="offset points")
        ax.set_title(heading)
        ax.set_xlabel("training minutes")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
