"""``deep-puppets``: the command line front end, a thin layer over the same Snakemake workflow.

``deep-puppets reenact SOURCE TARGET --out DIR`` writes ``DIR/config.yaml`` (validated, editable) and runs
``snakemake -s <checkout>/Snakefile --directory DIR``: DIR is the workflow's working directory, so Snakemake
reads DIR/config.yaml (and never the checkout's config.yaml), keeps its records (``DIR/.snakemake``: what ran
with which settings, locks) there, and the outputs go to ``DIR/results``. Reruns, caching, ``--profile``
(SLURM) are Snakemake's own. While it runs, the jobs' progress files (:mod:`deep_puppets.progress`) are drawn
as bars (plain lines when the output is not a terminal): running Snakemake as a child process is
:mod:`deep_puppets.snakemake_runner`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import config as dp_config
from .errors import CliError, ConfigError, DeepPuppetsError
from .progress import describe, read_progress
from .snakemake_runner import (
    CHECKOUT,
    JOB_DETAIL,
    JOB_HEADER,
    run_snakemake,
    snakemake_cmd,
)

CONFIG_NAME = "config.yaml"
RESULTS_NAME = "results"  # DIR/results: the config's `results`, relative to DIR
REPORT_NAME = "report.html"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


# ------------------------------------------------------------------------------------------ configuration


def video_name(path) -> str:
    """A video's name from its file stem, made to fit the workflow's names (letters, digits, '_', '-', starting
    with a letter or digit): other characters become '_', and '__' (which separates the names in a pair's folder
    name) a single '_'."""
    stem = re.sub(r"__+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem)).strip("_-")  # "__" separates pair names
    return stem or "video"


def video_names(source, target) -> tuple[str, str]:
    """Names of the source and target videos: their stems; the same file twice is one name, two files of the
    same stem get ``-source`` / ``-target`` suffixes."""
    s, t = video_name(source), video_name(target)
    if Path(source).resolve() == Path(target).resolve():
        return s, s
    if s == t:
        return f"{s}-source", f"{t}-target"
    return s, t


def reenact_config(source, target, mode: str, preset: str, sets=()) -> dict:
    """The config ``reenact`` writes: the two videos (absolute paths), one pair, the preset, ``--set`` values
    (typed by the schema), ``results: results`` (relative to the output folder), demo off."""
    for p in (source, target):
        if not Path(p).exists():
            raise CliError(f"{p}: no such file")
    s, t = video_names(source, target)
    config = {"results": RESULTS_NAME, "preset": preset,
              "videos": {s: str(Path(source).resolve()), t: str(Path(target).resolve())},
              "pairs": [{"source": s, "target": t, "mode": mode}], "demo": {"enabled": False}}
    for assignment in sets:
        dp_config.set_value(config, assignment)
    return config


def check_config(config: dict, out_dir: Path) -> dict:
    """The workflow's own validation of ``config`` as if run in ``out_dir`` (before any job): the prepared config."""
    from .needs import check_stage_settings

    prepared = dp_config.prepare(config, out_dir, CHECKOUT)
    check_stage_settings(prepared)
    return prepared


def write_config(config: dict, out_dir: Path) -> Path:
    from .files import atomic_path

    path = out_dir / CONFIG_NAME
    header = ("# Written by deep-puppets reenact. Edit and rerun with `deep-puppets run DIR` (or `snakemake -d DIR`"
              " from the checkout).\n# Every key, its meaning and its default: deep_puppets/schemas/config.schema.yaml\n")
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def load_dir_config(out_dir: Path) -> dict:
    path = out_dir / CONFIG_NAME
    if not path.is_file():
        raise CliError(f"{path}: no such file (is {out_dir} an output folder of deep-puppets reenact?)")
    dp_config.check_yaml_file(path)
    return yaml.safe_load(path.read_text()) or {}


def results_dir(out_dir: Path, config: dict) -> Path:
    return dp_config.resolve(os.path.expanduser(str(config.get("results", "results"))), out_dir)


def pair_outputs(results: Path, config: dict) -> list[Path]:
    """The re-enactment videos of the pairs of a checked config (:func:`check_config`: every pair has its mode)."""
    return [results / "pairs" / dp_config.pair_id(pair) / "reenactment.mp4" for pair in config["pairs"]]


# ------------------------------------------------------------------------------------------ the report


REPORT_PAGE = "report/index.html"  # under results: rule report_page (rules/report.smk), part of `rule all`


