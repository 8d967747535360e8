import numpy as np
import pytest

from deep_puppets import evaluation as ev


def test_identical_frames_give_zero():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ev.e_col(a, a), 0)
    scores, _ = ev.region_scores(a[0], a[0], {"frame": np.ones(a.shape[1:3], bool)})
    assert np.isinf(scores["frame"]["psnr"]) and scores["frame"]["ssim"] == pytest.approx(1.0)


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
    scores, _ = ev.region_scores(synth, real, {"frame": np.ones((10, 10), bool)})
    assert scores["frame"]["psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)


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
    s = ev.summary_statistics([1, 2, 3, np.nan])
    assert s == {"mean": 2.0, "median": 2.0, "p95": pytest.approx(2.9), "max": 3.0, "n": 3}


def test_scored_frames_counts_each_exclusion_once():
    keep, counts = ev.scored_frames([1, 0, 1, 1, 0], [1, 1, 0, 1, 0], [9, 9, 0, 0, 0])
    assert keep.tolist() == [True, False, False, False, False]
    assert counts == {"held_out": 5, "scored": 1, "excluded": {ev.NOT_DETECTED: 2, ev.NOT_RENDERED: 1, ev.NO_FACE: 1}}


# ------------------------------------------------------------------------------ regions and the seam


def _disc(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.float32)


def test_regions_are_what_they_claim():
    """An error only outside the face mask counts in the whole frame (and in the head crop when inside the box)
    but not in the face region; an error inside the mask counts in all three."""
    rng = np.random.default_rng(3)
    real = rng.integers(40, 200, (60, 80, 3), dtype=np.uint8)
    box = (10.0, 5.0, 50.0, 45.0)  # frame pixels x 10..49, y 5..44
    alpha = _disc(real.shape[:2], (25, 30), 8)
    masks = ev.regions(alpha, box)
    assert masks["frame"].all() and masks["face"].sum() == int((alpha >= 0.5).sum())
    assert masks["head"].sum() == 40 * 40 and masks["head"][5:45, 10:50].all()

    outside_box = real.copy()
    outside_box[50:58, 60:78] = 255  # below and right of the box
    scores, err = ev.region_scores(outside_box, real, masks)
    assert scores["frame"]["e_col"] > 0 and scores["frame"]["psnr"] < np.inf and scores["frame"]["ssim"] < 1
    for region in ("head", "face"):
        assert scores[region]["e_col"] == 0 and scores[region]["psnr"] == np.inf and scores[region]["ssim"] == 1
    assert scores["frame"]["e_col"] == pytest.approx(err.sum() / err.size)

    in_box = real.copy()
    in_box[6:12, 12:20] = 0  # inside the box, far from the face
    scores, _ = ev.region_scores(in_box, real, masks)
    assert scores["frame"]["e_col"] > 0 and scores["head"]["e_col"] > scores["frame"]["e_col"]
    assert scores["face"]["e_col"] == 0 and scores["face"]["ssim"] == 1

    in_face = real.copy()
    in_face[23:28, 28:33] = 0
    scores, err = ev.region_scores(in_face, real, masks)
    assert 0 < scores["frame"]["e_col"] < scores["head"]["e_col"] < scores["face"]["e_col"]
    assert scores["face"]["e_col"] == pytest.approx(err[alpha >= 0.5].mean())


def test_ssim_map_is_the_whole_frame_map():
    """The SSIM map computed on the differing pixels' neighbourhood only is scikit-image's whole-frame map."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    real = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for r0, c0 in [(20, 30), (0, 0), (44, 60)]:  # inside, and touching the frame's corners
        synth = real.copy()
        synth[r0:r0 + 4, c0:c0 + 4] = rng.integers(0, 256, (min(4, 48 - r0), min(4, 64 - c0), 3))
        _, full = structural_similarity(ev.to_float(synth), ev.to_float(real), win_size=7, channel_axis=-1, data_range=1.0, full=True)
        np.testing.assert_allclose(ev.ssim_map(synth, real), full.mean(-1), atol=1e-6)  # float32 sums
    assert (ev.ssim_map(real, real) == 1).all()


def test_seam_band_and_interior_of_a_known_error():
    alpha = np.zeros((40, 40), np.float32)
    alpha[5:35, 5:35] = 0.5  # the band: 30 x 30 - 20 x 20 = 500 pixels
    alpha[10:30, 10:30] = 1.0  # the interior: 400 pixels
    err = np.full(alpha.shape, 0.7, np.float32)  # outside the mask: counted in neither
    err[alpha == 0.5], err[alpha == 1] = 0.3, 0.1
    one = ev.seam_sums(err, alpha)
    assert one["band"] == (pytest.approx(150.0), 500) and one["interior"] == (pytest.approx(40.0), 400)
    s = ev.seam_summary([one])
    assert s["band_e_col"] == pytest.approx(0.3) and s["interior_e_col"] == pytest.approx(0.1)
    assert s["ratio"] == pytest.approx(3.0) and not s["meets_bar"] and s["n_frames"] == 1
    # pooled over frames by pixels: a second frame with the same error in both parts
    err2 = np.where(alpha > 0, 0.2, 0.0).astype(np.float32)
    s = ev.seam_summary([one, ev.seam_sums(err2, alpha)])
    assert s["band_e_col"] == pytest.approx((150 + 100) / 1000) and s["interior_e_col"] == pytest.approx((40 + 80) / 800)
    assert s["ratio"] == pytest.approx(0.25 / 0.15) and s["n_frames"] == 2


def test_alpha_compositing_differs_from_nearest_only_inside_the_silhouette():
    from deep_puppets.composite import face_alpha, frame_alpha, paste, silhouette
    from deep_puppets.gan.held_out import alpha_composite

    rng = np.random.default_rng(5)
    crop = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[_disc((32, 32), (15, 16), 7) > 0] = (200, 150, 120)
    ac = alpha_composite(crop, colour)
    sil = silhouette(colour)
    assert np.array_equal(ac[~sil], crop[~sil]) and np.array_equal(ac[sil], colour[sil])
    plate = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = (30.5, 10.25, 94.5, 74.25)  # 2x scale, sub-pixel offset
    a = face_alpha(colour, 0.12, 0.08)
    near, alpha = paste(plate, crop, a, box), paste(plate, ac, a, box)
    differ = (near != alpha).any(-1)
    inside = frame_alpha(sil.astype(np.float32), box, plate.shape[:2]) > 0
    assert differ.any() and not (differ & ~inside).any()


# --------------------------------------------------------------------------------- on a finished tiny run


def _held_out_setup(run, track_file=None, cond_file=None):
    from deep_puppets.gan.data import split_frames
    from deep_puppets.gan.inference import load_generator
    from deep_puppets.tracks import read_track

    res = run / "results" / "videos" / "demo_target"
    track, _ = read_track(track_file or res / "track.h5")
    G, s = load_generator(res / "gan" / "generator.pt")
    return res, track, G, s, split_frames(40, s.held_out_fraction)


@pytest.mark.slow
def test_every_method_equals_the_real_frame_outside_the_mask(tiny_full_run):
    """Held-out composites: the plate is the real frame t read from the video; every method's frame equals it
    bit for bit wherever the mask is 0, so whole-frame differences come only from inside the mask; alpha
    compositing differs from nearest only inside the rendered silhouette."""
    from deep_puppets.composite import frame_alpha, silhouette
    from deep_puppets.evaluation import METHODS
    from deep_puppets.gan.data import resize
    from deep_puppets.gan.flow import open_flow_file
    from deep_puppets.gan.held_out import held_out_composites
    from deep_puppets.ingest import read_probe
    from deep_puppets.render.conditioning_file import open_conditioning
    from deep_puppets.video import iter_frames, read_frames

    res, track, G, s, (train, held) = _held_out_setup(tiny_full_run)
    video = tiny_full_run / "results" / "demo" / "demo_target.mp4"
    info = read_probe(res / "probe.json")
    real = read_frames(video)
    fc, valid, boxes = open_conditioning(res / "conditioning.h5", s.streams)
    keep = np.ones(len(held), bool)
    keep[[1, 4]] = False
    with fc, open_flow_file(res / "gan" / "flow.h5")[0] as ff:
        plates = iter_frames(video, int(held[0]), int(held[-1]) + 1, info)
        out = list(held_out_composites(G, s, {k: fc[k] for k in s.streams}, boxes, ff["frames"], np.hstack([track.q, track.camera]),
                                       train, held, keep, plates, 0.12, 0.08))
        colour = {c.frame: resize(fc["colour"][c.frame], tuple(s.size)) for c in out}
    assert [c.frame for c in out] == held[keep].tolist()
    for c in out:
        assert np.array_equal(c.real, real[c.frame]) and np.array_equal(c.box, boxes[c.frame])
        outside = c.alpha == 0
        assert outside.any() and (c.alpha >= 0.5).any()
        for m in METHODS:
            assert c.methods[m].shape == real[c.frame].shape
            assert np.array_equal(c.methods[m][outside], c.real[outside]), (c.frame, m)
            assert (c.methods[m] != c.real).any(), (c.frame, m)  # something was pasted
        assert c.nearest in set(train.tolist())
        differ = (c.methods["alpha"] != c.methods["nearest"]).any(-1)
        inside = frame_alpha(silhouette(colour[c.frame]).astype(np.float32), c.box, c.real.shape[:2]) > 0
        assert differ.any() and not (differ & ~inside).any(), c.frame


@pytest.mark.slow
def test_every_method_and_region_is_scored_on_one_declared_frame_set(tiny_full_run, tmp_path, caplog):
    """Held-out frames without a detected face or without a face in the render are left out of every score
    (not only of the face region's), and the summary, log and plot title say how many and why."""
    import json
    import logging

    import yaml

    from deep_puppets import config as dp_config
    from deep_puppets.jobs import evaluate, gan, render
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
    render.render_track(model_cfg=cfg["model"], model_file=res / "model.h5", track_file=tmp_path / "track.h5", texture_file=res / "texture.h5",
                        out=cond, previews={}, render_cfg=cfg["render"], framing_cfg={"mode": "frame"})  # fmt: skip
    # the real crops of the flow file follow the conditioning's boxes: recomputed for the new ones
    video = tiny_full_run / "results" / "demo" / "demo_target.mp4"
    flow = tmp_path / "flow.h5"
    gan.gan_flow(video_path=video, conditioning_file=cond, out=flow, gan_cfg=cfg["gan"], render_cfg=cfg["render"])

    outs = {k: tmp_path / name for k, name in [("csv", "metrics.csv"), ("json", "summary.json"), ("plot", "e_col.png"), ("seam_plot", "seam.png"),
                                               ("flicker_plot", "flicker.png"), ("distance_plot", "distance.png"),
                                               ("heat_mp4", "heat.mp4"), ("side_mp4", "side.mp4")]}
    with caplog.at_level(logging.INFO, logger="deep_puppets"):
        evaluate.evaluate(generator=res / "gan" / "generator.pt", conditioning_file=cond, flow_file=flow, track_file=tmp_path / "track.h5",
                          video_path=video, probe_json=res / "probe.json", outs=outs, composite_cfg=cfg["composite"], model_cfg=cfg["model"],
                          model_file=res / "model.h5")

    import pandas as pd

    df = pd.read_csv(outs["csv"])
    want = sorted(set(held.tolist()) - {28, 29, 33, 34})
    for (method, region), g in df.groupby(["method", "region"]):
        assert sorted(g.frame) == want, (method, region)
        assert g.e_col.notna().all() and g.psnr.notna().all() and g.ssim.notna().all(), (method, region)
    assert set(df.method) == {"gan", "nearest", "alpha", "mean"} and set(df.region) == {"frame", "head", "face"}
    # the same pixels' errors seen over larger regions: diluted by the real frame around the mask
    wide = df.pivot_table(index=["frame", "method"], columns="region", values="e_col")
    assert (wide["face"] >= wide["head"]).all() and (wide["head"] >= wide["frame"]).all()
    summary = json.loads(outs["json"].read_text())
    frames = summary["frames"]
    assert (frames["held_out"], frames["scored"], frames["scored_frames"]) == (13, 9, want)
    assert frames["excluded"] == {ev.NOT_DETECTED: 2, ev.NO_FACE: 2}
    assert summary["n_frames"] == 9 and summary["held_out_frames"] == [27, 40] and summary["frame_size"] == [160, 160]
    for method, regions in summary["methods"].items():
        assert {r: m[k]["n"] for r, m in regions.items() for k in m} == {"frame": 9, "head": 9, "face": 9}, method
    mean = summary["mean"]
    for other in ("nearest", "alpha", "mean"):
        assert summary["gan_improvement_db"][other] == pytest.approx(mean["gan"]["face"]["psnr"] - mean[other]["face"]["psnr"])
    seam = summary["seam"]
    assert seam["ratio"] == pytest.approx(seam["band_e_col"] / seam["interior_e_col"]) and seam["n_frames"] == 9
    assert "9 of 13 held-out frames (4 excluded: 2 no face detected (bridged fit), 2 no face in the render)" in caplog.text
    from deep_puppets.video import probe_video

    for k in ("heat_mp4", "side_mp4"):
        assert probe_video(outs[k]).n_frames == 9, k
    assert outs["plot"].stat().st_size > 0 and outs["seam_plot"].stat().st_size > 0 and not list(tmp_path.glob(".*tmp*"))
    # flicker: a value where the frame before is scored too (not after the gaps 28-29 and 33-34, nor the first)
    flicker = summary["flicker"]
    assert flicker["frames"] == want and set(flicker["mean"]) == {"real", "gan", "nearest", "alpha", "mean"}
    for method, regions in flicker["per_frame"].items():
        for region, values in regions.items():
            has = [t for t, v in zip(want, values) if v is not None]
            assert has == [t for t in want if t - 1 in want] and all(v >= 0 for v in values if v is not None), (method, region)
    # the mean training crop never changes: only the real frame around it moves
    assert flicker["mean"]["mean"]["face"] < flicker["mean"]["nearest"]["face"]
    dist = summary["training_distance"]
    assert len(dist["per_frame"]) == 9 and all(d >= 0 for d in dist["per_frame"]) and set(dist["nearest_training_frame"]) <= set(range(27))
    assert -1 <= dist["spearman_vs_gan_face_e_col"] <= 1
    assert outs["flicker_plot"].stat().st_size > 0 and outs["distance_plot"].stat().st_size > 0
    # headroom: the generator and the oracle retrieval on (sampled) training frames and on the scored held-out ones
    room = summary["headroom"]
    assert room["frames"]["held_out"] == 9 and 0 < room["frames"]["training"] <= 27
    for k in ("gan", "oracle_retrieval"):
        assert all(np.isfinite(room[k][p]) and 0 < room[k][p] <= 100 for p in ("training", "held_out")), k
    assert room["gan_fit_gap_db"] == pytest.approx(room["gan"]["training"] - room["gan"]["held_out"])
    assert "headroom (face PSNR in the crop)" in caplog.text
