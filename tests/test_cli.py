"""The `deep-puppets` command: config values typed by the schema, video names, progress files and their display,
Snakemake's reasons in plain words, and `reenact` end to end on two tiny clips (a rerun does nothing)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import yaml

from deep_puppets import config as dp_config
from deep_puppets import progress
from deep_puppets.cli import plain_reason, planned_jobs, video_names
from deep_puppets.errors import ConfigError
from deep_puppets.snakemake_runner import Display, SnakemakeLines

from .conftest import REPO

# ------------------------------------------------------------------------------------------ --set / --config


@pytest.mark.parametrize("assignment, key, expected", [
    ("gan.iterations=5", ("gan", "iterations"), 5),
    ("render.size=256", ("render", "size"), 256),
    ("framing.mode=frame", ("framing", "mode"), "frame"),
    ("composite.audio=false", ("composite", "audio"), False),
    ("gan.lr_g=1e-4", ("gan", "lr_g"), 1e-4),
    ("transfer.clamp_margin=null", ("transfer", "clamp_margin"), None),
    ("transfer.clamp_margin=0.25", ("transfer", "clamp_margin"), 0.25),
    ("demo.enabled=true", ("demo", "enabled"), True),
    ("gan.streams=colour,gaze", ("gan", "streams"), ["colour", "gaze"]),
    ("videos.my-clip=~/a.mp4", ("videos", "my-clip"), "~/a.mp4"),
])
def test_set_value_is_typed_by_the_schema(assignment, key, expected):
    config = dp_config.set_value({"gan": {"seed": 3}}, assignment)
    assert config[key[0]][key[1]] == expected and type(config[key[0]][key[1]]) is type(expected)
    assert config["gan"]["seed"] == 3  # other values of the section stay


@pytest.mark.parametrize("assignment, message", [
    ("gan.iterations=ten", "'gan.iterations': 'ten' is not an integer"),
    ("render.size=1.5", "'render.size': '1.5' is not an integer"),
    ("framing.mode=box", "'framing.mode': 'box' is not one of head, frame"),
    ("composite.audio=maybe", "'composite.audio': 'maybe' is not true or false"),
    ("fit.lambda_q=lots", "'fit.lambda_q': 'lots' is not a number"),
    ("gan.iteration=5", "'gan.iteration': unknown key 'iteration' in 'gan'"),
    ("colour=red", "'colour': unknown key 'colour'"),
    ("gan.iterations", "expected key=value"),
])
def test_set_value_errors_are_one_line_naming_the_key(assignment, message):
    with pytest.raises(ConfigError) as e:
        dp_config.set_value({}, assignment)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_prepare_types_the_strings_snakemake_config_passes():
    """`snakemake --config 'gan={iterations: 10}'` hands the workflow {'gan': {'iterations': '10'}} (YAML base
    loader: every value a string); the validation failed with "'10' is not of type 'integer'"."""
    from snakemake.cli import parse_config

    given = parse_config(["gan={iterations: 10, lr_g: 1e-4, streams: [colour]}", "composite={audio: false}"])
    assert given["gan"]["iterations"] == "10"
    config = dp_config.prepare({**given, "demo": {"enabled": True}}, REPO, source_dir=REPO / "nowhere")
    assert config["gan"]["iterations"] == 10 and config["gan"]["lr_g"] == 1e-4 and config["composite"]["audio"] is False
    with pytest.raises(ConfigError, match=r"^'gan.iterations': 'ten' is not of type 'integer'$"):
        dp_config.prepare(parse_config(["gan={seed: 3, iterations: ten}"]), REPO, source_dir=REPO / "nowhere")


@pytest.mark.slow
def test_snakemake_config_on_the_command_line(tmp_path):
    """The real command: a dry run with `--config 'gan={iterations: 10}'` plans the workflow."""
    (tmp_path / "config.yaml").write_text("videos: {}\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
                        "--config", "gan={iterations: 10}", "render={size: 64}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "gan_train" in r.stdout


def test_video_names_from_file_stems(tmp_path):
    a, b = tmp_path / "x" / "My clip (1).mp4", tmp_path / "y" / "My clip (1).mov"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"x")
    assert video_names(a, b) == ("My_clip_1-source", "My_clip_1-target")
    assert video_names(tmp_path / "LivePortrait__d3.mp4", tmp_path / "-d0.mp4") == ("LivePortrait_d3", "d0")
    assert video_names(a, a) == ("My_clip_1", "My_clip_1")
    for name in video_names(a, b):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name)


# ------------------------------------------------------------------------------------------ progress


def test_progress_files_are_throttled_and_removed(tmp_path, monkeypatch):
    job = progress.start_job(tmp_path, "landmarks", {"video": "d0", "seg": "001"})
    try:
        path = tmp_path / ".progress" / "landmarks-d0-001.json"
        assert job.path == path
        log = progress.ProgressLog("d0 segment 1", 1000, every=10**6)
        writes = 0
        for i in range(1, 1001):
            before = path.stat().st_mtime_ns if path.exists() else None
            log(i)
            writes += path.exists() and path.stat().st_mtime_ns != before
        data = json.loads(path.read_text())
        assert data["done"] == data["total"] == 1000 and data["unit"] == "frames" and data["job"] == "landmarks d0 001"
        assert 2 <= writes <= 3  # the first and the last frame, at most one more within 0.5 s
    finally:
        progress.end_job()
    assert not path.exists()
    progress.report("nothing", 1, 2)  # outside a job: no file, no error
    assert not list((tmp_path / ".progress").iterdir())


def test_training_reports_iterations_and_held_out_error(tmp_path, monkeypatch):
    """A real (tiny) training run updates the job's progress file with its iterations and held-out E_col."""
    import torch

    from deep_puppets.gan.flow import compute_flow
    from deep_puppets.gan.settings import TrainSettings
    from deep_puppets.gan.train import train

    from .test_gan import TINY, synthetic

    cond, real = synthetic(30, 32)
    flow, frames = compute_flow(real, (32, 32))
    seen = []
    real_update = progress.JobProgress.update

    def spy(self, label, done, total, unit="frames", **extra):
        wrote = real_update(self, label, done, total, unit, **extra)
        if wrote:
            seen.append(json.loads(self.path.read_text()))
        return wrote

    monkeypatch.setattr(progress.JobProgress, "update", spy)
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    job = progress.start_job(tmp_path, "gan_train", {"video": "t"})
    try:
        train(cond, frames, flow, TrainSettings(**TINY), tmp_path / "run", tmp_path / "G.pt")
        assert job.path.exists()
    finally:
        progress.end_job()
        torch.set_num_threads(threads)
    assert [s["done"] for s in seen] == list(range(1, 13))
    assert all(s["total"] == 12 and s["unit"] == "iterations" and s["label"] == "GAN training" for s in seen)
    assert seen[-1]["rate"] > 0 and seen[5]["eta_s"] > 0
    # held-out E_col is computed at the checkpoints (every 3 iterations) and then shown until the next one
    assert "held-out E_col" not in seen[1]["extra"] and 0 < seen[2]["extra"]["held-out E_col"] < 1
    assert seen[3]["extra"]["held-out E_col"] == seen[2]["extra"]["held-out E_col"]
    assert not job.path.exists()


