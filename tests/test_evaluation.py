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
