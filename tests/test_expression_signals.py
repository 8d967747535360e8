"""The named expression space (deep_puppets/expression_signals.py) on synthetic landmark sets: MediaPipe's canonical
face with lids closed, mouth opened, gaze, brows, smile, pucker, and rotated heads, in model space and in the image."""

from __future__ import annotations

import numpy as np
import pytest

from deep_puppets.camera import FLIP, yaw_pitch_roll_matrix
from deep_puppets.expression_signals import (
    LEFT_EYE_CORNERS,
    LEFT_LID_PAIRS,
    RIGHT_EYE_CORNERS,
    RIGHT_LID_PAIRS,
    SIGNALS,
    blink_events,
    expression_signals,
    rest_value,
    signal_range,
)
from deep_puppets.models import facemesh


def _face():
    return np.array(facemesh.canonical_face(), dtype=float)


def _signals(*faces, y_down=False):
    s = expression_signals(np.stack(faces), y_down=y_down)
    return {k: v for k, v in s.items()}


def _close_lids(v, pairs, keep=0.1):
    v = v.copy()
    for up, lo in pairs:
        v[up, :2] = v[lo, :2] + keep * (v[up, :2] - v[lo, :2])
    return v


def _open_jaw(v, drop=1.0):
    v = v.copy()
    below = v[:, 1] < -4.4  # the lower lip and chin, below the mouth corners (-4.34)
    v[below, 1] -= drop
    return v


def _edit(v, idx, d):
    v = v.copy()
    v[list(idx)] += np.asarray(d, float)
    return v


def _pucker(v):
    v = v.copy()
    v[[61, 291], 0] *= 0.75  # corners toward the middle
    v[0, 1] += 0.3  # lips thicker at the centre
    v[17, 1] -= 0.3
    return v


def _squint_points():
    lower = {lo for _, lo in LEFT_LID_PAIRS + RIGHT_LID_PAIRS}
    return sorted(lower | set(LEFT_EYE_CORNERS + RIGHT_EYE_CORNERS))


