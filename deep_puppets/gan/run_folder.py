"""A training run folder's identity and state beside its checkpoints: the lock, the done mark, the log's name,
the inputs' content hashes, superseded folders.

The workflow names a run folder ``train-<fingerprint>`` by the settings and :func:`input_digests` of the files it
trains on. A trainer holds an exclusive ``fcntl.flock`` on ``out_dir/.train.lock`` (:class:`TrainingLock`): a
second one fails at once naming the first. Once the final generator is written the run gets its done mark
``done.json``; ``train.log`` collects every attempt, appended.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import BusyError, InputError
from .checkpoints import list_checkpoints

log = logging.getLogger("deep_puppets.gan")

LOCK_NAME = ".train.lock"  # fcntl.flock-ed by the live trainer of a run folder (and of a target's gan folder)
DONE_NAME = "done.json"  # written (atomically) once a run folder's generator is written: the run is complete
LOG_NAME = "train.log"  # every attempt on a run folder, appended


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_digests(conditioning_path, flow_path) -> dict[str, str]:
    """Content hashes of the files a run trains on: part of its identity (run folder name, checkpoints, done mark)."""
    return {"conditioning": file_sha256(conditioning_path), "flow": file_sha256(flow_path)}


class TrainingLock:
    """Exclusive ``fcntl.flock`` on ``path`` (holding pid, host, start time) for as long as the ``with`` block runs.

    A second trainer fails at once with a :class:`BusyError` naming the holder; the kernel releases the lock of a
    killed process. flock works across hosts on local file systems and NFSv4 (Linux maps it to POSIX locks)."""

    def __init__(self, path, what: str = "a training"):
        self.path, self.what, self.fd = Path(path), what, None

    def __enter__(self) -> "TrainingLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise BusyError(f"{self.path.parent}: {self.what} is already running ({holder}); wait for it to finish or "
                            "end that process, then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock; the file stays (removing it would race with the next locker)
        self.fd = None


def _lock_holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {h['pid']} on {h['host']} since {h['since']}"
    except (ValueError, KeyError, OSError):
        return "another process (it has not recorded itself yet)"


def remove_superseded_runs(parent, keep) -> list[Path]:
    """Delete the ``train-*`` run folders under ``parent`` but ``keep`` (runs of older settings or inputs of the
    same target), never one whose lock a live trainer holds. Returns the folders removed."""
    removed = []
    for d in sorted(Path(parent).glob("train-*")):
        if not d.is_dir() or d.resolve() == Path(keep).resolve():
            continue
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("keeping superseded run folder %s: %s trains there", d, _lock_holder(fd))
            os.close(fd)
            continue
        try:
            shutil.rmtree(d)
            removed.append(d)
            log.info("removed superseded run folder %s", d)
        finally:
            os.close(fd)
    return removed


def read_done_mark(out_dir) -> dict | None:
    """The done mark of a completed run folder (:data:`DONE_NAME`), or None."""
    p = Path(out_dir) / DONE_NAME
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        raise InputError(p, "is damaged (not JSON); delete its run folder to start afresh") from None


def clear_run(out_dir) -> None:
    """Forget a completed run: its checkpoints, losses and done mark (the log keeps the history)."""
    out_dir = Path(out_dir)
    for p in [*list_checkpoints(out_dir), out_dir / "losses.csv", out_dir / "losses.png", out_dir / DONE_NAME]:
        p.unlink(missing_ok=True)