def _record(job, label, done, total, unit, rate, **extra):
    return {"job": job, "label": label, "done": done, "total": total, "unit": unit, "rate": rate,
            "eta_s": (total - done) / rate if rate else None, "updated": time.time(), "extra": extra}


def test_display_turns_progress_files_into_lines(tmp_path):
    folder = tmp_path / ".progress"
    folder.mkdir()
    (folder / "gan_train-d0.json").write_text(json.dumps(_record("gan_train d0", "GAN training", 120, 400, "iterations", 0.5,
                                                                 **{"held-out E_col": 0.08123})))
    (folder / "landmarks-d3-000.json").write_text(json.dumps(_record("landmarks d3 000", "d3 segment 0", 30, 300, "frames", 9.0)))
    (folder / "old.json").write_text(json.dumps({**_record("x", "y", 1, 2, "frames", 1.0), "updated": 1.0}))
    (folder / ".half.json.tmp1").write_text("{")
    records = progress.read_progress(tmp_path, since=time.time() - 60)
    assert [r["job"] for r in records] == ["gan_train d0", "landmarks d3 000"]
    out = io.StringIO()
    d = Display(out, tty=False, every=10)
    d.update(records, now=100.0)
    d.update(records, now=105.0)  # within `every`: nothing new
    lines = out.getvalue().splitlines()
    assert lines == [
        "progress: gan_train d0: 120/400 iterations  ETA 9m20s  0.50 it/s  held-out E_col 0.0812  (GAN training)",
        "progress: landmarks d3 000: 30/300 frames  ETA 30s  9.00 frames/s  (d3 segment 0)",
    ]
    tty = io.StringIO()
    Display(tty, tty=True).update(records[:1])
    assert "[#######.................] 120/400 iterations  ETA 9m20s" in tty.getvalue()


