"""Crop boxes (deep_puppets/framing.py): steady, finite, following the head; conditioning and real crops aligned."""

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from deep_puppets import framing, h5io
from deep_puppets.camera import project, rotation_log, rotation_matrix
from deep_puppets.errors import ConfigError
from deep_puppets.fit_types import FitResult
from deep_puppets.framing import FramingSettings, frame_box, head_boxes

from .synthetic_faces import synthetic_model

W, H = 1280, 720


@pytest.fixture(scope="module")
def model():
    return synthetic_model(478, k_id=4, k_exp=6, seed=3)


def moving_cameras(n: int, fps: float, rng=None, jitter_px: float = 0.0, jitter_scale: float = 0.0, yaw_deg: float = 25.0):
    """A head that sways (±150 px), nods, turns (±yaw_deg) and comes closer over ``n / fps`` seconds; optional
    per-frame jitter of the translation (pixels) and the scale (relative)."""
    t = np.arange(n) / fps
    cam = np.zeros((n, 7))
    rot = np.stack([np.radians(10) * np.sin(2 * np.pi * 0.4 * t), np.radians(yaw_deg) * np.sin(2 * np.pi * 0.25 * t), 0 * t], 1)
    cam[:, :3] = rotation_log(rotation_matrix(rot))
    cam[:, 3] = 640 + 150 * np.sin(2 * np.pi * 0.2 * t)
    cam[:, 4] = 360 + 40 * np.sin(2 * np.pi * 0.3 * t + 1)
    cam[:, 6] = 12 * (1 + 0.2 * t / t[-1])
    if rng is not None:
        cam[:, 3:5] += rng.normal(scale=jitter_px, size=(n, 2))
        cam[:, 6] *= 1 + rng.normal(scale=jitter_scale, size=n)
    return cam


def boxes_of(model, cam, valid=None, fps=30.0, **kw):
    valid = np.ones(len(cam), bool) if valid is None else valid
    return head_boxes(model, np.zeros(model.n_id), cam, valid, fps, FramingSettings(**kw), W, H)


# ------------------------------------------------------------------------------------------------ settings


