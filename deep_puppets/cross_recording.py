"""Cross-recording self-reenactment: a person's generator, trained on one recording, scored on *other* recordings of
the same person — the honest measure of a person-specific model (a held-out third of the same clip shares its
lighting, clothes, camera and session).

The ``cross_recording`` config section lists ``{train: VIDEO, test: [VIDEO, ...]}`` entries; :func:`plan` checks it
while the Snakefile is parsed (one-line :class:`ConfigError` naming the key) and expands it into ``(train, test)``
runs. Each run (``snakemake cross_recording``; not part of the default run) gives the generator of ``train`` (the
one the workflow trains, on its own training part) the ``test`` recording's motion — its fitted model and track at
its crop boxes, drawn with ``train``'s texture (albedo and lighting, :func:`deep_puppets.jobs.render.render_cross`)
so that nothing of the test frames' appearance reaches the conditioning — and pastes the result with the face mask
over the test recording's real frames, scored like the held-out evaluation (:mod:`deep_puppets.gan.held_out`) on
every test frame with a face. The baselines draw only on the training recording's training frames: nearest-neighbour
retrieval by :func:`retrieval_features` (named signals measured on the detected landmarks of both recordings,
:mod:`deep_puppets.expression_signals`: the models' coefficients of two recordings are not in one basis), alpha
compositing (the test frame's rendered colour over the retrieved crop), the mean training crop.

:func:`cross_table` gathers the runs' summaries beside each training recording's own held-out evaluation.
"""

from __future__ import annotations

import html

import numpy as np

from .errors import ConfigError
from .evaluation import METHODS
from .expression_signals import SIGNALS, expression_signals
from .files import atomic_path

_ENTRY_KEYS = ("train", "test")


def plan(config: dict) -> list[tuple[str, str]]:
    """The prepared ``config``'s ``cross_recording`` section checked and expanded into ``(train, test)`` runs, in
    the section's order."""
    videos = config["videos"]
    runs: list[tuple[str, str]] = []
    section = config.get("cross_recording") or []
    if not isinstance(section, list):
        raise ConfigError(f"'cross_recording': expected a list of {{train: VIDEO, test: [VIDEO, ...]}}, got {section!r}")
    for i, entry in enumerate(section):
        where = f"cross_recording[{i}]"
        if not isinstance(entry, dict) or set(entry) - set(_ENTRY_KEYS) or "train" not in entry or "test" not in entry:
            raise ConfigError(f"'{where}': expected {{train: VIDEO, test: [VIDEO, ...]}}, got {entry!r}")
        train, tests = entry["train"], entry["test"]
        tests = [tests] if isinstance(tests, str) else tests
        if not isinstance(tests, list) or not tests:
            raise ConfigError(f"'{where}.test': expected a non-empty list of videos, got {entry['test']!r}")
        for key, name in (("train", train), *((f"test[{j}]", t) for j, t in enumerate(tests))):
            if not isinstance(name, str) or name not in videos:
                raise ConfigError(f"'{where}.{key}': unknown video {name!r} (known: {', '.join(sorted(videos)) or 'none'})")
        for j, test in enumerate(tests):
            if test == train:
                raise ConfigError(f"'{where}.test[{j}]': {test!r} is the training recording itself (its held-out frames are the "
                                  "evaluation's; list other recordings of the same person)")
            if (train, test) in runs:
                raise ConfigError(f"'{where}.test[{j}]': {train!r} -> {test!r} is listed twice")
            runs.append((train, test))
    return runs


def retrieval_features(landmarks: np.ndarray, valid) -> np.ndarray:
    """(T, len(SIGNALS)) features for retrieval across recordings: the named expression signals and head-angle
    proxies of detected landmarks (the same meaning on any recording); NaN rows where no face was detected."""
    signals = expression_signals(landmarks, valid)
    return np.stack([signals[s] for s in SIGNALS], axis=1)