# ------------------------------------------------------------------------------------------ Snakemake's words


def test_snakemake_job_blocks_become_one_line():
    out = []
    lines = SnakemakeLines(out.append)
    text = """Building DAG of jobs...
[Mon Nov 30 00:12:17 2026]
rule gan_train:
    input: results/videos/d0/conditioning.h5
    output: results/videos/d0/gan/generator.pt
    jobid: 3
    reason: Missing output files: results/videos/d0/gan/generator.pt
    wildcards: video=d0
    threads: 2
2026-11-30 00:13:37,150 INFO deep_puppets: job gan_train (video=d0) started (threads 2)
Finished jobid: 3 (Rule: gan_train)
localrule all:
    input: x
    jobid: 0
Error in rule evaluate:
    jobid: 4
Nothing to be done (all requested files are present and up to date).
"""
    for line in text.splitlines():
        lines.feed(line)
    lines.close()
    assert out == ["start gan_train (video=d0)", "Finished jobid: 3 (Rule: gan_train)", "start all", "Error in rule evaluate:",
                   "    jobid: 4", "Nothing to be done (all requested files are present and up to date)."]
    assert lines.nothing_to_do and lines.jobs_started == 2


def test_a_log_record_merged_into_another_jobs_line_is_not_shown():
    """Jobs share Snakemake's stderr: an unterminated write of one (MediaPipe's C++ chatter) and a log record of
    another can land on one line. The record is dropped, the other writer's part kept (or dropped if chatter)."""
    out = []
    lines = SnakemakeLines(out.append)
    for line in ("Finished jobid: 5 (Rule: track)2026-11-30 17:09:33,578 INFO deep_puppets.jobs: d0 segment 1: 23 frames",
                 "W0000 00:00:1796058559.914173   20141 inference_feedback2026-11-30 17:09:33,579 INFO deep_puppets.jobs: x",
                 "2026-11-30 17:09:33,580 INFO deep_puppets.jobs: a record on its own line"):
        lines.feed(line)
    assert out == ["Finished jobid: 5 (Rule: track)"]


def test_under_the_command_jobs_log_only_warnings_to_stderr(tmp_path, monkeypatch, capsys):
    import logging

    from deep_puppets.workflow import JOB_CONSOLE_ENV, setup_logging

    for console, expect_info in (("warning", False), ("", True)):
        monkeypatch.setenv(JOB_CONSOLE_ENV, console)
        log_file = tmp_path / f"job{console}.log"
        setup_logging(str(log_file))
        logging.getLogger("deep_puppets.jobs").info("an info line")
        logging.getLogger("deep_puppets.jobs").warning("a warning line")
        err = capsys.readouterr().err
        assert ("an info line" in err) == expect_info and "a warning line" in err, err
        text = log_file.read_text()
        assert "an info line" in text and "a warning line" in text  # the job's log has everything
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])