def test_settings_from_config_and_config_errors():
    assert FramingSettings.from_config(None) == FramingSettings()
    assert FramingSettings.from_config({"mode": "frame", "smoothing": 0}).mode == "frame"
    for cfg, key in [({"mode": "face"}, "'framing.mode'"), ({"scale": 0.5}, "'framing.scale'"), ({"smoothing": -1}, "'framing.smoothing'"),
                     ({"offset_y": True}, "'framing.offset_y'"), ({"zoom": 2}, "zoom")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            FramingSettings.from_config(cfg)
    assert json.loads(FramingSettings().to_json()) == {"mode": "head", "scale": 2.0, "offset_y": 0.05, "smoothing": 0.15}


def test_schema_defaults_are_the_settings_defaults():
    from deep_puppets.config import validate_schema

    cfg = validate_schema({})
    assert FramingSettings.from_config(cfg["framing"]) == FramingSettings()


def test_a_bad_framing_value_stops_the_workflow_at_config_time():
    from deep_puppets.config import validate_schema
    from deep_puppets.needs import check_stage_settings

    cfg = validate_schema({})
    check_stage_settings(cfg)
    cfg["framing"]["mode"] = "shoulders"  # (past the schema: the settings object itself refuses it)
    with pytest.raises(ConfigError, match="'framing.mode'"):
        check_stage_settings(cfg)


# ---------------------------------------------------------------------------------------------- the boxes


def test_frame_mode_is_the_old_whole_frame_box(model):
    assert np.array_equal(frame_box(720, 1280), [-280.0, 0.0, 1000.0, 1280.0])  # portrait padded to a square
    assert np.array_equal(frame_box(640, 480), [0.0, -80.0, 640.0, 560.0])
    cam = moving_cameras(20, 30.0)
    boxes = boxes_of(model, cam, mode="frame")
    assert boxes.shape == (20, 4) and np.array_equal(boxes, np.tile(frame_box(W, H), (20, 1)))


def test_boxes_are_square_around_the_head_and_k_face_sizes(model):
    cam = moving_cameras(60, 30.0)
    boxes = boxes_of(model, cam, smoothing=0, offset_y=0.0, scale=2.0)
    side = boxes[:, 2] - boxes[:, 0]
    assert np.allclose(side, boxes[:, 3] - boxes[:, 1])
    # the face (its landmarks' projection) lies inside every box, with margin
    lm = model.landmark_points(model.mean)
    pts = project(np.broadcast_to(lm, (60, *lm.shape)), cam)[..., :2]
    assert (pts.min(axis=1) > boxes[:, :2] + 0.1 * side[:, None]).all() and (pts.max(axis=1) < boxes[:, 2:] - 0.1 * side[:, None]).all()
    # side = 2 x camera scale x the face height of the identity shape
    height = np.ptp(lm[:, 1])
    assert np.allclose(side, 2.0 * cam[:, 6] * height)
    # offset_y moves the centre down by that many face sizes, nothing else
    down = boxes_of(model, cam, smoothing=0, offset_y=0.3, scale=2.0)
    assert np.allclose(down[:, [0, 2]], boxes[:, [0, 2]]) and np.allclose(down[:, 1] - boxes[:, 1], 0.3 * side / 2.0)


def test_face_size_ignores_head_turns_and_expressions(model):
    """Neither a yaw of ±40° nor a strong expression changes the box, although both change the 2D extent."""
    n = 41
    cam = np.tile(np.r_[0, 0, 0, 640, 360, 0, 12.0], (n, 1))
    cam[:, 1] = np.radians(np.linspace(-40, 40, n))
    fit = FitResult(p=np.zeros(model.n_id), q=np.zeros((n, model.n_exp)), camera=cam, valid=np.ones(n, bool), residual=np.zeros(n))
    boxes = framing.fit_boxes(model, fit, 30.0, FramingSettings(smoothing=0), W, H)
    side = boxes[:, 2] - boxes[:, 0]
    assert np.ptp(side) < 1e-9
    lm = model.landmark_points(model.mean)
    width_2d = np.ptp(project(np.broadcast_to(lm, (n, *lm.shape)), cam)[..., 0], axis=1)
    assert np.ptp(width_2d) > 0.1 * width_2d.mean()  # (what a 2D extent would have done)
    q = np.random.default_rng(0).normal(scale=3 * model.exp_std, size=(n, model.n_exp))
    assert np.array_equal(framing.fit_boxes(model, replace(fit, q=q), 30.0, FramingSettings(smoothing=0), W, H), boxes)


def test_smoothing_removes_jitter_without_lagging_the_head(model):
    fps, n = 30.0, 300
    clean = moving_cameras(n, fps)
    noisy = moving_cameras(n, fps, np.random.default_rng(1), jitter_px=3.0, jitter_scale=0.02)
    truth = boxes_of(model, clean, smoothing=0)
    raw = boxes_of(model, noisy, smoothing=0)
    smooth = boxes_of(model, noisy)
    assert framing.smoothness(raw) > 5.0  # several pixels of jitter...
    assert framing.smoothness(smooth) < 0.5  # ...gone
    assert framing.smoothness(smooth) < 0.1 * framing.smoothness(raw)
    # zero phase: the smoothed box stays on the true head (the sway is 150 px at 0.2 Hz), no lag
    side = truth[:, 2] - truth[:, 0]
    err = np.linalg.norm(framing.box_centres(smooth) - framing.box_centres(truth), axis=1) / side
    assert err.max() < 0.02
    lag = np.linalg.norm(framing.box_centres(boxes_of(model, clean)) - framing.box_centres(truth), axis=1) / side
    assert lag.max() < 0.01


def test_smoothing_is_a_time_constant_independent_of_the_frame_rate(model):
    """The same motion at 30 and 60 fps: the same boxes at the same instants (the jitter differs, so compare
    the smoothing of a step: a head that jumps 200 px)."""
    boxes = {}
    for fps in (30.0, 60.0):
        n = int(4 * fps)
        cam = np.tile(np.r_[0, 0, 0, 500, 360, 0, 12.0], (n, 1))
        cam[n // 2 :, 3] += 200
        boxes[fps] = framing.box_centres(boxes_of(model, cam, fps=fps, smoothing=0.3))[:, 0]
    assert np.allclose(boxes[30.0], boxes[60.0][::2], atol=3.0)  # (the 60 fps step lands half a frame later)
    assert np.ptp(boxes[30.0]) > 190


def test_frames_without_a_fit_are_filled_and_every_box_is_finite(model, caplog):
    fps, n = 30.0, 90
    cam = moving_cameras(n, fps)
    valid = np.ones(n, bool)
    valid[:5] = valid[40:50] = valid[-3:] = False
    cam[[1, 3, 44, -1]] = np.nan  # no camera at all in some of them
    cam[60] = np.nan  # a NaN camera flagged valid is unusable too
    boxes = boxes_of(model, cam, valid, smoothing=0)
    assert np.isfinite(boxes).all()
    ref = boxes_of(model, moving_cameras(n, fps), smoothing=0)
    assert np.array_equal(boxes[:5], np.tile(ref[5], (5, 1)))  # held at the start
    assert np.array_equal(boxes[-3:], np.tile(ref[-4], (3, 1)))  # ... and at the end
    w = (np.arange(40, 50) - 39) / 11
    assert np.allclose(boxes[40:50], (1 - w[:, None]) * ref[39] + w[:, None] * ref[50])  # linear across the gap
    assert np.allclose(boxes[60], (ref[59] + ref[61]) / 2)
    assert np.isfinite(boxes_of(model, cam, valid)).all()  # smoothed too
    with caplog.at_level(logging.WARNING, logger="deep_puppets.framing"):
        none = boxes_of(model, np.full((7, 7), np.nan), np.zeros(7, bool))
    assert np.array_equal(none, np.tile(frame_box(W, H), (7, 1)))
    assert "no frame with a fit" in caplog.text


def test_pose_mode_pair_boxes_follow_the_transferred_head(model):
    """pose+expression: the target's head moves like the source's, and so do the pair's boxes (not the target's own)."""
    from deep_puppets.transfer import transfer_motion

    n, fps = 120, 30.0
    src_cam = moving_cameras(n, fps)
    tgt_cam = np.tile(np.r_[0, 0, 0, 300, 400, 0, 9.0], (80, 1))  # a still target elsewhere in its frame
    fit = lambda cam: FitResult(p=np.zeros(model.n_id), q=np.zeros((len(cam), model.n_exp)), camera=cam,  # noqa: E731
                                valid=np.ones(len(cam), bool), residual=np.zeros(len(cam)))  # fmt: skip
    res = transfer_motion(fit(src_cam), fit(tgt_cam), model, model, mode="pose+expression").to_fit()
    settings = FramingSettings()
    boxes = framing.fit_boxes(model, res, fps, settings, W, H)
    own = framing.fit_boxes(model, fit(tgt_cam), fps, settings, W, H)
    side = boxes[:, 2] - boxes[:, 0]
    # the transferred head: the centre of its projected landmarks in every frame
    lm = model.landmark_points(model.shape(res.p, res.q))
    pts = project(lm, res.camera)[..., :2]
    head = (pts.min(axis=1) + pts.max(axis=1)) / 2
    centre = framing.box_centres(boxes) - np.stack([np.zeros(n), settings.offset_y * side / settings.scale], 1)
    assert (np.linalg.norm(centre - head, axis=1) / side).max() < 0.06
    assert np.ptp(framing.box_centres(boxes)[:, 0]) > 100 and np.ptp(framing.box_centres(own)[:, 0]) < 1e-6
    # expression mode keeps the target's own head: the boxes are the target's (ping-pong frames)
    expr = transfer_motion(fit(src_cam), fit(tgt_cam), model, model, mode="expression").to_fit()
    assert np.allclose(framing.fit_boxes(model, expr, fps, settings, W, H), own[0])


def test_tiny_face_warning_uses_the_per_frame_boxes(model, caplog):
    from deep_puppets.jobs.render import face_height_px, warn_if_face_small

    cam = moving_cameras(30, 30.0)
    lm = model.landmark_points(model.mean)
    pts = project(np.broadcast_to(lm, (30, *lm.shape)), cam)
    boxes = boxes_of(model, cam, smoothing=0)
    # in head boxes the face fills about 1/scale of the image whatever its size in the frame
    assert face_height_px(pts, boxes, 64) == pytest.approx(64 / 2.0, rel=0.02)
    whole = boxes_of(model, cam, mode="frame")
    assert face_height_px(pts, whole, 64) < 64 * 0.2
    with caplog.at_level(logging.WARNING, logger="deep_puppets.jobs"):
        warn_if_face_small(pts, boxes, 64, "t.h5")
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="deep_puppets.jobs"):
        warn_if_face_small(pts, whole, 64, "t.h5")
    assert "face only" in caplog.text


# ----------------------------------------------------------------------------- the workflow's renders


def _face_mask(points: np.ndarray, box, size: int) -> np.ndarray:
    import cv2

    from deep_puppets.demo_rig import FACE_OVAL_LOOP
    from deep_puppets.render.geometry import to_crop_pixels

    poly = to_crop_pixels(points[list(FACE_OVAL_LOOP)], box, (size, size))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


@pytest.mark.slow
def test_conditioning_and_real_crops_line_up(tiny_full_run):
    """The demo target's track render (head framing) and the real frames the GAN trains on (the flow file):
    same boxes, real crops made with them, and the rendered face silhouette where the real face is (the demo's
    ground-truth landmarks mapped through the same boxes)."""
    from deep_puppets import demo
    from deep_puppets.gan.data import crop_resize
    from deep_puppets.gan.flow import open_flow_file
    from deep_puppets.render.conditioning_file import open_conditioning
    from deep_puppets.video import iter_frames

    res = tiny_full_run / "results"
    cond = res / "videos" / "demo_target" / "conditioning.h5"
    f, valid, boxes = open_conditioning(cond, ("colour",))
    with f:
        colour = f["colour"][()]
        assert json.loads(f.attrs["framing"]) == json.loads(FramingSettings().to_json())
    size = colour.shape[1]
    truth, _ = h5io.read(res / "demo" / "demo_target_truth.h5", demo.DEMO_TRUTH)
    lm = truth["landmarks2d"].astype(float)
    assert valid.all() and np.isfinite(boxes).all()
    assert np.ptp(framing.box_centres(boxes), axis=0).max() > 1  # head framing: the box moves with the head
    ious, offsets = [], []
    for t in range(len(boxes)):
        real = _face_mask(lm[t], boxes[t], size)
        rendered = colour[t].max(axis=-1) > 0
        ious.append((real & rendered).sum() / (real | rendered).sum())
        offsets.append(np.linalg.norm(np.argwhere(real).mean(0) - np.argwhere(rendered).mean(0)))
    assert np.mean(ious) > 0.8 and min(ious) > 0.7, ious
    assert max(offsets) < 0.04 * size, offsets
    # the GAN's real frames are the video's frames cropped with these very boxes
    fl, _, frames = open_flow_file(res / "videos" / "demo_target" / "gan" / "flow.h5", boxes=boxes)
    with fl:
        assert np.array_equal(fl["box"][()], boxes)
        video = list(iter_frames(res / "demo" / "demo_target.mp4"))
        for t in (0, len(boxes) // 2, len(boxes) - 1):
            assert np.array_equal(frames[t], crop_resize(video[t], boxes[t], frames.shape[1:3]))


@pytest.mark.slow
def test_pair_boxes_follow_the_transferred_head_in_the_workflow(tiny_full_run):
    """The pose+expression pair's conditioning boxes are those of the transferred fit: the rendered face sits in
    the middle of every crop, and the boxes differ from the target's own."""
    from deep_puppets.render.conditioning_file import open_conditioning
    from deep_puppets.transfer_files import read_transfer

    res = tiny_full_run / "results"
    pair = res / "pairs" / "demo_source__demo_target__pose"
    f, valid, boxes = open_conditioning(pair / "conditioning.h5", ("colour",))
    with f:
        colour = f["colour"][()]
    result, attrs = read_transfer(pair / "transfer.h5")
    from deep_puppets.jobs.model import load_video_model

    model = load_video_model({"type": "person"}, res / "videos" / "demo_target" / "model.h5")
    centre, _, known = framing.head_track(model, result.p, result.camera, result.valid)
    side = boxes[:, 2] - boxes[:, 0]
    settings = FramingSettings()
    offset = np.stack([np.zeros(len(side)), settings.offset_y * side / settings.scale], 1)
    assert known.all()
    assert (np.linalg.norm(framing.box_centres(boxes) - offset - centre, axis=1) / side).max() < 0.03
    size = colour.shape[1]
    for t in np.flatnonzero(valid):
        sil = np.argwhere(colour[t].max(axis=-1) > 0)
        assert np.linalg.norm(sil.mean(0) - size / 2) < 0.12 * size, t
    f, _, own = open_conditioning(res / "videos" / "demo_target" / "conditioning.h5")
    f.close()
    n = min(len(own), len(boxes))
    assert np.abs(own[:n] - boxes[:n]).max() > 1  # the target's own boxes follow the target's own head