def snakemake_report(out_dir: Path) -> Path:
    """Snakemake's own report (every report() output of the workflow) as ``DIR/report.html``."""
    path = out_dir / REPORT_NAME
    r = subprocess.run(snakemake_cmd(out_dir, "--report", path.resolve()), capture_output=True, text=True)
    if r.returncode != 0 or not path.exists():
        last = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()][-1:] or ["no output"]
        raise CliError(f"the report could not be built: {last[0].strip()}")
    return path


def build_report(out_dir: Path, results: Path) -> list[Path]:
    """The reports of the run in ``out_dir``: the browser page ``{results}/report/index.html`` (target
    ``report_page``) and Snakemake's ``DIR/report.html``."""
    run_snakemake(snakemake_cmd(out_dir, "report_page"), results)
    return [results / REPORT_PAGE, snakemake_report(out_dir)]


# ------------------------------------------------------------------------------------------ status


REASONS = [
    (r"Missing output files: (.*)", "not made yet ({0})"),
    (r"Updated input files: (.*)", "input changed: {0} is newer than its output"),
    (r"Input files updated by another job: (.*)", "an earlier step runs first ({0})"),
    (r"Params have changed since last execution(?::.*)?", "settings changed since the last run"),
    (r"Code has changed since last execution", "its code changed since the last run"),
    (r"Set of input files has changed since last execution", "its list of input files changed"),
    (r"Software environment definition has changed since last execution", "its software environment changed"),
    (r"Forced execution", "forced (--forcerun)"),
    (r"Incomplete output files.*", "was interrupted in the last run"),
    (r"Job's output is incomplete.*", "was interrupted in the last run"),
]


def changed_settings(text: str) -> str:
    """``gan.iterations 20 -> 25``-style words for Snakemake's 'Params have changed ... before: {...} now: {...}'."""
    import ast

    m = re.search(r"before: (.*) now: (.*)$", text)
    if not m:
        return ""
    try:
        before, now = ast.literal_eval(m.group(1)), ast.literal_eval(m.group(2))
    except (ValueError, SyntaxError):
        return ""
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return f"{before!r} -> {now!r}"
    keys = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return ", ".join(f"{k} {before.get(k, '(unset)')!r} -> {now.get(k, '(unset)')!r}" for k in keys)


def plain_reason(reason: str) -> str:
    """Snakemake's ``reason:`` of a planned job in plain words (each ``;``-separated part)."""
    out = []
    for part in (p.strip() for p in reason.split(";")):
        for pattern, words in REASONS:
            m = re.fullmatch(pattern, part)
            if m:
                files = [Path(f.strip()).name for f in (m.group(1).split(",") if m.groups() else [])]
                shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
                words = words.format(shown)
                if "settings changed" in words and changed_settings(part):
                    words += f": {changed_settings(part)}"
                out.append(words)
                break
        else:
            if part:
                out.append(part)
    return "; ".join(out)


def planned_jobs(text: str) -> list[dict]:
    """``{rule, wildcards, reason}`` of every job in a Snakemake dry run's output."""
    jobs, cur = [], None
    for line in text.splitlines():
        m = JOB_HEADER.match(line.strip()) if not line.startswith(" ") else None
        if m:
            cur = {"rule": m.group(1), "wildcards": "", "reason": ""}
            jobs.append(cur)
            continue
        d = JOB_DETAIL.match(line)
        if cur is not None and d and line.startswith(" "):
            if d.group(1) in ("wildcards", "reason"):
                cur[d.group(1)] = d.group(2).strip()
        elif cur is not None and line.strip():
            cur = None
    return jobs


RUNNING_S = 300  # a progress file updated this recently belongs to a running job (a killed one leaves its file)


def status(out_dir: Path, profile=None) -> list[str]:
    """Lines saying what is finished and what would (re)run and why."""
    config = check_config(load_dir_config(out_dir), out_dir)
    results = results_dir(out_dir, config)
    r = subprocess.run(snakemake_cmd(out_dir, "-n", profile=profile), capture_output=True, text=True)
    text = r.stdout + r.stderr
    if r.returncode != 0:
        last = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in last if "error" in line.lower()]
        raise CliError((errors or last or ["snakemake -n failed"])[-1].strip())
    lines = [f"{out_dir}: config {out_dir / CONFIG_NAME}, results in {results}"]
    finished = [p for p in pair_outputs(results, config) if p.exists()]
    finished += [p for p in [results / REPORT_PAGE, out_dir / REPORT_NAME] if p.exists()]
    lines += ["finished:"] + [f"  {p}" for p in finished] if finished else ["finished: no video yet"]
    running = read_progress(results, since=time.time() - RUNNING_S)
    lines += ["running now:"] + [f"  {describe(r)}" for r in running] if running else []
    jobs = [j for j in planned_jobs(text) if j["rule"] != "all"]
    if not jobs:
        lines.append("nothing to do: every output is up to date")
    else:
        lines.append(f"would run {len(jobs)} job(s)" + (", those running now included:" if running else ":"))
        for j in jobs:
            lines.append(f"  {j['rule']}" + (f" ({j['wildcards']})" if j["wildcards"] else "") + f": {plain_reason(j['reason'])}")
    if "checkpoint" in text and "alteration of the DAG" in text:
        lines.append("(more jobs are planned once the videos are probed)")
    return lines


