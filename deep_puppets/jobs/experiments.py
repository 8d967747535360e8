"""Job of the experiments: one target's table of gan-setting variants (held-out quality against training minutes).
Training and evaluating a variant reuse :func:`.gan.gan_train` and :func:`.evaluate.evaluate` as they are."""

from __future__ import annotations

import logging

from .. import experiments as ex
from ..files import read_json

log = logging.getLogger(__package__)


def experiment_table(*, video: str, runs, summaries, benchmarks, overrides: dict, outs: dict, pairs=(), fidelity=()):
    """``table.csv``, ``table.html`` and ``quality_vs_minutes.png`` of one target: ``runs`` are the ``(variant,
    seed)`` of each evaluation summary and training benchmark, in the same order; ``fidelity`` the output-fidelity
    summaries of each run's re-enactments of ``pairs`` (run-major, pairs in the given order). The baselines
    (nearest frame, alpha, mean crop) do not depend on the generator: the first summary's are drawn for reference."""
    if not (len(runs) == len(summaries) == len(benchmarks)) or len(fidelity) != len(runs) * len(pairs):
        raise ValueError(f"{len(runs)} runs, {len(summaries)} summaries, {len(benchmarks)} benchmarks and {len(fidelity)} "
                         f"output-fidelity summaries of {len(pairs)} pairs")
    records, first, n = [], None, len(pairs)
    for i, ((variant, seed), summary_path, bench) in enumerate(zip(runs, summaries, benchmarks)):
        summary = read_json(summary_path, "evaluation summary")
        first = first or summary
        paths = list(fidelity[i * n : (i + 1) * n])
        motion = ex.motion_record([read_json(p, "output-fidelity summary") for p in paths], where=paths) if n else None
        records.append(ex.experiment_record(variant, seed, summary, *ex.training_minutes(bench), where=summary_path, motion=motion))
    table = ex.variant_table(records, overrides)
    title = f"{video}: gan variants on the held-out frames"
    ex.write_tables(table, outs["csv"], outs["html"], title)
    baselines = {m: ex.experiment_record(m, 0, first, 0.0, method=m) for m in first["mean"] if m != "gan"}
    ex.quality_plot(table, outs["png"], title, baselines)
    log.info("%s: %d variants, %d runs; face PSNR %s", video, len(table), len(records),
             {r.variant: round(r.face_psnr, 2) for r in table.itertuples()})
    return table
