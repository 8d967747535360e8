"""The Snakemake workflow itself: dry run, lint, formatting, and the tiny demo run end to end."""

import json
import subprocess
import sys

import pytest
import yaml

from deep_puppets import h5io

from .conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = {"demo": {"n_frames": 24, "size": 160}, "segments": {"length": 16, "overlap": 4}}


def snakemake(workdir, *args, config=TINY, timeout=900):
    """Run the workflow in ``workdir`` with the shipped config overridden by ``config``."""
    override = workdir / "test-config.yaml"
    override.write_text(yaml.safe_dump(config))
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config.yaml"), str(override), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_dry_run_and_lint():
    r = subprocess.run([*SNAKEMAKE, "-n"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_snakefmt_clean():
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    r = snakemake(work, "--cores", "2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work


def test_demo_produces_landmark_files(demo_run):
    res = demo_run / "results"
    for video in ("demo_source", "demo_target"):
        probe = json.loads((res / "videos" / video / "probe.json").read_text())
        assert probe["n_frames"] == 24 and (probe["width"], probe["height"]) == (160, 160)
        segs = sorted((res / "videos" / video / "landmarks").glob("seg*.h5"))
        assert len(segs) == 2  # 24 frames, length 16, overlap 4
        frames = set()
        for s in segs:
            arrays, attrs = h5io.read(s, h5io.LANDMARKS)
            frames |= set(arrays["frame_index"].tolist())
            assert attrs["video"] == video and attrs["n_frames"] == 24
        assert frames == set(range(24))
        summary = json.loads((res / "videos" / video / "landmarks" / "summary.json").read_text())
        assert summary["valid_fraction"] >= 0.95
    for rule in ("demo_clip", "probe", "landmarks", "landmarks_summary"):
        assert list((res / "benchmarks" / rule).rglob("*.tsv")), rule
        assert list((res / "logs" / rule).rglob("*.log")), rule


def test_second_run_schedules_nothing(demo_run):
    r = snakemake(demo_run, "-n")
    assert r.returncode == 0
    assert "Nothing to be done" in r.stdout + r.stderr
