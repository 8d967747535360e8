"""Progress of long loops: lines in the job's log, and a small JSON file per running job for live displays.

:class:`ProgressLog` logs frames done and speed every so many frames (the log keeps the full record). While a
workflow job runs (:func:`start_job`, called by :func:`deep_puppets.workflow.run_script`), every progress call
also updates ``{results}/.progress/<rule>-<wildcards>.json`` — label, done/total, unit, rate, ETA, extra
figures such as the latest held-out error — written atomically and at most :data:`MIN_INTERVAL_S` apart (the
last step always), and removed when the job ends. ``deep-puppets`` (:mod:`deep_puppets.cli`) polls these files
and draws the bars; :func:`read_progress` and :func:`describe` are its side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

PROGRESS_EVERY = 100  # frames between progress log lines
PROGRESS_DIR = ".progress"  # under the results folder
MIN_INTERVAL_S = 0.5  # at most two writes a second per job


def progress_file(results, rule: str, wildcards: dict | None = None) -> Path:
    """``{results}/.progress/<rule>[-<wildcard values>].json`` of one job."""
    parts = [rule, *(str(v) for v in (wildcards or {}).values())]
    name = re.sub(r"[^A-Za-z0-9_+.-]", "_", "-".join(parts))
    return Path(results) / PROGRESS_DIR / f"{name}.json"


class JobProgress:
    """The progress file of one running job; :meth:`update` throttles, :meth:`close` removes the file."""

    def __init__(self, path, job: str):
        self.path, self.job = Path(path), job
        self.started = time.time()
        self.stage: tuple | None = None  # (label, t0, done0) of the current loop: its rate counts from there
        self.last_write = 0.0
        self.extra: dict = {}

    def update(self, label: str, done: int, total: int, unit: str = "frames", **extra) -> bool:
        """Record ``done`` of ``total`` ``unit`` for ``label``; written when the last write is at least
        MIN_INTERVAL_S old, or when the loop starts or ends. Returns whether the file was written."""
        now = time.monotonic()
        if self.stage is None or self.stage[0] != label or done < self.stage[2]:
            self.stage, self.extra = (label, now, done), {}
            first = True
        else:
            first = False
        self.extra.update({k: v for k, v in extra.items() if v is not None})
        if not (first or done >= total or now - self.last_write >= MIN_INTERVAL_S):
            return False
        _, t0, done0 = self.stage
        rate = (done - done0) / (now - t0) if now > t0 and done > done0 else None
        eta = (total - done) / rate if rate else None
        data = {"job": self.job, "label": label, "done": int(done), "total": int(total), "unit": unit,
                "rate": rate, "eta_s": eta, "started": self.started, "updated": time.time(), "pid": os.getpid(),
                "extra": self.extra}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:  # a display aid only: never fail a job over it
            return False
        self.last_write = now
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


_job: JobProgress | None = None


def start_job(results, rule: str, wildcards: dict | None = None) -> JobProgress | None:
    """Start this process's progress file (none when ``results`` is unknown); every :func:`report` goes there."""
    global _job
    if not results:
        return None
    label = " ".join([rule, *(str(v) for v in (wildcards or {}).values())])
    _job = JobProgress(progress_file(results, rule, wildcards), label)
    return _job


def end_job() -> None:
    """Remove this process's progress file (the job ended, successfully or not)."""
    global _job
    if _job is not None:
        _job.close()
    _job = None


def report(label: str, done: int, total: int, unit: str = "frames", **extra) -> None:
    """Progress of the current loop, for live displays; nothing outside a workflow job."""
    if _job is not None:
        _job.update(label, done, total, unit, **extra)


class ProgressLog:
    """``progress(done)`` callback that logs frames done and speed every ``every`` frames (and at the end), and
    reports every frame to the job's progress file (:func:`report`)."""

    def __init__(self, label: str, total: int, every: int = PROGRESS_EVERY, logger: logging.Logger | None = None):
        self.label, self.total, self.every = label, total, every
        self.log = logger or logging.getLogger("deep_puppets")
        self.t0 = time.perf_counter()

    def __call__(self, done: int) -> None:
        report(self.label, done, self.total)
        if done % self.every == 0 or done == self.total:
            dt = time.perf_counter() - self.t0
            self.log.info("%s: %d/%d frames, %.1f frames/s", self.label, done, self.total, done / dt if dt > 0 else 0.0)


# ------------------------------------------------------------------------------------------ the display side


def read_progress(results, since: float | None = None) -> list[dict]:
    """The progress records under ``{results}/.progress`` (updated at or after ``since``, a time.time()), by job;
    files that vanish or are being replaced meanwhile are skipped."""
    folder = Path(results) / PROGRESS_DIR
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if since is None or data.get("updated", 0) >= since:
            out.append(data)
    return out


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


UNIT_RATE = {"frames": "frames/s", "iterations": "it/s"}


def describe(p: dict, width: int = 0) -> str:
    """One line of a progress record, most important first (a terminal cuts the end):
    ``job: [####....] done/total unit  ETA  rate  extras  (label)``; the bar only when ``width`` > 0."""
    done, total = p.get("done", 0), p.get("total", 0)
    bar = ""
    if width > 0:
        filled = int(width * min(done / max(total, 1), 1.0))
        bar = "[" + "#" * filled + "." * (width - filled) + "] "
    rate, unit = p.get("rate"), p.get("unit", "")
    parts = [f"{p.get('job', '?')}: {bar}{done}/{total} {unit}",
             f"ETA {format_duration(p.get('eta_s'))}" if done < total else "done",
             f"{rate:.2f} {UNIT_RATE.get(unit, unit + '/s')}" if rate else ""]
    parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in (p.get("extra") or {}).items()]
    parts.append(f"({p['label']})" if p.get("label") else "")
    return "  ".join(x for x in parts if x)
