"""Glue for the thin scripts in ``workflow_scripts/``: logging to the rule's log, clean errors, threads.

A script does ``run_script(snakemake, main)``; ``main(snakemake)`` holds one call into :mod:`deep_puppets.jobs`. A
:class:`~deep_puppets.errors.DeepPuppetsError` (bad input, bad config) ends the job with one line naming the
file and the problem, not a traceback; so does a full disk (:func:`no_space_message`); anything else is a bug
and keeps its traceback in the log.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from .errors import DeepPuppetsError


def export_pythonpath(path: str) -> None:
    """Put ``path`` (the checkout) first on PYTHONPATH so that every job imports this package."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != path]
    os.environ["PYTHONPATH"] = os.pathsep.join([path, *parts])


def attempt_header() -> str:
    """The line that opens each attempt's part of an appended log: date, host and process id."""
    return f"===== attempt {datetime.now().astimezone().isoformat(timespec='seconds')} on {socket.gethostname()}, pid {os.getpid()} =====\n"


# Set (to "warning") by the ``deep-puppets`` command for the Snakemake it runs: the jobs then write only warnings and
# errors to their stderr (which the command reads, merged with every other job's), INFO lines to their log files alone.
JOB_CONSOLE_ENV = "DEEP_PUPPETS_JOB_CONSOLE"


def setup_logging(log_path: str | None = None, level=logging.INFO) -> None:
    """Log to stderr and, appended after an :func:`attempt_header` line, to ``log_path`` (never truncated here;
    note that Snakemake itself deletes a job's log file before it starts the job). Under ``JOB_CONSOLE_ENV=warning``
    stderr gets warnings and errors only."""
    console = logging.StreamHandler(sys.stderr)
    if os.environ.get(JOB_CONSOLE_ENV, "").lower() == "warning":
        console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        with open(log_path, "a") as f:
            f.write(attempt_header())
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


def limit_threads(n: int) -> None:
    """Keep numeric libraries to the threads the rule asked for."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:
        pass


# How libraries report a full disk when they do not raise OSError(ENOSPC) themselves: torch.save's zip writer
# ("unexpected pos 123 vs 456"), h5py ("No space left on device", "errno = 28"), FFmpeg/PyAV (errno 28).
_NO_SPACE_TEXT = ("no space left", "unexpected pos", "errno = 28", "disk full", "disk quota exceeded")


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` or any exception in its chain (``__cause__``, ``__context__``) reports a full disk."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(t in str(exc).lower() for t in _NO_SPACE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e6:.1f} MB"


def no_space_message(outputs, inputs=()) -> str:
    """'no space left on device while writing PATH (needs ~X MB; Y MB free)': PATH is the job's first output
    (its outputs share a folder); X the size of the job's inputs, a rough guide (outputs are of their order;
    Snakemake has deleted any previous outputs before the job started), left out when there are none."""
    path = Path(outputs[0]) if len(outputs) else Path(".")
    need = sum(Path(p).stat().st_size for p in inputs if Path(p).is_file())
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    parts = [f"needs ~{_mb(need)}"] if need else []
    with contextlib.suppress(OSError):
        parts.append(f"{_mb(shutil.disk_usage(folder).free)} free")
    return f"no space left on device while writing {path}" + (f" ({'; '.join(parts)})" if parts else "")


def job_wildcards(snakemake) -> dict:
    w = getattr(snakemake, "wildcards", None)
    return dict(w.items()) if w is not None else {}


def job_name(snakemake) -> str:
    """``rule (name=value, ...)``: how a job is named in its log's first and last lines."""
    wildcards = job_wildcards(snakemake)
    return snakemake.rule + (f" ({', '.join(f'{k}={v}' for k, v in wildcards.items())})" if wildcards else "")


def run_script(snakemake, main) -> None:
    from . import progress

    log_path = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(log_path)
    limit_threads(snakemake.threads)
    log = logging.getLogger("deep_puppets")
    name, t0 = job_name(snakemake), time.perf_counter()
    log.info("job %s started (threads %d)", name, snakemake.threads)
    if os.environ.get("SLURM_JOB_ID"):
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.uname().nodename)
    progress.start_job((getattr(snakemake, "config", None) or {}).get("results"), snakemake.rule, job_wildcards(snakemake))
    finished = False
    try:
        main(snakemake)
        finished = True
    except DeepPuppetsError as e:
        log.error("%s", e)
        print(f"Error in rule {snakemake.rule}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        if is_no_space(e):
            msg = no_space_message(list(snakemake.output), list(snakemake.input))
            log.error("%s", msg)
            print(f"Error in rule {snakemake.rule}: {msg}", file=sys.stderr)
            sys.exit(1)
        log.exception("unexpected failure in rule %s", snakemake.rule)
        raise
    finally:
        progress.end_job()
        if finished:
            log.info("job %s finished in %.1f s", name, time.perf_counter() - t0)
        else:
            log.error("job %s failed after %.1f s", name, time.perf_counter() - t0)
