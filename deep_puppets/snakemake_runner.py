"""Snakemake as a child process of the command line: its output shortened to one line per job, the jobs'
progress drawn as bars, a failure told in one line, an interrupt passed on to Snakemake and its jobs.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import SOURCE_DIR
from .errors import CliError
from .progress import describe, read_progress
from .workflow import JOB_CONSOLE_ENV

CHECKOUT = SOURCE_DIR
SNAKEFILE = CHECKOUT / "Snakefile"
NOTHING_TO_DO = "Nothing to be done"
SNAKEMAKE_LOG = ".snakemake/log"


def snakemake_cmd(out_dir: Path, *args, cores=None, profile=None) -> list[str]:
    if not SNAKEFILE.exists():
        raise CliError(f"{SNAKEFILE}: not found (deep-puppets runs the workflow of its checkout; install it with pip -e)")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(out_dir)]
    if cores:
        cmd += ["--cores", str(cores)]
    if profile:
        p = Path(profile)
        if not p.exists() and (CHECKOUT / profile).exists():  # profiles/slurm from anywhere
            p = CHECKOUT / profile
        cmd += ["--profile", str(p)]
    return cmd + [str(a) for a in args]


class Display:
    """Snakemake's lines above, a block of progress bars below (a terminal), or plain progress lines every
    ``every`` seconds (not a terminal)."""

    def __init__(self, stream=None, tty: bool | None = None, every: float | None = None, width: int = 24):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = float(os.environ.get("DEEP_PUPPETS_PROGRESS_EVERY", 15.0)) if every is None else every
        self.width = width
        self.drawn, self.records, self.last_plain, self.printed = 0, [], 0.0, {}

    def _clear(self):
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self):
        cols = shutil.get_terminal_size((120, 20)).columns
        for r in self.records:
            self.stream.write(describe(r, self.width)[: cols - 1] + "\n")
        self.drawn = len(self.records)

    def line(self, text: str) -> None:
        if self.tty:
            self._clear()
        self.stream.write(text + "\n")
        if self.tty:
            self._draw()
        self.stream.flush()

    def update(self, records: list[dict], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.records = records
        if self.tty:
            self._clear()
            self._draw()
        elif records and now - self.last_plain >= self.every:
            for r in records:
                key = (r.get("job"), r.get("label"), r.get("done"))
                if self.printed.get(r.get("job")) != key:  # a job that has not moved on is not repeated
                    self.stream.write("progress: " + describe(r) + "\n")
                    self.printed[r.get("job")] = key
            self.last_plain = now
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._clear()
            self.stream.flush()


JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
# Lines of Snakemake's and the jobs' output not shown (they stay in DIR/.snakemake/log and the job logs): the
# jobs' INFO log lines (LOG_RECORD; their progress is drawn), TensorFlow Lite / MediaPipe start-up chatter, scheduler steps.
QUIET = re.compile(r"^([IW]\d{4} |INFO: Created TensorFlow|WARNING: All log messages before absl"
                   r"|Select jobs to execute|Execute \d+ jobs|Updating checkpoint dependencies|DAG of jobs will be updated"
                   r"|Using shell:|Provided cores:|Rules claiming more threads|Conda environments: ignored|Assuming unrestricted shared"
                   r"|Using workflow specific profile|Building DAG of jobs|Complete log\(s\)|SNAKEMAKE$|=+$|  (Date|Workflow ID|Platform|Host|User"
                   r"|Snakemake version|Python version|Command|Snakefile|Base directory|Run directory|Working directory|Config file\(s\)"
                   r"|Config MD5):|Some jobs were triggered by provenance|If you prefer that only modification time"
                   r"|If you are sure that a change for a certain output|Rules with provenance triggered jobs)")
JOB_DETAIL = re.compile(r"^\s+(\w[\w ]*):\s?(.*)$")
# a job's INFO/DEBUG log record, at a line's start or, where another process's unterminated write came first, inside it
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG) ")


class SnakemakeLines:
    """Shortens Snakemake's job blocks (``rule x:`` + input/output/log/... lines) to one ``start x (wildcards)``
    line; every other line (progress, finished jobs, errors) passes through. The full record stays in
    DIR/.snakemake/log."""

    def __init__(self, emit, verb: str = "start"):
        self.emit, self.verb, self.rule, self.details = emit, verb, None, {}
        self.nothing_to_do = False
        self.jobs_started = 0
        self.errors: list[str] = []

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        record = LOG_RECORD.search(line)
        if record:  # not shown; where two writers' output merged on one line, the other writer's part is kept
            line = line[: record.start()].rstrip()
        if NOTHING_TO_DO in line:
            self.nothing_to_do = True
        if JOB_ERROR.match(line.strip()):
            self.errors.append(line.strip())
        m = JOB_HEADER.match(line.strip()) if not line.startswith(" ") else None
        if self.rule is not None:
            d = JOB_DETAIL.match(line)
            if d and line.startswith(" "):
                self.details[d.group(1)] = d.group(2)
                return
            self._flush()
        if m:
            self.rule, self.details = m.group(1), {}
            return
        if line.strip() and not line.startswith("[") and not QUIET.match(line):  # "[date]": Snakemake's time stamps
            self.emit(line)

    def _flush(self):
        if self.rule is not None:
            wc = self.details.get("wildcards")
            self.emit(f"{self.verb} {self.rule}" + (f" ({wc})" if wc else ""))
            self.jobs_started += 1
        self.rule, self.details = None, {}

    def close(self):
        self._flush()


def run_snakemake(cmd: list[str], results: Path, display: Display | None = None, poll_s: float = 0.5) -> SnakemakeLines:
    """Run Snakemake, its lines through :class:`SnakemakeLines`, progress bars from ``results/.progress`` while it
    runs. Raises CliError (one line) when it fails."""
    display = display or Display()
    lines = SnakemakeLines(display.line, "would run" if "-n" in cmd else "start")
    tail: list[str] = []
    t_start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", JOB_CONSOLE_ENV: "warning"}
    # Snakemake and its jobs in a process group of their own: an interrupt of this command (Ctrl-C, `kill PID`)
    # is passed to all of them, as a terminal's Ctrl-C would be, and no job is left running.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
                            start_new_session=True)
    q: queue.Queue = queue.Queue()

    def reader():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    done = False

    def stop(signum, frame):  # `kill PID` stops Snakemake (and so its jobs) too, as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        while not done:
            deadline = time.monotonic() + poll_s
            while time.monotonic() < deadline:
                try:
                    line = q.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    continue
                if line is None:
                    done = True
                    break
                tail = (tail + [line.rstrip()])[-40:]
                lines.feed(line)
            display.update(read_progress(results, since=t_start))
        lines.close()
        rc = proc.wait()
    except KeyboardInterrupt:
        interrupt_group(proc)
        display.close()
        raise CliError("interrupted; rerun the same command to continue (finished jobs are kept, training resumes from its last checkpoint)") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    display.close()
    if rc != 0:
        raise CliError(f"the workflow failed: {failure_line(lines.errors + tail, rc)}; "
                       f"full log: {newest_log(Path(cmd[cmd.index('--directory') + 1]))}")
    return lines


JOB_ERROR = re.compile(r"^Error in rule (\w+): (.+)$")  # a job's one line (deep_puppets.workflow.run_script)


def failure_line(lines: list[str], rc: int) -> str:
    """Why Snakemake failed, in one line: a job's own error line, else a config error, else its last error line."""
    for line in lines:
        m = JOB_ERROR.match(line.strip())
        if m:
            return f"{m.group(2)} (rule {m.group(1)})"
    if any("Directory cannot be locked" in line for line in lines):
        return ("another Snakemake run is using this folder, or one was killed (power loss, kill -9) and left its lock; "
                "if none is running: snakemake --unlock -d DIR from the checkout")
    for line in reversed(lines):
        if "config error:" in line:
            return line[line.index("config error:"):].strip()
    errors = [t.strip() for t in lines if "error" in t.lower() and not t.strip().endswith(":")]
    return errors[-1] if errors else f"snakemake exit status {rc}"


def interrupt_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGINT to Snakemake's process group (it and its jobs); SIGKILL to the group after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def newest_log(out_dir: Path) -> Path | str:
    logs = sorted((out_dir / SNAKEMAKE_LOG).glob("*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else out_dir / SNAKEMAKE_LOG
