"""Named expressions across people (deep_puppets/named_expressions.py and their use in transfer.py): a blink or
a jaw opening the target's own basis cannot show still reaches the transferred mesh, within physical limits,
on the synthetic person-like models of test_transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_puppets.camera import project
from deep_puppets.jobs.model import ScreenVertices
from deep_puppets.models.base import MorphableModel
from deep_puppets.named_expressions import LID_PAIRS, NAMED_EXPRESSIONS, named_blendshapes, named_landmarks, named_offsets, signal_operator
from deep_puppets.transfer import TransferSettings, ping_pong, transfer_motion
from deep_puppets.transfer_files import TRANSFER, read_transfer, write_transfer

from .test_transfer import FIELDS, coefficients_of, person_like, random_cameras, track

ALL = ["jaw", "smile", "blink", "gaze", "brow"]
OFF = TransferSettings(named_expressions=False)


def _activation(T: int, period: int = 20, width: int = 4, depth: float = 1.0) -> np.ndarray:
    """0 with a triangular pulse of height ``depth`` lasting ``width`` frames every ``period`` frames."""
    a = np.zeros(T)
    for start in range(period // 2, T - width, period):
        a[start : start + width] = depth * np.r_[np.linspace(0.5, 1, width // 2), np.linspace(1, 0.5, width - width // 2)]
    return a


def _source_track(model, rng, T, field: str, depth: float = 1.0, camera_spread: float = 0.05):
    """A talker (jaw moving a little, smiling) whose ``field`` pulses every 20 frames."""
    talk = {"jaw": 0.15 * np.abs(np.sin(np.arange(T) / 3.0)), "smile": 0.2 * np.sin(np.arange(T) / 7.0)}
    if field in talk:
        talk[field] = np.zeros(T)
    disp = sum(a[:, None, None] * FIELDS[n][None] for n, a in talk.items()) + _activation(T, depth=depth)[:, None, None] * FIELDS[field][None]
    q = np.stack([coefficients_of(model, d * 0.9) for d in disp])
    return track(random_cameras(rng, T, spread=camera_spread), q)


def _target_track(model, rng, T):
    """The target talks (its own fields, small) and never blinks."""
    q = rng.normal(scale=0.3, size=(T, model.n_exp)) * model.exp_std
    return track(random_cameras(rng, T, spread=0.05), q)


def _landmarks_2d(model, p, q, camera, named=None) -> np.ndarray:
    v = model.shape(p, q)
    if named is not None and np.any(named):
        v = v + named_offsets(model, p, named)
    return project(v, camera)[..., :2]


def _eye_and_mouth(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, divided by the inter-ocular distance: eyelid gap (mean of both eyes' mid points) and inner-lip gap."""
    iod = np.linalg.norm(pts[:, 33] - pts[:, 263], axis=1)
    eye = 0.5 * (np.linalg.norm(pts[:, 159] - pts[:, 145], axis=1) + np.linalg.norm(pts[:, 386] - pts[:, 374], axis=1))
    return eye / iod, np.linalg.norm(pts[:, 13] - pts[:, 14], axis=1) / iod


def _amplitude(x):
    return np.percentile(x, 95) - np.percentile(x, 5)


def _follow(field, settings, T=120, seed=0):
    """(r, amplitude ratio) of the target's signal of ``field`` against the source's, the target lacking ``field``."""
    rng = np.random.default_rng(seed)
    source = person_like("source", 0.9, ALL, mix_seed=1)
    target = person_like("target", 1.15, [n for n in ALL if n != field], mix_seed=2)
    src, tgt = _source_track(source, rng, T, field), _target_track(target, rng, 60)
    res = transfer_motion(src, tgt, source, target, "pose+expression", settings)
    k = 0 if field == "blink" else 1
    s = _eye_and_mouth(_landmarks_2d(source, src.p, src.q, src.camera))[k]
    t = _eye_and_mouth(_landmarks_2d(target, res.p, res.q, res.camera, res.named))[k]
    return np.corrcoef(s, t)[0, 1], _amplitude(t) / _amplitude(s), res


@pytest.mark.parametrize("field", ["blink", "jaw"])
def test_an_expression_the_target_never_showed_arrives(field):
    r, a, res = _follow(field, TransferSettings())
    assert r > 0.9 and 0.8 <= a <= 1.25, (r, a)
    assert res.stats["named"]["synthesised_fraction"]["eye_left" if field == "blink" else "mouth_open"] >= 0.05
    # before: the projection onto the target's basis cannot show it
    r0, a0, res0 = _follow(field, OFF)
    assert a0 < 0.5, (r0, a0)  # the blink arrives at ~0, the jaw at ~0.4 of its amplitude
    assert not np.any(res0.named)