def test_reasons_in_plain_words():
    jobs = planned_jobs("""rule gan_train:
    output: results/videos/d0/gan/generator.pt
    reason: Params have changed since last execution: Union of exclusive params before and now across all output: \
before: {'iterations': 20, 'seed': 0} now: {'iterations': 25, 'seed': 0}
    wildcards: video=d0
rule evaluate:
    reason: Input files updated by another job: results/videos/d0/gan/generator.pt; Updated input files: results/videos/d0/track.h5
    wildcards: video=d0
""")
    assert [(j["rule"], j["wildcards"]) for j in jobs] == [("gan_train", "video=d0"), ("evaluate", "video=d0")]
    assert plain_reason(jobs[0]["reason"]) == "settings changed since the last run: iterations 20 -> 25"
    assert plain_reason(jobs[1]["reason"]) == "an earlier step runs first (generator.pt); input changed: track.h5 is newer than its output"
    assert plain_reason("Missing output files: a/b/reenactment.mp4") == "not made yet (reenactment.mp4)"


# ------------------------------------------------------------------------------------------ end to end


def _cli(*args, timeout=900):
    env = {**os.environ, "DEEP_PUPPETS_PROGRESS_EVERY": "1"}
    return subprocess.run([sys.executable, "-m", "deep_puppets.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


TINY_SETS = ["segments.length=24", "segments.overlap=6", "render.size=64", "gan.iterations=20", "gan.checkpoint_every=10",
             "gan.log_every=5", "gan.gen_depth=4", "gan.di_num_D=1"]


@pytest.mark.slow
def test_reenact_end_to_end_and_rerun_does_nothing(tmp_path):
    from deep_puppets.demo import make_demo_clip

    clips = tmp_path / "clips"
    for role, name in (("source", "alice smiles"), ("target", "bob")):
        make_demo_clip(role, clips / f"{name}.mp4", clips / f"{name}_truth.h5", n_frames=40, size=144, fps=25, seed=0)
    with av.open(str(clips / "bob.mp4")) as c:  # the demo clips are square: make the target's size distinct
        target_size = (c.streams.video[0].width, c.streams.video[0].height)
    out = tmp_path / "out"
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    r = _cli("reenact", clips / "alice smiles.mp4", clips / "bob.mp4", "--out", out, "--preset", "demo", "--cores", "2", *sets)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-5000:]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["videos"] == {"alice_smiles": str(clips / "alice smiles.mp4"), "bob": str(clips / "bob.mp4")}
    assert config["gan"]["iterations"] == 20 and config["render"]["size"] == 64 and config["results"] == "results"
    video = out / "results" / "pairs" / "alice_smiles__bob__pose" / "reenactment.mp4"
    assert f"video:  {video}" in r.stdout.splitlines()
    reports = [Path(line.removeprefix("report: ")) for line in r.stdout.splitlines() if line.startswith("report: ")]
    assert len(reports) == 1 and reports[0].stat().st_size > 0  # results/report/index.html, else Snakemake's report
    with av.open(str(video)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == target_size
    assert "start gan_train (video=bob)" in r.stdout
    assert re.search(r"^progress: gan_train bob: \d+/20 iterations  ETA \d+", r.stdout, re.M), r.stdout[-3000:]
    assert " INFO " not in r.stdout  # the jobs' log lines stay in their logs
    assert not list((out / "results" / ".progress").glob("*.json"))  # finished jobs leave no progress file
    log = (out / "results" / "logs" / "gan_train" / "bob.log").read_text().splitlines()
    assert "job gan_train (video=bob) started" in log[1] and re.search(r"job gan_train \(video=bob\) finished in [\d.]+ s$", log[-1])

    mtime = video.stat().st_mtime_ns
    again = _cli("reenact", clips / "alice smiles.mp4", clips / "bob.mp4", "--out", out, "--preset", "demo", "--cores", "2", *sets)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "Nothing needs doing: every output is up to date." in again.stdout
    assert "start " not in again.stdout and video.stat().st_mtime_ns == mtime
    assert f"video:  {video}" in again.stdout.splitlines()

    status = _cli("status", out)
    assert status.returncode == 0 and "nothing to do: every output is up to date" in status.stdout, status.stdout + status.stderr
    dry = _cli("run", out, "--set", "gan.iterations=21", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    status = _cli("status", out)
    assert "  gan_train (video=bob): settings changed since the last run: iterations 20 -> 21" in status.stdout.splitlines()
    assert video.stat().st_mtime_ns == mtime
    # a training killed with the new settings leaves no generator (Snakemake removes a job's outputs before it
    # runs): the finished videos of the old generator must not count as up to date
    (out / "results" / "videos" / "bob" / "gan" / "generator.pt").unlink()
    plan = _cli("status", out).stdout.splitlines()
    assert "  gan_train (video=bob): not made yet (generator.pt); settings changed since the last run: iterations 20 -> 21" in plan
    assert "  gan_synthesize (pair=alice_smiles__bob__pose): an earlier step runs first (generator.pt)" in plan

    bad = _cli("reenact", clips / "alice smiles.mp4", clips / "bob.mp4", "--out", out, "--set", "gan.iterations=ten")
    assert bad.returncode == 2 and bad.stderr.strip() == "config error: 'gan.iterations': 'ten' is not an integer"
    missing = _cli("reenact", clips / "nope.mp4", clips / "bob.mp4", "--out", out)
    assert missing.returncode == 2 and missing.stderr.strip() == f"deep-puppets: {clips / 'nope.mp4'}: no such file"


# ------------------------------------------------------------------------------------------ setup.sh --gpu


def test_setup_gpu_flag_swaps_the_torch_pin_and_stays_idempotent(tmp_path):
    """`bash setup.sh --gpu` installs requirements.txt without its torch pin plus requirements-gpu.txt (a CUDA
    build), a second run only checks, and a run without --gpu goes back to requirements.txt. Run on a copy of
    the files with a stand-in .venv/bin/python that records its calls (nothing is installed)."""
    import shutil

    setup = (REPO / "setup.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\(([^)]*)\)", setup).group(1).split()
    if any(subprocess.run(["dpkg", "-s", p], capture_output=True).returncode for p in packages):
        pytest.skip("setup.sh's Debian packages are not all installed here (the test would install them)")
    for name in ("setup.sh", "requirements.txt", "requirements-gpu.txt", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    log = tmp_path / "calls.log"
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)

    def setup_run(*args):
        log.write_text("")
        r = subprocess.run(["bash", "setup.sh", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return [line for line in log.read_text().splitlines() if "pip install" in line]

    gpu = setup_run("--gpu")
    assert any("-r .venv/.requirements-no-torch.txt -r requirements-gpu.txt" in line for line in gpu), gpu
    no_torch = (tmp_path / ".venv" / ".requirements-no-torch.txt").read_text()
    assert not re.search(r"^torch==", no_torch, re.M) and "numpy==" in no_torch
    assert re.search(r"^torch==\d", (REPO / "requirements-gpu.txt").read_text(), re.M)
    assert setup_run("--gpu") == []  # idempotent: only checks
    cpu = setup_run()
    assert any(line.endswith("-r requirements.txt") for line in cpu) and not any("gpu" in line for line in cpu)
    assert setup_run() == []
    r = subprocess.run(["bash", "setup.sh", "--cuda"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "setup: unknown option '--cuda' (use --gpu or --help)"
    assert "--gpu" in subprocess.run(["bash", "setup.sh", "--help"], cwd=tmp_path, capture_output=True, text=True).stdout
