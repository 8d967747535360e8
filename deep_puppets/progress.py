"""Progress lines for long per-frame loops (the jobs' logs show how far a stage is and how fast it goes)."""

from __future__ import annotations

import logging
import time

PROGRESS_EVERY = 100  # frames between progress log lines


class ProgressLog:
    """``progress(done)`` callback that logs frames done and speed every ``every`` frames (and at the end)."""

    def __init__(self, label: str, total: int, every: int = PROGRESS_EVERY, logger: logging.Logger | None = None):
        self.label, self.total, self.every = label, total, every
        self.log = logger or logging.getLogger("deep_puppets")
        self.t0 = time.perf_counter()

    def __call__(self, done: int) -> None:
        if done % self.every == 0 or done == self.total:
            dt = time.perf_counter() - self.t0
            self.log.info("%s: %d/%d frames, %.1f frames/s", self.label, done, self.total, done / dt if dt > 0 else 0.0)
