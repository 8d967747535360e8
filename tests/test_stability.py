"""Flicker (warping error against the real flow) and the distance of frames to the training frames."""

import numpy as np
import pytest

from deep_puppets import stability as st
from deep_puppets.gan.flow import backward_flow


def _pattern(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    import cv2

    noise = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)


def test_static_sequence_has_no_flicker_and_a_flickering_one_has():
    frame = _pattern()
    frames = np.stack([frame] * 6)
    flows = np.zeros(frames.shape[:3] + (2,), np.float32)
    static = st.flicker_of_sequence(frames, flows)
    assert np.isnan(static[0]) and np.all(static[1:] == 0)
    flicker = frames.copy()
    flicker[1::2] = np.clip(flicker[1::2].astype(int) + 40, 0, 255).astype(np.uint8)  # every other frame brighter
    err = st.flicker_of_sequence(flicker, flows)
    assert np.all(err[1:] > 0.1)
    # inside a mask only the masked pixels count
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 10:20, 10:20] = True
    flicker[1::2, 30:] = frames[1::2, 30:]  # the lower part steady
    assert np.all(st.flicker_of_sequence(flicker, flows, masks)[1:] > 0.1)
    masks[:] = False
    masks[:, 35:, :] = True
    assert np.all(st.flicker_of_sequence(flicker, flows, masks)[1:] == 0)


def test_a_translating_pattern_warps_to_zero_error_with_the_flow_convention():
    """flow[t] maps frame t back to t-1 (deep_puppets.gan.flow): a pattern moving right by 3 px has flow (-3, 0)
    and warps exactly; the opposite sign does not."""
    big = _pattern(64, 96)
    prev, cur = big[8:56, 10:74], big[8:56, 7:71]  # the content moves 3 px to the right
    flow = np.zeros(prev.shape[:2] + (2,), np.float32)
    flow[..., 0] = -3.0
    assert st.warping_error(prev, cur, flow) == pytest.approx(0.0, abs=1e-6)
    assert st.warping_error(prev, cur, -flow) > 0.05
    assert st.warping_error(prev, cur, 0 * flow) > 0.05
    # the real flow estimator agrees with the convention (away from the border it finds about -3)
    est = backward_flow(cur, prev)
    assert np.median(est[10:-10, 10:-10, 0]) == pytest.approx(-3.0, abs=0.3)
    assert st.warping_error(prev, cur, est, np.pad(np.ones((28, 44), bool), 10)) < 0.02
    # pixels whose source is outside the frame are left out, not compared with a replicated border
    _, inside = st.warp_previous(prev, flow)
    assert not inside[:, :3].any() and inside[:, 3:].all()


def test_nearest_training_distance():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(10, 4))
    camera = np.zeros((10, 7))
    exp_std = np.array([1.0, 2.0, 0.5, 1.0])
    train, query = np.arange(6), np.arange(6, 10)
    q[7] = q[2]  # a held-out frame equal to a training frame
    q[8] = q[4] + np.array([0, 2.0, 0, 0])  # one std of the second coefficient away from frame 4 (and nearer than any other)
    q[9] = q[1]
    camera[9, 1] = np.radians(st.ROTATION_UNIT_DEG)  # frame 1's expression, turned by one rotation unit
    f = st.parameter_features(q, camera, exp_std)
    d, near = st.nearest_distance(f, train, query)
    assert d[1] == 0 and near[1] == 2
    assert d[2] <= 1.0 + 1e-12
    assert d[3] == pytest.approx(1.0) and near[3] == 1
    # frames without a fit: skipped as training frames, NaN as queries
    f[2] = np.nan
    f[6] = np.nan
    d, near = st.nearest_distance(f, train, query)
    assert np.isnan(d[0]) and near[0] == -1 and near[1] != 2


def test_spearman():
    x = np.arange(10.0)
    assert st.spearman(x, x**3) == pytest.approx(1.0)
    assert st.spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(st.spearman(x[:2], x[:2])) and np.isnan(st.spearman(x, np.ones(10)))


def test_figures_are_written(tmp_path):
    frames = np.arange(20, 30)
    series = {m: {r: np.linspace(0, 0.1, 10) * (i + 1) for r in st.FLICKER_REGIONS} for i, m in enumerate(("real", "gan", "nearest"))}
    st.flicker_plot(frames, series, tmp_path / "flicker.png", "t")
    st.distance_plot(frames, np.linspace(0, 3, 10), np.linspace(0.1, 0.2, 10), tmp_path / "d.png", "t", 1.0)
    assert (tmp_path / "flicker.png").stat().st_size > 1000 and (tmp_path / "d.png").stat().st_size > 1000
