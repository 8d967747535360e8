"""Landmark stage: small faces, face-less frames, the followed face among several, rolled heads, a real clip,
and the segment file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from skimage.data import astronaut

from deep_puppets import h5io
from deep_puppets.errors import ConfigError
from deep_puppets.face_roi import (
    LEFT_EYE_OUTER,
    RIGHT_EYE_OUTER,
    Detection,
    detector_tiles,
    rank_detections,
    suppress_duplicates,
)
from deep_puppets.landmarks import (
    N_LANDMARKS,
    LandmarkSettings,
    detect_frames,
    run_segment,
)
from deep_puppets.mp4_writer import write_mp4
from deep_puppets.segments import Segment
from deep_puppets.video import probe_video, read_frames

# A square head crop of skimage's astronaut (her face spans about x 179-271, y 71-177 of the 512x512 photo).
HEAD_CENTER, HEAD_SIDE = (225, 124), 150


@pytest.fixture(scope="module")
def head() -> np.ndarray:
    cx, cy = HEAD_CENTER
    h = HEAD_SIDE // 2
    return np.ascontiguousarray(astronaut()[cy - h : cy + h, cx - h : cx + h])


def paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    """``frame`` with ``patch`` resized to ``side`` x ``side`` at (x, y)."""
    interp = cv2.INTER_AREA if side < patch.shape[0] else cv2.INTER_CUBIC
    out = frame.copy()
    out[y : y + side, x : x + side] = cv2.resize(patch, (side, side), interpolation=interp)
    return out


def blank(w: int, h: int, value: int = 0) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def centroid_x(landmarks: np.ndarray) -> np.ndarray:
    return landmarks[..., 0].mean(-1)


def test_small_face_is_found_and_matches_the_large_one(head):
    """A head patch 15 % of the frame height (face about 11 %) in a black 1280x720 frame."""
    big_side, big_at = 480, 80
    ref = detect_frames([paste(blank(640, 640), head, big_at, big_at, big_side)])
    assert ref["valid"].all()

    side, x, y = round(0.15 * 720), 900, 300
    small = paste(blank(1280, 720), head, x, y, side)
    out = detect_frames([small] * 3)  # first frame detected, then tracked

    assert out["valid"].all() and out["landmarks"].shape == (3, N_LANDMARKS, 3)
    assert np.all((out["score"] >= 0.5) & (out["score"] <= 1.0))
    xy = out["landmarks"][..., :2]
    assert xy[..., 0].min() >= x and xy[..., 0].max() <= x + side
    assert xy[..., 1].min() >= y and xy[..., 1].max() <= y + side
    expected = (ref["landmarks"][0, :, :2] - big_at) * (side / big_side) + (x, y)
    err = np.linalg.norm(xy - expected, axis=-1)  # pixels of the small face
    assert np.median(err) < 1.5 and np.percentile(err, 95) < 3.0, (np.median(err), np.percentile(err, 95))
    # z is scaled like x: the depth range scales with the face
    z_ratio = np.ptp(out["landmarks"][0, :, 2]) / np.ptp(ref["landmarks"][0, :, 2])
    assert z_ratio == pytest.approx(side / big_side, rel=0.15)
    box = out["box"][0]  # the ROI holds the face
    assert box[0] <= xy[0, :, 0].min() and box[2] >= xy[0, :, 0].max()


def test_frames_without_a_face_are_flagged_not_dropped(head):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    face = paste(blank(320, 240, 40), head, 100, 40, 160)
    out = detect_frames([blank(320, 240), noise, face, blank(320, 240, 128), face])

    assert out["valid"].tolist() == [False, False, True, False, True]
    assert out["landmarks"].shape == (5, N_LANDMARKS, 3) and out["box"].shape == (5, 4)
    bad = ~out["valid"]
    assert np.isnan(out["landmarks"][bad]).all() and np.isnan(out["box"][bad]).all()
    assert (out["score"][bad] == 0).all()
    assert np.isfinite(out["landmarks"][~bad]).all() and np.isfinite(out["box"][~bad]).all()


def test_empty_input_gives_empty_arrays():
    out = detect_frames([])
    assert out["landmarks"].shape == (0, N_LANDMARKS, 3) and out["valid"].shape == (0,)


@pytest.mark.parametrize("redetect_interval", [0, 2])
def test_the_followed_face_is_kept_when_a_larger_one_appears(head, redetect_interval):
    """Single person: the face followed from the first frames stays followed, even with re-detection."""
    alone = paste(blank(1280, 720, 60), head, 100, 400, 108)  # small: only the detector's tiles find it
    both = paste(alone, head[:, ::-1], 700, 100, 400)  # a much larger (mirrored) face on the right
    out = detect_frames([alone] * 3 + [both] * 5, LandmarkSettings(redetect_interval=redetect_interval))

    assert out["valid"].all()
    cx = centroid_x(out["landmarks"])
    assert np.all((cx > 100) & (cx < 208)), cx


def test_with_several_faces_from_the_start_the_largest_is_taken(head):
    both = paste(paste(blank(640, 360, 60), head, 40, 100, 150), head[:, ::-1], 320, 30, 300)
    out = detect_frames([both] * 2)
    assert out["valid"].all() and np.all(centroid_x(out["landmarks"]) > 320)


def test_rolled_head_is_meshed_in_an_eye_levelled_roi():
    img = astronaut()
    ref = detect_frames([img])["landmarks"][0, :, :2]
    rot = cv2.getRotationMatrix2D((256, 256), 35, 1.0)
    out = detect_frames([cv2.warpAffine(img, rot, (512, 512))] * 2)
    expected = ref @ rot[:, :2].T + rot[:, 2]
    err = np.linalg.norm(out["landmarks"][..., :2] - expected, axis=-1)
    assert out["valid"].all() and np.percentile(err, 95) < 2.5, np.percentile(err, 95)
    eyes = out["landmarks"][0, LEFT_EYE_OUTER, :2] - out["landmarks"][0, RIGHT_EYE_OUTER, :2]
    assert np.degrees(np.arctan2(-eyes[1], eyes[0])) == pytest.approx(35, abs=5)


def test_real_clip_is_tracked_consistently(real_clip):
    frames = read_frames(real_clip, 0, 200)
    out = detect_frames(frames)

    assert out["valid"].mean() >= 0.98
    lm = out["landmarks"][out["valid"]]
    assert np.all(
        (lm[..., 0] >= 0) & (lm[..., 0] < frames.shape[2]) & (lm[..., 1] >= 0) & (lm[..., 1] < frames.shape[1])
    )
    iod = np.linalg.norm(lm[:, LEFT_EYE_OUTER, :2] - lm[:, RIGHT_EYE_OUTER, :2], axis=-1)
    motion = np.median(np.linalg.norm(np.diff(lm[..., :2], axis=0), axis=-1), axis=-1) / iod[1:]
    assert np.median(motion) < 0.03, np.median(motion)  # measured 0.009
    assert motion.max() < 0.15, motion.max()  # measured 0.048

    again = detect_frames(frames[:20])  # deterministic (tracking restarted from a detection)
    assert np.array_equal(again["landmarks"], detect_frames(frames[:20])["landmarks"], equal_nan=True)


def test_run_segment_writes_a_landmarks_file(tmp_path, head):
    # a short synthetic clip: the head drifting right over a grey background
    frames = [paste(blank(256, 192, 90), head, 40 + 2 * t, 30, 140) for t in range(30)]
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=25)
    info = probe_video(video)
    seg = Segment(index=1, start=5, stop=25, core_start=10, core_stop=20)
    out = tmp_path / "landmarks" / "seg001.h5"

    summary = run_segment("clip", video, info, seg, out, LandmarkSettings(crop_scale=1.6))

    arrays, attrs = h5io.read(out, h5io.LANDMARKS)
    assert arrays["frame_index"].tolist() == list(range(5, 25))
    assert arrays["valid"].all() and summary["frames"] == 20 and summary["valid_fraction"] == 1.0
    assert (attrs["video"], attrs["start"], attrs["stop"], attrs["segment"]) == ("clip", 5, 25, 1)
    assert (attrs["width"], attrs["height"], attrs["n_frames"]) == (256, 192, 30)
    detector = json.loads(attrs["detector"])
    assert detector["crop_scale"] == 1.6 and "mediapipe" in detector
    # the segment's frames are exactly frames 5..24 of the clip
    direct = detect_frames(read_frames(video, 5, 25, info), LandmarkSettings(crop_scale=1.6))
    np.testing.assert_array_equal(arrays["landmarks"], direct["landmarks"])


# ------------------------------------------------------------------------------------- settings, pure code


def test_settings_from_config():
    assert LandmarkSettings.from_config(None) == LandmarkSettings()
    s = LandmarkSettings.from_config(
        {"crop_scale": 1.6, "redetect_interval": 10, "rotate": False, "min_valid_fraction": 0.05}
    )
    assert (s.crop_scale, s.redetect_interval, s.rotate) == (1.6, 10, False)
    assert LandmarkSettings.from_config({"min_detection_confidence": 1}).min_detection_confidence == 1.0
    for bad in (
        {"nonsense": 1},
        {"rotate": "yes"},
        {"redetect_interval": 2.5},
        {"min_tracking_confidence": 1.5},
        {"crop_scale": 0.5},
    ):
        with pytest.raises(ConfigError):
            LandmarkSettings.from_config(bad)


@hyp_settings(max_examples=60, deadline=None)
@given(
    w=st.integers(32, 2000),
    h=st.integers(32, 2000),
    level=st.integers(1, 2),
    u=st.floats(0, 1),
    v=st.floats(0, 1),
)
def test_every_small_face_lies_wholly_in_a_tile(w, h, level, u, v):
    pyramid = detector_tiles(w, h, 3)
    assert pyramid[0] == [(0, 0, w, h)]
    tiles = [t for k, lvl in enumerate(pyramid) for t in lvl if k == min(level, len(pyramid) - 1)]
    side = min(t[2] - t[0] for t in tiles) // 2  # a face of half a tile, anywhere in the frame
    fx, fy = u * (w - side), v * (h - side)
    assert all(0 <= t[0] < t[2] <= w and 0 <= t[1] < t[3] <= h for t in tiles)
    assert any(t[0] <= fx and fx + side <= t[2] and t[1] <= fy and fy + side <= t[3] for t in tiles)


def test_detection_ranking_and_duplicates():
    eye = (0.0, 0.0)
    small = Detection((10, 10, 50, 50), 0.9, eye, eye)
    large = Detection((200, 10, 320, 130), 0.6, eye, eye)
    dup = Detection((12, 10, 52, 50), 0.7, eye, eye)
    assert suppress_duplicates([dup, small, large]) == [small, large]
    assert rank_detections([small, large])[0] is large  # no reference: largest
    assert rank_detections([small, large], reference_box=(0, 0, 40, 40))[0] is small  # overlapping the reference
    assert rank_detections([small, large], reference_box=(150, 150, 160, 160))[0] is large  # else the nearest