def nearest_across(train_features: np.ndarray, train: np.ndarray, query_features: np.ndarray) -> np.ndarray:
    """For each query row, the ``train`` frame (an index into ``train_features``' recording) with the closest
    features, standardised by the training frames' statistics (:func:`deep_puppets.gan.baselines.nearest_neighbours`)."""
    from .gan.baselines import nearest_neighbours

    train = np.asarray(train, np.int64)
    stacked = np.vstack([np.asarray(train_features, np.float64), np.asarray(query_features, np.float64)])
    query = np.arange(len(train_features), len(stacked))
    return nearest_neighbours(stacked, train, query)


# ------------------------------------------------------------------------------------------------ the table

_SHORT_NAMES = {"gan": "GAN", "nearest": "nearest", "alpha": "alpha", "mean": "mean crop"}
# (column suffix, region, metric) per method
CROSS_METRICS = (("face_psnr", "face", "psnr"), ("head_psnr", "head", "psnr"), ("frame_psnr", "frame", "psnr"),
                 ("face_ssim", "face", "ssim"), ("face_e_col", "face", "e_col"))


def cross_table(runs: list[tuple[str, str]], summaries: list[dict], within: dict[str, dict]):
    """One row per ``(train, test)`` run: frames scored, every method's means per :data:`CROSS_METRICS`, the GAN's
    face PSNR gain over each baseline; and, for comparison, the training recording's own held-out figures
    (``within``: train -> its evaluation summary) — the GAN's face PSNR there and its gain over retrieval."""
    import pandas as pd

    def num(v) -> float:  # summaries hold null for a value that was not finite
        return float("nan") if v is None else float(v)

    rows = []
    for (train, test), s in zip(runs, summaries, strict=True):
        row = {"train": train, "test": test, "frames": int(s["n_frames"])}
        for m in METHODS:
            for col, region, metric in CROSS_METRICS:
                row[f"{m}_{col}"] = num(s["mean"][m][region].get(metric))
        for m in METHODS[1:]:
            row[f"gan_gain_db_over_{m}"] = num(s["gan_improvement_db"][m])
        own = within.get(train)
        row["within_gan_face_psnr"] = num(own["mean"]["gan"]["face"]["psnr"]) if own else float("nan")
        row["within_gan_gain_db_over_nearest"] = num(own["gan_improvement_db"]["nearest"]) if own else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df, out_csv, out_html, title: str) -> None:
    """The table as CSV and as a small self-contained HTML page (face PSNR of every method, the gains, and the
    training recording's own held-out figures)."""
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    head = ["train", "test", "frames", *(f"{_SHORT_NAMES[m]} face PSNR" for m in METHODS), "GAN − nearest (dB)", "GAN − alpha (dB)",
            "GAN face SSIM", "GAN face E_col", "within: GAN face PSNR", "within: GAN − nearest (dB)"]
    keys = ["train", "test", "frames", *(f"{m}_face_psnr" for m in METHODS), "gan_gain_db_over_nearest", "gan_gain_db_over_alpha",
            "gan_face_ssim", "gan_face_e_col", "within_gan_face_psnr", "within_gan_gain_db_over_nearest"]

    def cell(key, v):
        if isinstance(v, str):
            return html.escape(v)
        if key == "frames":
            return str(int(v))
        if not np.isfinite(v):
            return "–"
        return f"{v:+.2f}" if "gain" in key else f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"

    body = "".join("<tr>" + "".join(f"<td>{cell(k, r[k])}</td>" for k in keys) + "</tr>" for _, r in df.iterrows())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.25em .5em;"
        "text-align:right}td:nth-child(-n+2){text-align:left}</style></head><body><h1>" + html.escape(title) + "</h1>"
        "<p>A generator trained on one recording, given another recording's motion (its own track, drawn with the training "
        "recording's texture), pasted with the face mask over that recording's real frames; every frame with a face "
        "scored. Baselines use only the training recording's training "
        "frames. PSNR in dB on the face (blend mask &ge; 0.5); 'within': the training recording's own held-out evaluation.</p>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + body + "</table></body></html>"
    )
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