def test_range_scaling_needs_the_target_to_have_shown_the_signal():
    """'range' scales by the target's observed range: a target that never blinked gets no blink from it."""
    _, a, _ = _follow("blink", TransferSettings(named_scaling="range"))
    assert a < 0.3


def test_lids_never_cross_and_out_of_range_is_flagged():
    rng = np.random.default_rng(3)
    source = person_like("source", 0.9, ALL, mix_seed=1)
    target = person_like("target", 1.15, ["jaw", "smile", "gaze", "brow"], mix_seed=2)
    src = _source_track(source, rng, 100, "blink", depth=2.5)  # the source's lids go far past closed
    res = transfer_motion(src, _target_track(target, rng, 60), source, target)
    v = target.shape(res.p, res.q) + named_offsets(target, res.p, res.named)
    for side in ("left", "right"):
        up, lo = [u for u, _ in LID_PAIRS[side]], [b for _, b in LID_PAIRS[side]]
        assert (v[:, up, 1] - v[:, lo, 1]).min() > -1e-9
    blinking = _activation(100) > 0
    k = NAMED_EXPRESSIONS.index("eye_left")
    assert res.out_of_range[blinking, k].all() and not res.out_of_range[~blinking, k].any()


def test_self_transfer_is_exact_and_has_no_named_expressions():
    model = person_like("target", 1.15, ALL, mix_seed=2)
    rng = np.random.default_rng(1)
    fit = _source_track(model, rng, 50, "blink")
    res = transfer_motion(fit, fit, model, model)
    assert np.abs(res.q - fit.q).max() < 1e-12
    assert res.named.shape == (50, len(NAMED_EXPRESSIONS)) and not res.named.any() and not res.out_of_range.any()
    screen = ScreenVertices(model, res.p, res.q, res.camera, res.named)
    assert screen.named is None and np.allclose(screen[7], project(model.shape(fit.p, fit.q[7]), fit.camera[7]), atol=1e-6)


def test_expression_mode_keeps_the_targets_head_motion():
    rng = np.random.default_rng(2)
    source = person_like("source", 0.9, ALL, mix_seed=1)
    target = person_like("target", 1.15, ["jaw", "smile", "gaze", "brow"], mix_seed=2)
    src, tgt = _source_track(source, rng, 80, "blink"), _target_track(target, rng, 30)
    res = transfer_motion(src, tgt, source, target, "expression")
    assert np.array_equal(res.camera, tgt.camera[ping_pong(80, 30)])
    assert np.abs(res.named[:, NAMED_EXPRESSIONS.index("eye_left")]).max() > 0.3


def test_each_blendshape_moves_its_own_signal():
    model = person_like("target", 1.15, ALL, mix_seed=2)
    B = named_blendshapes(model, model.p if hasattr(model, "p") else np.zeros(0))
    size = np.sqrt(((model.mean[:468] - model.mean[:468].mean(axis=0)) ** 2).sum(axis=1).mean())
    J = np.einsum("kld,jld->kj", signal_operator(size), B)
    off = J - np.diag(np.diag(J))
    assert (np.abs(off).max(axis=0) < 0.05 * np.abs(np.diag(J))).all()


def test_round_trip_and_render_offsets(tmp_path):
    rng = np.random.default_rng(4)
    source = person_like("source", 0.9, ALL, mix_seed=1)
    target = person_like("target", 1.15, ["jaw", "smile", "gaze", "brow"], mix_seed=2)
    res = transfer_motion(_source_track(source, rng, 40, "blink"), _target_track(target, rng, 30), source, target)
    path = write_transfer(tmp_path / "t.h5", res, source="s", target="t", width=640, height=480, fps=25.0)
    back, attrs = read_transfer(path)
    assert TRANSFER.version == 2 and json.loads(attrs["named_expressions"]) == list(NAMED_EXPRESSIONS)
    assert np.array_equal(back.named, res.named) and np.array_equal(back.out_of_range, res.out_of_range)
    assert back.named.dtype == np.float64 and back.out_of_range.dtype == bool and back.named.any()
    screen = ScreenVertices(target, back.p, back.q, back.camera, back.named)
    t = int(np.abs(back.named).sum(axis=1).argmax())
    want = project(target.shape(back.p, back.q[t]) + np.tensordot(back.named[t], named_blendshapes(target, back.p), axes=(0, 0)), back.camera[t])
    assert np.allclose(screen[t], want) and not np.allclose(screen[t], project(target.shape(back.p, back.q[t]), back.camera[t]))


