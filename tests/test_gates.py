"""The workflow stops where a video can first be judged too short or too faceless, and nothing downstream runs:
the probe (frame count vs. what the model and the GAN need) and the landmark gate (frames with a face)."""

import re

import pytest

from .conftest import TINY_FULL, merged, run_workflow

pytestmark = pytest.mark.slow  # every test here runs the workflow


def test_too_few_faces_stop_at_the_gate_before_any_model_or_fit(tmp_path):
    """35 of 80 frames with a face: enough for a person model (30), too few for min_valid_fraction 0.5."""
    from deep_puppets.demo import render_clip
    from deep_puppets.mp4_writer import write_mp4

    frames, _, _ = render_clip("source", n_frames=80, size=160)
    frames[35:] = 90  # no face after frame 35
    (tmp_path / "data").mkdir()
    write_mp4(tmp_path / "data" / "sparse.mp4", frames, fps=25)
    config = merged(TINY_FULL, {"demo": {"enabled": False}, "videos": {"sparse": "data/sparse.mp4"},
                                "landmarks": {"min_valid_fraction": 0.5}})
    r = run_workflow(tmp_path, "--cores", "2", "--keep-going", config=config, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.search(r"Error in rule landmarks_summary: sparse \(\S*data/sparse\.mp4\): 3\d frames with a face; at least 40 needed", out), out[-4000:]
    res = tmp_path / "results" / "videos" / "sparse"
    assert sorted(p.name for p in (res / "landmarks").glob("seg*.h5"))  # the landmarks ran
    assert not (res / "model.h5").exists()
    assert not (res / "fit").exists()
    assert not (res / "track.h5").exists()


def test_clip_len_longer_than_the_training_frames_stops_at_the_probe(tmp_path):
    """The tiny demo target has 40 frames, 27 of them for training: gan.clip_len 30 cannot be met."""
    config = merged(TINY_FULL, {"gan": {"clip_len": 30}})
    r = run_workflow(tmp_path, "--cores", "1", "results/videos/demo_target/landmarks/summary.json", config=config, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    line = ("Error in rule probe: demo_target (results/demo/demo_target.mp4): 40 frames, 27 of them for training "
            "('gan.held_out_fraction' 0.333 holds out 13); 'gan.clip_len' 30 needs at least 30 training frames")
    assert line in out, out[-4000:]
    assert "Traceback" not in out
    res = tmp_path / "results" / "videos" / "demo_target"
    assert not (res / "probe.json").exists()
    assert not (res / "landmarks").exists()
