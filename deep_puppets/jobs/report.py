"""Jobs of the report stage: the browser report folder, and the HTML pages that play a run's videos inline in
Snakemake's report."""

from __future__ import annotations

import logging
from pathlib import Path

from ..report_page import Pair, video_page, write_report

log = logging.getLogger(__package__)


def report_page(*, out_dir, videos, pairs: list[dict], targets, exports=()) -> str:
    """The browser report folder ``{results}/report`` (:mod:`deep_puppets.report_page`): index.html with every
    figure, table and video of the run, and download links to the exports (files under results)."""
    results = Path(out_dir).parent
    rel_exports = [str(Path(e).relative_to(results)) for e in exports]
    index = write_report(results, out_dir, list(videos), [Pair(p["name"], p["source"], p["target"], p["mode"]) for p in pairs],
                         list(targets), rel_exports)
    log.info("report written to %s", index)
    return str(index)


def video_pages(*, mp4s: dict, pages: dict) -> None:
    """Each video of ``mp4s`` (name -> mp4) wrapped in the HTML page ``pages[name]`` that plays it inline (for
    Snakemake's report; the rules ``overlay_page``, ``evaluation_pages`` and ``reenactment_pages``)."""
    for name, mp4 in mp4s.items():
        video_page(mp4, pages[name], f"{Path(mp4).parents[1].name}: {Path(mp4).stem.replace('_', ' ')}")
