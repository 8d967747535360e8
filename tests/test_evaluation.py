import numpy as np
import pytest

from deep_puppets import evaluation as ev


def test_identical_frames_give_zero():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ev.e_col(a, a), 0)
    assert np.isinf(ev.psnr(a[0], a[0]))
    assert ev.ssim(a[0], a[0]) == pytest.approx(1.0)


def test_known_perturbation_gives_known_e_col():
    real = np.full((10, 10, 3), 0.5, np.float32)
    synth = real.copy()
    synth[:5, :, 0] += 0.3  # half the pixels off by 0.3 in red
    synth[5:, :, :] += 0.1  # the other half off by 0.1 in every channel: distance 0.1*sqrt(3)
    want = 0.5 * 0.3 + 0.5 * 0.1 * np.sqrt(3)
    assert ev.e_col(synth, real) == pytest.approx(want, rel=1e-6)
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert ev.e_col(synth, real, mask) == pytest.approx(0.3, rel=1e-6)
    mse = 0.5 * 0.09 / 3 + 0.5 * 0.01
    assert ev.psnr(synth, real) == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)


def test_uint8_and_float_agree():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert ev.e_col(a, b) == pytest.approx(ev.e_col(a / 255.0, b / 255.0), rel=1e-6)


def test_heat_map_peak_is_where_the_error_is():
    real = np.zeros((40, 60, 3), np.float32)
    synth = real.copy()
    synth[25:30, 40:47] = 0.4
    heat = ev.heat_map(ev.error_map(synth, real))
    brightness = heat.astype(float).sum(-1)
    y, x = np.unravel_index(brightness.argmax(), brightness.shape)
    assert 25 <= y < 30 and 40 <= x < 47
    assert brightness[:20].max() == brightness[0, 0]  # no error elsewhere: uniform background colour


def test_summary():
    s = ev.summarize([1, 2, 3, np.nan])
    assert s == {"mean": 2.0, "median": 2.0, "p95": pytest.approx(2.9), "max": 3.0, "n": 3}


def test_scored_frames_counts_each_exclusion_once():
    keep, counts = ev.scored_frames([1, 0, 1, 1, 0], [1, 1, 0, 1, 0], [9, 9, 0, 0, 0])
    assert keep.tolist() == [True, False, False, False, False]
    assert counts == {"held_out": 5, "scored": 1, "excluded": {ev.NOT_DETECTED: 2, ev.NOT_RENDERED: 1, ev.NO_FACE: 1}}


def test_every_method_and_region_is_scored_on_one_declared_frame_set(tiny_full_run, tmp_path, caplog):
    """Held-out frames without a detected face or without a face in the render are left out of every score
    (not only of the face region's), and the summary, log and plot title say how many and why."""
    import json
    import logging

    import yaml

    from deep_puppets import config as dp_config, jobs
    from deep_puppets.tracks import read_track, write_track

    from .conftest import REPO, TINY_FULL, merged

    res = tiny_full_run / "results" / "videos" / "demo_target"
    cfg = dp_config.prepare(merged(yaml.safe_load((REPO / "config.yaml").read_text()), TINY_FULL), tiny_full_run)
    track, attrs = read_track(res / "track.h5")
    held = np.arange(27, 40)  # the last third of 40 frames (tests/test_workflow.py)
    track.valid[[28, 29]] = False  # the detector found no face: bridged fits
    track.camera[[33, 34], 3] += 1e4  # the face rendered far outside the frame: a black conditioning image
    write_track(tmp_path / "track.h5", track, attrs)
    cond = tmp_path / "conditioning.h5"
    # (whole-frame boxes: head boxes would follow the displaced face and render it)
    jobs.render_conditioning(cfg["model"], res / "model.h5", tmp_path / "track.h5", res / "texture.h5", cond, {}, cfg["render"], "track",
                             {"mode": "frame"})  # fmt: skip

    outs = {k: tmp_path / name for k, name in
            [("csv", "metrics.csv"), ("json", "summary.json"), ("plot", "e_col.png"), ("heat_mp4", "heat.mp4"), ("side_mp4", "side.mp4")]}
    with caplog.at_level(logging.INFO, logger="deep_puppets"):
        jobs.evaluate_target(res / "gan" / "generator.pt", cond, res / "gan" / "flow.h5", tmp_path / "track.h5", outs)

    import pandas as pd

    df = pd.read_csv(outs["csv"])
    want = sorted(set(held.tolist()) - {28, 29, 33, 34})
    for (method, region), g in df.groupby(["method", "region"]):
        assert sorted(g.frame) == want, (method, region)
        assert g.e_col.notna().all() and g.psnr.notna().all(), (method, region)
    assert set(df.method) == {"gan", "nearest", "mean"} and set(df.region) == {"frame", "face"}
    summary = json.loads(outs["json"].read_text())
    frames = summary["frames"]
    assert (frames["held_out"], frames["scored"], frames["scored_frames"]) == (13, 9, want)
    assert frames["excluded"] == {ev.NOT_DETECTED: 2, ev.NO_FACE: 2}
    assert summary["n_frames"] == 9 and summary["held_out_frames"] == [27, 40]
    for method, regions in summary["methods"].items():
        assert {r: m["e_col"]["n"] for r, m in regions.items()} == {"frame": 9, "face": 9}, method
    assert "9 of 13 held-out frames (4 excluded: 2 no face detected (bridged fit), 2 no face in the render)" in caplog.text
    assert outs["plot"].stat().st_size > 0 and not list(tmp_path.glob(".*tmp*"))