def _wide_eyed(model, factor: float = 1.5):
    """``model`` with its eye openings ``factor`` times as tall (upper and lower lids away from each eye's centre line)."""
    mean = np.array(model.mean)
    for side in ("left", "right"):
        idx = [i for pair in LID_PAIRS[side] for i in pair]
        cy = mean[idx, 1].mean()
        mean[idx, 1] = cy + factor * (mean[idx, 1] - cy)
    return MorphableModel(**{**model.__dict__, "mean": mean})


@pytest.mark.parametrize("scaling, closes", [("relative", True), ("size", False)])
def test_a_full_blink_closes_wider_eyes_with_relative_scaling(scaling, closes):
    """A source closing its eyes to ~5% of their rest opening: 'relative' closes a target with 1.5× taller eyes to the
    same fraction (a blink detector sees it); 'size' moves its lids by the source's distance only."""
    rng = np.random.default_rng(5)
    source = person_like("source", 1.0, ALL, mix_seed=1)
    target = _wide_eyed(person_like("target", 1.0, ["jaw", "smile", "gaze", "brow"], mix_seed=2))
    src = _source_track(source, rng, 100, "blink", depth=1.9)
    res = transfer_motion(src, _target_track(target, rng, 60), source, target, settings=TransferSettings(named_scaling=scaling))
    s = _eye_and_mouth(_landmarks_2d(source, src.p, src.q, src.camera))[0]
    t = _eye_and_mouth(_landmarks_2d(target, res.p, res.q, res.camera, res.named))[0]
    fraction_s, fraction_t = s.min() / np.median(s), t.min() / np.median(t)
    assert fraction_s < 0.2
    assert (abs(fraction_t - fraction_s) < 0.1) == closes, (fraction_s, fraction_t)
    pts = named_landmarks(target, res.p, res.q, res.camera, res.named)
    assert np.allclose(pts[..., :2], _landmarks_2d(target, res.p, res.q, res.camera, res.named))


def _grinning(model, lift: float = 0.8, opening: float = 0.5):
    """``model`` (size 1) whose neutral grins with its lips apart (the demo photo's face): the mouth's corners lifted
    ``lift`` cm, the lower lip and chin dropped by ``opening`` of the jaw field."""
    C = np.array(model.mean)
    lifted = C + sum(np.exp(-(((C - C[i]) ** 2).sum(axis=1)) / (2 * 0.8**2))[:, None] * np.array([0.0, lift, 0.0]) for i in (61, 291, 78, 308))
    return MorphableModel(**{**model.__dict__, "mean": lifted + opening * FIELDS["jaw"]})


def test_jaw_of_a_grinning_neutral_moves_the_lower_lip_only():
    """A neutral with the mouth's corners above the upper lip's middle (the demo's smiling photo): the jaw blendshape
    opens the mouth by moving the lower lip, not the upper, and no vertex moves more than ~1.5 face sizes per unit of
    mouth opening (before, the upper lip, below the corners, moved with the jaw, the lips' gap barely changed and the
    unit scaling threw the lower face ~40 face sizes: the demo's closed mouth and the fold over its nose)."""
    model = _grinning(person_like("target", 1.0, ALL, mix_seed=2))
    C = np.array(model.mean)
    assert C[13, 1] < C[[61, 291], 1].min() and C[14, 1] < C[13, 1]  # the construction: the upper lip's middle below its corners
    B = named_blendshapes(model, np.zeros(0))
    size = np.sqrt(((C[:468] - C[:468].mean(axis=0)) ** 2).sum(axis=1).mean())
    jaw = B[NAMED_EXPRESSIONS.index("mouth_open")]
    assert np.abs(jaw[[13, 82, 312, 0, 37, 267]]).max() < 1e-9  # the upper lip stays
    assert jaw[14, 1] < -0.5 * size  # the lower lip drops
    assert np.linalg.norm(jaw, axis=1).max() < 2.0 * size
    assert np.isclose(np.einsum("ld,ld->", signal_operator(size)[NAMED_EXPRESSIONS.index("mouth_open")], jaw), 1.0)


def test_a_degenerate_blendshape_is_left_out_with_a_warning(caplog):
    """On a flat neutral (every point at the same depth) a turn about the jaw hinge cannot part the lips: unit scaling
    would throw the lower face to infinity; the jaw is left out (zero, a warning), the other blendshapes stay."""
    model = person_like("target", 1.0, ALL, mix_seed=2)
    flat = np.array(model.mean)
    flat[:, 2] = 0.0
    with caplog.at_level("WARNING"):
        B = named_blendshapes(MorphableModel(**{**model.__dict__, "mean": flat}), np.zeros(0))
    k = NAMED_EXPRESSIONS.index("mouth_open")
    assert not B[k].any() and "mouth_open is degenerate" in caplog.text
    assert all(B[j].any() for j in range(len(NAMED_EXPRESSIONS)) if j != k)
    assert np.isfinite(B).all()
