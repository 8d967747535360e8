"""The headroom measures (deep_puppets.gan.headroom): the generator's fit on training against held-out frames and
the oracle retrieval bound, on synthetic crops whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deep_puppets.composite import face_alpha
from deep_puppets.evaluation import FACE_LEVEL
from deep_puppets.gan.headroom import headroom, oracle_retrieval, region_psnr, sample_runs
from deep_puppets.gan.settings import TrainSettings

S = 32


def _grey(level: int) -> np.ndarray:
    return np.full((S, S, 3), level, np.uint8)


def _psnr(diff_levels: float) -> float:
    return 20 * np.log10(255.0 / diff_levels)


def test_sample_runs_spreads_runs_of_consecutive_frames():
    frames = np.arange(10, 110)
    picked = sample_runs(frames, 24, run=8)
    assert len(picked) == 24 and set(picked) <= set(frames) and list(picked) == sorted(picked)
    assert picked[0] == 10 and picked[-1] == 109  # the whole range, both ends
    runs = np.split(picked, np.flatnonzero(np.diff(picked) != 1) + 1)
    assert [len(r) for r in runs] == [8, 8, 8]
    assert list(sample_runs(frames[:5], 24, 8)) == list(frames[:5])  # fewer than n: all of them


def test_region_psnr_counts_only_the_mask():
    a, b = _grey(100), _grey(100)
    b[:, : S // 2] = 0  # differs only outside the mask
    mask = np.zeros((S, S), bool)
    mask[:, S // 2:] = True
    assert region_psnr(a, b, mask) == pytest.approx(100.0)  # identical inside: the 100 dB cap
    b[0, S - 1] = 110
    assert region_psnr(a, b, mask) == pytest.approx(-10 * np.log10((10 / 255) ** 2 / mask.sum()))
    assert np.isnan(region_psnr(a, b, np.zeros((S, S), bool)))


def test_oracle_retrieval_finds_the_closest_training_crop_outside_the_gap():
    levels = {0: 100, 1: 110, 2: 130, 3: 121, 20: 121}
    crops = np.zeros((21, S, S, 3), np.uint8)
    for t, v in levels.items():
        crops[t] = _grey(v)
    mask = np.ones((S, S), bool)
    masks = {3: mask, 20: mask}
    # frame 3 is 121: its exact copy (frame 20) is a training frame far away
    assert oracle_retrieval(crops, masks, [0, 1, 2, 20], [3]) == pytest.approx([100.0], abs=1e-3)
    # with the copy left out, the best is 130 (9 levels) over 110 (11)
    assert oracle_retrieval(crops, masks, [0, 1, 2], [3]) == pytest.approx([_psnr(9)], abs=1e-3)
    # a gap of 2: only frames at least 2 away from frame 3 (frame 2 is left out): the best is then 110
    assert oracle_retrieval(crops, masks, [0, 1, 2], [3], gap=2) == pytest.approx([_psnr(11)], abs=1e-3)
    # the mask decides which pixels count: a training crop that matches only outside it loses
    crops[0, :, : S // 2] = 121
    half = np.zeros((S, S), bool)
    half[:, S // 2:] = True
    assert oracle_retrieval(crops, {3: half}, [0, 1, 2], [3]) == pytest.approx([_psnr(9)], abs=1e-3)


class _Constant(torch.nn.Module):
    """A generator that always draws the same grey crop."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def forward(self, x):
        return torch.full((x.shape[0], 3, S, S), self.level / 255.0)


def test_headroom_scores_the_generator_and_the_oracle_on_both_parts():
    n = 40
    train, held = np.arange(0, 27), np.arange(27, 40)
    colour = np.zeros((n, S, S, 3), np.uint8)
    colour[:, 8:24, 10:22] = 200  # the rendered face
    mask = face_alpha(colour[0]) >= FACE_LEVEL
    rng = np.random.default_rng(0)
    crops = np.stack([_grey(int(v)) for v in np.concatenate([rng.integers(90, 110, 27), rng.integers(140, 160, 13)])])
    s = TrainSettings(size=(S, S), gen_depth=2, streams=("colour",), window=1, clip_len=2, di_num_D=1, dv_num_D=1, di_layers=1, dv_layers=1)
    out = headroom(_Constant(100), s, {"colour": colour}, crops, train, held, grow=0.12, feather=0.08, n=8, gap=3, run=4)
    assert out["frames"] == {"training": 8, "held_out": 8}
    picked = {"training": sample_runs(train, 8, 4), "held_out": sample_runs(held, 8, 4)}
    for part, frames in picked.items():
        want = np.mean([region_psnr(_grey(100), crops[t], mask) for t in frames])
        assert out["gan"][part] == pytest.approx(want, abs=1e-3), part
    # held-out frames are much brighter than every training frame: the oracle finds the brightest training crop
    brightest = crops[train].reshape(27, -1)[:, 0].max()
    want = np.mean([region_psnr(_grey(brightest), crops[t], mask) for t in picked["held_out"]])
    assert out["oracle_retrieval"]["held_out"] == pytest.approx(want, abs=1e-3)
    assert out["oracle_gap_db"] > 10 and out["gan_fit_gap_db"] > 10  # a 100-grey generator suits the dark training part
