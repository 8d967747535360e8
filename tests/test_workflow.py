"""The Snakemake workflow itself: dry run, lint, formatting, and the tiny demo run end to end."""

import json
import subprocess
import sys

import pytest

from deep_puppets import h5io

from .conftest import REPO, TINY_FULL, copy_run, merged, run_workflow

pytestmark = pytest.mark.slow  # every test here runs the workflow

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PAIR = "demo_source__demo_target__pose"


def test_dry_run_and_lint():
    r = subprocess.run([*SNAKEMAKE, "-n"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_snakefmt_clean():
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def demo_run(tiny_full_run):
    """The whole DAG at toy sizes (conftest.TINY_FULL: 40-frame clips, 2 segments each, 64² renders, a
    20-iteration GAN), run once per session and shared; tests that write copy it first."""
    return tiny_full_run


def test_demo_produces_landmark_files(demo_run):
    res = demo_run / "results"
    for video in ("demo_source", "demo_target"):
        probe = json.loads((res / "videos" / video / "probe.json").read_text())
        assert probe["n_frames"] == 40 and (probe["width"], probe["height"]) == (160, 160)
        segs = sorted((res / "videos" / video / "landmarks").glob("seg*.h5"))
        assert len(segs) == 2  # 40 frames, length 24, overlap 6
        frames = set()
        for s in segs:
            arrays, attrs = h5io.read(s, h5io.LANDMARKS)
            frames |= set(arrays["frame_index"].tolist())
            assert attrs["video"] == video and attrs["n_frames"] == 40
        assert frames == set(range(40))
        summary = json.loads((res / "videos" / video / "landmarks" / "summary.json").read_text())
        assert summary["valid_fraction"] >= 0.95
    for rule in ("demo_clip", "probe", "landmarks", "landmarks_summary"):
        assert list((res / "benchmarks" / rule).rglob("*.tsv")), rule
        assert list((res / "logs" / rule).rglob("*.log")), rule


def test_demo_runs_end_to_end(demo_run):
    res = demo_run / "results"
    target, pair = res / "videos" / "demo_target", res / "pairs" / PAIR
    for f in ["track.h5", "texture.h5", "conditioning.h5", "gan/generator.pt", "gan/losses.png", "evaluation/summary.json",
              "evaluation/e_col.png", "evaluation/seam.png", "evaluation/flicker.png",
              "evaluation/distance_vs_error.png", "evaluation/heat_map.mp4", "evaluation/side_by_side.mp4", "diagnostics/tracking.json",
              "diagnostics/camera_smoothing.png", "diagnostics/overlay.mp4"]:
        assert (target / f).stat().st_size > 0, f
    for f in ["transfer.h5", "conditioning.h5", "reenactment.mp4", "side_by_side.mp4", "ood.json", "ood.png"]:
        assert (pair / f).stat().st_size > 0, f
    from deep_puppets.video import probe_video

    out = probe_video(pair / "reenactment.mp4")
    assert out.n_frames == 40 and (out.width, out.height) == (160, 160) and out.codec == "h264"  # the target's own frames
    summary = json.loads((target / "evaluation" / "summary.json").read_text())
    assert set(summary["methods"]) == {"gan", "nearest", "alpha", "mean"}
    assert summary["held_out_frames"] == [27, 40]  # the last third of 40 frames, never trained on
    assert {"flicker", "training_distance", "headroom"} <= set(summary)
    ood = json.loads((pair / "ood.json").read_text())
    assert len(ood["per_frame"]) == 40 and ood["training_frames"] == [0, 27] and ood["mean"] >= 0
    tracking = json.loads((target / "diagnostics" / "tracking.json").read_text())
    assert tracking["nme_mean"] < 0.05 and tracking["jitter_ratio"] < 1


def test_self_transfer_renders_the_targets_own_track(demo_run, tmp_path):
    """pose+expression with source = target reproduces the target's own conditioning frames."""
    import h5py

    work = copy_run(demo_run, tmp_path / "run")
    pairs = [{"source": "demo_source", "target": "demo_target"}, {"source": "demo_target", "target": "demo_target"}]
    r = run_workflow(work, "--cores", "2", "results/pairs/demo_target__demo_target__pose/conditioning.h5", config=merged(TINY_FULL, {"pairs": pairs}))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = work / "results"
    with h5py.File(res / "videos/demo_target/conditioning.h5") as own, h5py.File(res / "pairs/demo_target__demo_target__pose/conditioning.h5") as same:
        for stream in ("colour", "correspondence", "gaze"):
            a, b = own[stream][()].astype(int), same[stream][()].astype(int)
            assert a.shape == b.shape
            # identical but for pixels on a silhouette edge, where 1e-12 parameter noise may flip coverage
            assert (a != b).any(axis=-1).mean() < 1e-4, stream


def test_html_report(demo_run, tmp_path):
    work = copy_run(demo_run, tmp_path / "run")
    r = run_workflow(work, "--report", "report.zip")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    import zipfile

    names = zipfile.ZipFile(work / "report.zip").namelist()
    for want in ("reenactment.html", "e_col.png", "heat_map.html", "overlay.html", "camera_smoothing.png", "losses.png"):
        assert any(n.endswith(want) for n in names), want
    assert not [n for n in names if n.endswith(".mp4")], names  # every video is a page that plays it (tests/test_report.py)
