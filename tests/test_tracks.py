"""Merging overlapping segment fits into one seamless track per video."""

import json

import numpy as np
import pytest

from deep_puppets.camera import rotation_log, rotation_matrix
from deep_puppets.fit_files import write_fit_segment
from deep_puppets.fit_types import FitError, FitResult, FitSettings
from deep_puppets.fitting import identity_frames, solve_identity, solve_segment
from deep_puppets.landmark_basis import projected_landmarks
from deep_puppets.segments import Segment, plan_segments
from deep_puppets.tracks import (
    merge_segment_files,
    merge_segments,
    read_track,
    segment_weights,
    smoothstep,
    write_track,
)

from .synthetic_faces import synthetic_model, synthetic_sequence


@pytest.fixture(scope="module")
def model():
    return synthetic_model(n_vertices=600, k_id=8, k_exp=12, seed=0)


@pytest.mark.parametrize("n,length,overlap", [(360, 120, 30), (1000, 300, 30), (50, 20, 0), (100, 40, 25), (90, 100, 10)])
def test_weights_sum_to_one_and_follow_the_cores(n, length, overlap):
    segs = plan_segments(n, length, overlap)
    total = np.zeros(n)
    for seg, w in zip(segs, segment_weights(segs)):
        assert w.shape == (seg.stop - seg.start,) and np.all((w >= 0) & (w <= 1))
        total[seg.start : seg.stop] += w
        # a segment has the larger weight exactly on its core
        dominant = np.arange(seg.start, seg.stop)[w > 0.5]
        if len(dominant) and overlap % 2 == 0:
            assert dominant[0] == seg.core_start and dominant[-1] == seg.core_stop - 1
    assert np.allclose(total, 1.0)
    assert smoothstep(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_one_segment_and_four_segments_agree_at_the_borders(model):
    """The seam bar: the same video fitted in one piece and in four overlapping segments (identity fixed)
    gives projected landmarks within 0.5 px at every frame around the borders, and the merged track moves
    across a border no more than between any other frames."""
    T = 360
    seq = synthetic_sequence(model, T, noise_px=2.0, seed=21)
    seq.valid[170:174] = False  # a faceless stretch inside an overlap
    seq.landmarks[~seq.valid] = np.nan
    p = solve_identity(model, seq.landmarks[identity_frames(seq.valid, 30)]).p
    whole = solve_segment(model, seq.landmarks, seq.valid, p=p)
    segs = plan_segments(T, 120, 30)
    assert len(segs) == 4
    parts = [solve_segment(model, seq.landmarks[s.start : s.stop], seq.valid[s.start : s.stop], p=p) for s in segs]
    track = merge_segments(parts, segs)
    assert np.array_equal(track.valid, seq.valid) and np.array_equal(track.p, p)
    a, b = projected_landmarks(model, whole)[..., :2], projected_landmarks(model, track)[..., :2]
    diff = np.linalg.norm(a - b, axis=2).max(axis=1)
    for prev, seg in zip(segs, segs[1:]):
        around = slice(seg.start - 5, prev.stop + 5)  # the overlap and a few frames on each side
        assert diff[around].max() <= 0.5, (seg, diff[around].max())
    motion = np.linalg.norm(np.diff(b, axis=0), axis=2).mean(axis=1)
    borders = np.concatenate([np.arange(s.start - 1, p_.stop) for p_, s in zip(segs, segs[1:])])
    assert motion[borders].max() <= 1.5 * np.quantile(motion, 0.99)
    # each segment alone does differ at its ends (the prior's end effects): the cross-fade is what hides them
    alone = max(np.linalg.norm(projected_landmarks(model, f)[..., :2] - a[s.start : s.stop], axis=2).max() for f, s in zip(parts, segs))
    assert alone > diff.max()


def test_rotations_are_blended_geodesically():
    """Two segments whose cameras straddle the ±π wrap of axis-angle: the blend stays on the short arc."""
    segs = [Segment(0, 0, 12, 0, 8), Segment(1, 4, 16, 8, 16)]

    def fit(angle, T):
        cam = np.zeros((T, 7))
        cam[:, 0], cam[:, 6] = angle, 1.0
        return FitResult(np.zeros(0), np.zeros((T, 2)), cam, np.ones(T, bool), np.zeros(T), settings=FitSettings())

    track = merge_segments([fit(np.pi - 0.05, 12), fit(-(np.pi - 0.05), 12)], segs)
    angles = np.linalg.norm(track.camera[:, :3], axis=1)
    assert np.all(angles > np.pi - 0.06)  # never through the identity rotation
    R = rotation_matrix(track.camera[:, :3])
    steps = np.linalg.norm(rotation_log(R[1:] @ np.swapaxes(R[:-1], 1, 2)), axis=1)
    assert steps.max() <= 0.1 / 8 * 1.6  # 0.1 rad spread over the 8-frame overlap, smoothstep peak slope 1.5


def test_faceless_segment_is_bridged(model):
    seq = synthetic_sequence(model, 150, seed=22)
    seq.valid[50:120] = False
    seq.landmarks[~seq.valid] = np.nan
    segs = plan_segments(150, 60, 20)
    fits = [solve_segment(model, seq.landmarks[s.start : s.stop], seq.valid[s.start : s.stop], p=seq.p) for s in segs]
    assert any(np.isnan(f.camera).all() for f in fits)  # one segment has no face at all
    track = merge_segments(fits, segs)
    assert np.isfinite(track.camera).all() and np.array_equal(track.valid, seq.valid)


def test_merge_refuses_different_identities(model):
    seq = synthetic_sequence(model, 40, seed=23)
    segs = plan_segments(40, 25, 10)
    fits = [solve_segment(model, seq.landmarks[s.start : s.stop], seq.valid[s.start : s.stop]) for s in segs]  # p free
    with pytest.raises(FitError, match="identity"):
        merge_segments(fits, segs)


def fitted_segment_files(model, T: int, seed: int, folder) -> list:
    """A synthetic sequence of ``T`` frames fitted in 40-frame segments overlapping by 10, one file per segment."""
    seq = synthetic_sequence(model, T, seed=seed)
    paths = []
    for s in plan_segments(T, 40, 10):
        fit = solve_segment(model, seq.landmarks[s.start : s.stop], seq.valid[s.start : s.stop], p=seq.p)
        paths.append(write_fit_segment(folder / f"seg{s.index}.h5", fit, frame_index=np.arange(s.start, s.stop), segment=s, model=model,
                                       video="bob", width=640, height=480, fps=30.0))  # fmt: skip
    return paths


def test_track_files(model, tmp_path):
    T = 80
    paths = fitted_segment_files(model, T, 24, tmp_path)
    track, attrs = merge_segment_files(paths[::-1], n_frames=T)
    write_track(tmp_path / "track.h5", track, attrs)
    back, battrs = read_track(tmp_path / "track.h5")
    assert back.n_frames == T and np.array_equal(back.camera, track.camera) and np.array_equal(back.q, track.q)
    assert battrs["model_hash"] == model.content_hash() and battrs["n_frames"] == T and battrs["fps"] == 30.0
    assert [s["index"] for s in json.loads(battrs["segments"])] == [0, 1, 2]
    assert back.settings == FitSettings()


def test_segments_fitted_before_a_new_fit_key_merge_with_newer_ones(model, tmp_path):
    """A segment written before a fit key existed (its settings JSON lacks the key) and one written after, at the
    key's default, were fitted with the same settings: they merge. A segment fitted with another value does not."""
    import h5py

    T = 60
    paths = fitted_segment_files(model, T, 25, tmp_path)
    with h5py.File(paths[0], "r+") as f:
        old = json.loads(f.attrs["fit_settings"])
        del old["activation_bounds"]
        f.attrs["fit_settings"] = json.dumps(old)
    track, _ = merge_segment_files(paths, n_frames=T)
    assert track.n_frames == T
    with h5py.File(paths[1], "r+") as f:
        f.attrs["fit_settings"] = json.dumps({**old, "activation_bounds": 100.0})
    with pytest.raises(FitError, match="fit_settings differs"):
        merge_segment_files(paths, n_frames=T)
