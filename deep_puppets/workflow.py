"""Glue for the thin scripts in ``workflow_scripts/``: logging to the rule's log, clean errors, threads.

A script does ``run_script(snakemake, main)``; ``main(snakemake)`` holds one call into the package. A
:class:`~deep_puppets.errors.DeepPuppetsError` (bad input, bad config) ends the job with one line naming the
file and the problem, not a traceback; anything else is a bug and keeps its traceback in the log.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import datetime

from .errors import DeepPuppetsError


def export_pythonpath(path: str) -> None:
    """Put ``path`` (the checkout) first on PYTHONPATH so that every job imports this package."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != path]
    os.environ["PYTHONPATH"] = os.pathsep.join([path, *parts])


def attempt_header() -> str:
    """The line that opens each attempt's part of an appended log: date, host and process id."""
    return f"===== attempt {datetime.now().astimezone().isoformat(timespec='seconds')} on {socket.gethostname()}, pid {os.getpid()} =====\n"


def setup_logging(log_path: str | None = None, level=logging.INFO) -> None:
    """Log to stderr and, appended after an :func:`attempt_header` line, to ``log_path`` (never truncated here;
    note that Snakemake itself deletes a job's log file before it starts the job)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
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


def run_script(snakemake, main) -> None:
    log_path = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(log_path)
    limit_threads(snakemake.threads)
    if os.environ.get("SLURM_JOB_ID"):
        logging.getLogger("deep_puppets").info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.uname().nodename)
    try:
        main(snakemake)
    except DeepPuppetsError as e:
        logging.getLogger("deep_puppets").error("%s", e)
        print(f"Error in rule {snakemake.rule}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        logging.getLogger("deep_puppets").exception("unexpected failure in rule %s", snakemake.rule)
        raise