# ------------------------------------------------------------------------------------------ commands


def cmd_reenact(a) -> int:
    out_dir = Path(a.out).expanduser().resolve()
    config = reenact_config(a.source, a.target, a.mode, a.preset, a.set or [])
    prepared = check_config(config, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_config(config, out_dir)
    print(f"config: {path}  (preset {prepared['preset']}: render.size {prepared['render']['size']}, "
          f"gan.iterations {prepared['gan']['iterations']})", flush=True)
    return run_and_print(out_dir, prepared, a)


def cmd_run(a) -> int:
    out_dir = Path(a.dir).expanduser().resolve()
    config = load_dir_config(out_dir)
    for assignment in a.set or []:
        dp_config.set_value(config, assignment)
    prepared = check_config(config, out_dir)
    if a.set:
        write_config(config, out_dir)
    return run_and_print(out_dir, prepared, a)


def run_and_print(out_dir: Path, config: dict, a) -> int:
    """Run the workflow on the checked ``config`` (:func:`check_config`) and print the videos and the report."""
    results = results_dir(out_dir, config)
    if getattr(a, "dry_run", False):  # what would run, and why, in plain words
        print("\n".join(status(out_dir, a.profile)))
        return 0
    lines = run_snakemake(snakemake_cmd(out_dir, cores=a.cores, profile=a.profile), results)
    if lines.nothing_to_do:
        print("Nothing needs doing: every output is up to date.")
    report = results / REPORT_PAGE  # the browser report page is part of the workflow (rule all)
    for p in pair_outputs(results, config):
        print(f"video:  {p}")
        print(f"        {p.with_name('side_by_side.mp4')} (source | conditioning | result)")
    if report.exists():
        print(f"report: {report}")
    return 0


def cmd_status(a) -> int:
    print("\n".join(status(Path(a.dir).expanduser().resolve(), a.profile)))
    return 0


def cmd_report(a) -> int:
    out_dir = Path(a.dir).expanduser().resolve()
    for page in build_report(out_dir, results_dir(out_dir, load_dir_config(out_dir))):
        print(f"report: {page}")
    return 0


def cmd_export(a) -> int:
    out_dir = Path(a.dir).expanduser().resolve()
    config = load_dir_config(out_dir)
    results = results_dir(out_dir, config)
    run_snakemake(snakemake_cmd(out_dir, "export_all", cores=a.cores, profile=a.profile), results)
    print(f"exports: {results / 'export'}")  # the export rule's folder (rules/export.smk)
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt


def cmd_studio(a) -> int:
    """Serve the studio until Ctrl-C (deep_puppets/studio/server.py)."""
    from .studio.server import running_studio

    results = Path(a.results).expanduser().resolve()
    if not results.is_dir():
        raise CliError(f"{results}: no such folder (give a workflow results folder, e.g. out/actor/results)")
    if not 0 <= a.port <= 65535:
        raise CliError(f"--port {a.port}: not a port (0 = a free one)")
    try:
        with running_studio(results, a.target, host=a.host, port=a.port, device=a.device, backend=a.backend) as server:
            print(f"studio: {server.url}  (target {server.studio.info.target}; Ctrl-C stops it)", flush=True)
            if a.host not in ("127.0.0.1", "localhost", "::1"):
                print(f"warning: served on {a.host}: anyone who can reach this machine can use it", flush=True)
            # a clean stop on Ctrl-C and on `kill`, even where the shell that started us ignored SIGINT (a background job)
            signal.signal(signal.SIGINT, _stop)
            signal.signal(signal.SIGTERM, _stop)
            try:
                # wake twice a second: the kernel may deliver Ctrl-C or `kill` to one of the server's threads, and
                # Python runs the handler only once the main thread is back in the interpreter (a plain wait()
                # could sleep through it for ever)
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("studio: stopped", flush=True)
    except OSError as e:
        raise CliError(f"cannot serve on {a.host}:{a.port}: {e.strerror or e}") from None
    except DeepPuppetsError as e:
        raise CliError(str(e).splitlines()[0]) from None
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deep-puppets",
        description="Re-animate the person in a TARGET video with the head motion and expressions of a SOURCE video. "
                    "Each command runs the project's Snakemake workflow in an output folder: finished steps are never redone.",
        epilog="Example: deep-puppets reenact me.mp4 actor.mp4 --out out/actor   (then: deep-puppets status out/actor)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(sp):
        sp.add_argument("--cores", default=None, help="CPU cores to use (a number or 'all'; default all)")
        sp.add_argument("--profile", default=None, help="a Snakemake profile, e.g. profiles/slurm to run the jobs on a SLURM cluster")

    def workflow_options(sp, set_help: str, dry_run_help: str):
        """The options of the commands that run the whole workflow (reenact, run)."""
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
        sp.add_argument("--dry-run", action="store_true", help=dry_run_help)
        run_options(sp)

    r = sub.add_parser("reenact", help="re-animate TARGET with SOURCE's motion (writes DIR/config.yaml, runs everything)",
                       description="Write a validated config for SOURCE -> TARGET into the output folder and run the whole "
                                   "workflow: landmarks, 3D face fits, transfer, conditioning renders, training the target's "
                                   "generator, the re-enactment video, evaluation and the report. Running it again with the "
                                   "same arguments does nothing; with other settings only what they change reruns.")
    r.add_argument("source", help="the driving video (its head motion and expressions are used)")
    r.add_argument("target", help="the video whose person is re-animated (the output has its size and frame rate)")
    r.add_argument("--mode", choices=list(dp_config.PAIR_MODES), default=dp_config.PAIR_MODES[0],
                   help="pose+expression: head pose and expression (default); expression: the target keeps its own head motion")
    r.add_argument("--out", default="out", help="output folder (default: out): config.yaml, results/")
    r.add_argument("--preset", choices=["auto", "demo", "cpu", "gpu"], default="auto",
                   help="render size and training length: demo (128px, minutes), cpu (256px, ~32 min of training on 2 cores), "
                        "gpu (512px, a CUDA GPU); auto = cpu")
    workflow_options(r, "any config value, e.g. --set gan.iterations=500 --set composite.audio=false "
                        "(keys: deep_puppets/schemas/config.schema.yaml)",
                     "write the config and show what would run, run nothing")
    r.set_defaults(func=cmd_reenact)

    u = sub.add_parser("run", help="run again on DIR/config.yaml (after editing it)",
                       description="Run the workflow on the output folder's config.yaml (edit it first, or use --set).")
    u.add_argument("dir", help="an output folder of deep-puppets reenact")
    workflow_options(u, "change a config value (written to DIR/config.yaml)", "show what would run, run nothing")
    u.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="what is finished, what would rerun and why",
                       description="List the finished videos and report, and every step that would run next and why.")
    s.add_argument("dir", help="an output folder of deep-puppets reenact")
    s.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="build the reports (videos, figures, metrics) and print their paths",
                        description="Build the browser report page (results/report/index.html) and Snakemake's report "
                                    "(DIR/report.html) of a finished run and print their paths.")
    rp.add_argument("dir", help="an output folder of deep-puppets reenact")
    rp.set_defaults(func=cmd_report)

    e = sub.add_parser("export", help="export the fitted faces (glTF, OBJ/PLY, CSV, ARKit CSV)",
                       description="Run the export step for every video and pair and print the export folder.")
    e.add_argument("dir", help="an output folder of deep-puppets reenact")
    run_options(e)
    e.set_defaults(func=cmd_export)

    st = sub.add_parser("studio", help="edit a trained target's expression, gaze and head pose live in the browser",
                        description="Start the puppet studio, a local web app for one target of a finished run: move sliders "
                                    "for head pose, gaze and expression over any of its frames and see the conditioning render "
                                    "and the generated frame; keyframe edits and export them as an mp4; scrub through the pair "
                                    "results that drive it. Prints the address to open; Ctrl-C stops it.")
    st.add_argument("results", metavar="RESULTS_DIR", help="a workflow results folder, e.g. out/actor/results")
    st.add_argument("--target", default=None, help="the target video's name (default: the only one, or the first with a trained generator)")
    st.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    st.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    st.add_argument("--device", default="cpu", help="torch device of the generator (default cpu)")
    st.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                    help="the generator's forward pass: auto (default: ONNX Runtime on CPU when it matches torch, else torch), onnx or torch")
    st.set_defaults(func=cmd_studio)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        return a.func(a)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
    except CliError as e:
        print(f"deep-puppets: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