EDITS = {  # edit -> the signals it must move
    "close left lids": (lambda v: _close_lids(v, LEFT_LID_PAIRS), {"eye_aperture_left"}),
    "close right lids": (lambda v: _close_lids(v, RIGHT_LID_PAIRS), {"eye_aperture_right"}),
    "open jaw": (_open_jaw, {"mouth_open"}),
    "gaze right": (lambda v: _edit(v, facemesh.IRIS, [0.25, 0, 0]), {"gaze_x"}),
    "gaze up": (lambda v: _edit(v, facemesh.IRIS, [0, 0.2, 0]), {"gaze_y"}),
    "raise left brow": (lambda v: _edit(v, facemesh.LEFT_EYEBROW, [0, 0.6, 0]), {"brow_left"}),
    "raise right brow": (lambda v: _edit(v, facemesh.RIGHT_EYEBROW, [0, 0.6, 0]), {"brow_right"}),
    "widen mouth": (lambda v: _edit(_edit(v, [61], [-0.5, 0, 0]), [291], [0.5, 0, 0]), {"mouth_width", "pucker"}),
    "pucker": (_pucker, {"pucker", "mouth_width"}),
    # a squint / cheek raise lifts the eye corners and lower lids: the head proxies, anchored on the ear roots and
    # the nose bridge, must not read it as a head turn (eye-corner anchors did: pitch moved by 0.05)
    "squint": (lambda v: _edit(v, _squint_points(), [0, 0.3, 0]), {"eye_aperture_left", "eye_aperture_right", "gaze_y", "brow_left", "brow_right"}),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_each_signal_responds_to_its_own_motion_only(name):
    edit, moved = EDITS[name]
    base = _face()
    s = _signals(base, edit(base))
    for k in SIGNALS:
        change = abs(s[k][1] - s[k][0])
        if k in moved:
            assert change > 0.03, f"{name}: {k} moved only {change:.4f}"
        else:
            assert change < 0.01, f"{name}: {k} moved {change:.4f} (should barely move)"


def test_lids_closed_give_small_aperture_and_open_eyes_a_plausible_one():
    base = _face()
    s = _signals(base, _close_lids(_close_lids(base, LEFT_LID_PAIRS, 0.0), RIGHT_LID_PAIRS, 0.0))
    assert 0.15 < s["eye_aperture_left"][0] < 0.45 and 0.15 < s["eye_aperture_right"][0] < 0.45
    assert abs(s["eye_aperture_left"][1]) < 1e-9 and abs(s["eye_aperture_right"][1]) < 1e-9
    assert abs(s["gaze_x"][0]) < 0.02 and abs(s["yaw"][0]) < 1e-9 and abs(s["roll"][0]) < 1e-9


@pytest.mark.parametrize(("axis", "sign"), [("yaw", 1), ("pitch", -1), ("roll", -1)])
def test_rotations_move_their_proxy_monotonically(axis, sign):
    """Model-space yaw turns the nose to image right (+), pitch turns it down (-), roll is counter-clockwise (-)."""
    base = _face()
    angles = np.linspace(-20, 20, 9)
    faces = [base @ yaw_pitch_roll_matrix(**{"yaw": 0, "pitch": 0, "roll": 0, axis: a}).T for a in angles]
    s = _signals(*faces)
    assert np.all(sign * np.diff(s[axis]) > 0), f"{axis} proxy not monotonic: {s[axis]}"
    if axis == "roll":  # the eye-line angle is the roll itself
        np.testing.assert_allclose(s["roll"], -angles, atol=1e-6)
    for other in ("yaw", "pitch", "roll"):
        if other != axis:
            assert np.ptp(s[other]) < 0.2 * np.ptp(s[axis]) * (30 if other == "roll" else 1 / 30 if axis == "roll" else 1), f"{axis} moves {other}"
    # expression signals stay put under a rotation of ±20°: within 25 % (0.03 for the small closed-mouth gap); brows
    # sit 1 cm in front of the eye corners, so pitch moves them by ±15 % (a documented limit of a 2D measure)
    for k in ("eye_aperture_left", "eye_aperture_right", "mouth_open", "brow_left", "brow_right"):
        tol = 0.35 if k.startswith("brow") else 0.25
        assert np.ptp(s[k]) < max(tol * abs(np.median(s[k])), 0.03), f"{axis} moves {k}: {s[k]}"


def test_image_points_and_model_points_agree():
    """The same face in model space (y up) and projected to the image (y down, scaled, shifted) gives the same signals."""
    v = _open_jaw(_face(), 0.5)
    rot = yaw_pitch_roll_matrix(12, -8, 5)
    model = v @ rot.T
    image = 37.0 * model @ FLIP.T + np.array([320.0, 240.0, 0.0])
    a = expression_signals(model[None], y_down=False)
    b = expression_signals(image[None, :, :2], y_down=True)
    for k in SIGNALS:
        np.testing.assert_allclose(a[k], b[k], atol=1e-9, err_msg=k)
    assert a["roll"][0] < 0  # counter-clockwise in model space = counter-clockwise on screen: negative


def test_invalid_frames_are_nan_and_shapes_checked():
    v = np.stack([_face(), _face()])
    v[1, 5] = np.nan
    s = expression_signals(v, valid=[False, True], y_down=False)
    assert all(np.isnan(s[k]).all() for k in SIGNALS)
    with pytest.raises(ValueError, match="478"):
        expression_signals(np.zeros((3, 468, 2)))


def test_blinks_rest_and_range():
    a = np.full(40, 0.3)
    a[5:8] = 0.05  # a 3-frame blink
    a[20] = 0.05  # one frame: not a blink
    a[30:32] = 0.1  # 2 frames: a blink
    a[35:37] = 0.05  # would be a blink, but a frame is invalid
    valid = np.ones(40, bool)
    valid[36] = False
    assert blink_events(a, valid) == [(5, 8), (30, 32)]
    assert blink_events(a) == [(5, 8), (30, 32), (35, 37)]
    assert blink_events(np.full(5, np.nan)) == []
    # the rest aperture ignores blinks; the plain median of a blinky signal would not
    blinky = np.r_[np.full(10, 0.3), np.full(12, 0.02)]
    assert rest_value(blinky, aperture=True) == pytest.approx(0.3)
    assert rest_value(blinky) < 0.1
    assert signal_range(np.linspace(0, 1, 101)) == pytest.approx(0.9)
    assert np.isnan(rest_value([np.nan])) and np.isnan(signal_range([]))


def test_index_tuples_belong_to_their_groups():
    right, left = set(facemesh.RIGHT_EYE.tolist()), set(facemesh.LEFT_EYE.tolist())
    assert set(RIGHT_EYE_CORNERS) | {i for pair in RIGHT_LID_PAIRS for i in pair} <= right
    assert set(LEFT_EYE_CORNERS) | {i for pair in LEFT_LID_PAIRS for i in pair} <= left
