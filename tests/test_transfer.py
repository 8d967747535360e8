"""Pose and expression transfer between two actors (deep_puppets/transfer.py, transfer_files.py), on small
synthetic models and tracks built here: person-like models on the 478-point FaceMesh topology (canonical face scaled per actor,
expression bases spanned by hand-made jaw / smile / blink / gaze / brow fields), and ICT-like named models."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from deep_puppets.camera import FLIP, rotation_log, rotation_matrix, yaw_pitch_roll, yaw_pitch_roll_matrix
from deep_puppets.errors import ConfigError, TransferError
from deep_puppets.fit_types import FitResult
from deep_puppets.head_motion import anchor_rotations, reference_pose, soft_limit
from deep_puppets.models import facemesh
from deep_puppets.models.base import N_LANDMARKS, MorphableModel
from deep_puppets.models.person import person_triangles, transfer_matrix
from deep_puppets.transfer import (
    TransferSettings,
    correspondence,
    expression_reference_kinds,
    expression_transfer_matrix,
    face_openings,
    face_size,
    ping_pong,
    pose_warning,
    rest_frames,
    shared_expression_basis,
    transfer_motion,
)
from deep_puppets.transfer_files import read_transfer, transfer_files, write_transfer

NO_CLAMP = TransferSettings(clamp_margin=None)
ZERO_REF = {"expression_reference": "zero"}  # displacements about q = 0, the models' neutral (tests of the mapping)


# ------------------------------------------------------------------------------------------ synthetic data
def _falloff(points, centre, radius):
    return np.exp(-(((points - centre) ** 2).sum(axis=1)) / (2 * radius**2))[:, None]


def _eye_lids(C):
    """(upper, lower) vertex indices of both eyes' contours (above / below each eye's centre line)."""
    upper, lower = [], []
    for eye in (facemesh.RIGHT_EYE, facemesh.LEFT_EYE):
        cy = C[eye, 1].mean()
        upper += [int(i) for i in eye if C[i, 1] > cy + 0.1]
        lower += [int(i) for i in eye if C[i, 1] < cy - 0.1]
    return np.array(upper), np.array(lower)


def expression_fields() -> dict[str, np.ndarray]:
    """Displacement fields (478, 3) on the canonical face (cm)."""
    C = np.array(facemesh.canonical_face())
    mouth_y = C[[61, 291], 1].mean()
    jaw = np.zeros_like(C)
    jaw[:, 1] = -0.8 * np.clip((mouth_y - C[:, 1]) / 3.0, 0, 1)
    smile = sum(_falloff(C, C[i], 1.0) * np.array([np.sign(C[i, 0]) * 0.4, 0.3, 0.0]) for i in (61, 291))
    upper, lower = _eye_lids(C)
    blink = np.zeros_like(C)
    for eye in (facemesh.RIGHT_EYE, facemesh.LEFT_EYE):
        cy = C[eye, 1].mean()
        up = [i for i in upper if i in set(eye.tolist())]
        blink[up, 1] = -0.95 * (C[up, 1] - cy)  # upper lid down to the centre line
    gaze = np.zeros_like(C)
    gaze[list(facemesh.IRIS), 0] = 0.3
    brow = np.zeros_like(C)
    brow[np.r_[facemesh.LEFT_EYEBROW, facemesh.RIGHT_EYEBROW], 1] = 0.5
    puff = sum(_falloff(C, np.array([s * 5.0, -3.0, 3.0]), 1.5) * np.array([s * 0.3, 0.0, 0.5]) for s in (-1, 1))
    return dict(jaw=jaw, smile=smile, blink=blink, gaze=gaze, brow=brow, puff=puff)


FIELDS = expression_fields()
TRIANGLES = person_triangles()
LM_TRI, LM_BARY = facemesh.vertex_correspondence(TRIANGLES, np.arange(N_LANDMARKS))


def person_like(name: str, size: float, field_names, mix_seed: int | None = None, provider="person") -> MorphableModel:
    """A person-model look-alike: canonical face × ``size``, orthonormal expression basis spanning the named
    fields (× size), mixed by a random rotation when ``mix_seed`` is given (another PCA of the same span)."""
    F = np.stack([FIELDS[n] for n in field_names]).reshape(len(field_names), -1).T * size  # (3N, K)
    if mix_seed is not None:
        F = F @ np.linalg.qr(np.random.default_rng(mix_seed).normal(size=(F.shape[1],) * 2))[0]
    Q, R = np.linalg.qr(F)
    std = np.abs(np.diag(R))  # a unit activation of each field ~ one standard deviation
    return MorphableModel(
        name=name,
        mean=np.array(facemesh.canonical_face()) * size,
        id_basis=np.zeros((0, N_LANDMARKS, 3)),
        id_std=np.zeros(0),
        exp_basis=Q.T.reshape(-1, N_LANDMARKS, 3),
        exp_std=std,
        triangles=TRIANGLES,
        lm_tri=LM_TRI,
        lm_bary=LM_BARY,
        lm_weight=np.ones(N_LANDMARKS),
        unit="canonical_cm",
        extra={"provider": provider},
    )


def ict_like(names=("jawOpen", "mouthSmile_L", "eyeBlink_L", "gazeYaw", "gazePitch"), size=1.0) -> MorphableModel:
    m = person_like("ict-like", size, ["jaw", "smile", "blink", "gaze", "brow"][: len(names)], provider="ict")
    return MorphableModel(**{**m.__dict__, "exp_names": tuple(names), "exp_std": np.full(len(names), 0.5)})


def coefficients_of(model: MorphableModel, displacement: np.ndarray) -> np.ndarray:
    """q with exp_basis^T q = displacement (orthonormal bases)."""
    return model.exp_basis.reshape(model.n_exp, -1) @ displacement.ravel()


def track(camera: np.ndarray, q: np.ndarray, valid=None, p=None) -> FitResult:
    T = len(camera)
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    return FitResult(p=np.zeros(0) if p is None else p, q=np.asarray(q, float), camera=np.asarray(camera, float), valid=valid,
                     residual=np.where(valid, 1.0, np.nan))  # fmt: skip


def random_cameras(rng, T, r0=(0.1, -0.2, 0.05), t0=(320.0, 240.0, 0.0), scale=20.0, spread=0.15):
    cam = np.empty((T, 7))
    R = rotation_matrix(np.asarray(r0)) @ rotation_matrix(rng.normal(scale=spread, size=(T, 3)))
    cam[:, :3] = rotation_log(R)
    cam[:, 3:6] = np.asarray(t0) + rng.normal(scale=[15, 10, 3], size=(T, 3))
    cam[:, 6] = scale * np.exp(rng.normal(scale=0.05, size=T))
    return cam


def pose_at(R, t=(320.0, 240.0, 0.0), scale=20.0):
    return np.r_[rotation_log(R), t, scale]


def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    v = np.zeros(3)
    v["xyz".index(axis)] = np.radians(degrees)
    return rotation_matrix(v)


@pytest.fixture(scope="module")
def models():
    source = person_like("source", 0.9, ["jaw", "smile", "blink", "gaze", "brow", "puff"], mix_seed=1)
    target = person_like("target", 1.15, ["jaw", "smile", "blink", "gaze", "brow"], mix_seed=2)
    return source, target


# ---------------------------------------------------------------------------------------------- settings
def test_settings_from_config():
    assert TransferSettings.from_config(None) == TransferSettings()
    s = TransferSettings.from_config({"ridge": 0.1, "clamp_margin": None, "expression_reference": "median"})
    assert s.ridge == 0.1 and s.clamp_margin is None and s.expression_reference == "median"
    assert TransferSettings(**json.loads(s.to_json())) == s
    with pytest.raises(ConfigError, match="unknown key"):
        TransferSettings.from_config({"ridg": 1})
    for bad in ({"ridge": -1}, {"clamp_margin": -0.1}, {"expression_reference": "low"}, {"rotation_reference": "x"},
                {"expression_percentile": 101}, {"scale_motion": "yes"}):  # fmt: skip
        with pytest.raises(ConfigError):
            TransferSettings.from_config(bad)


# -------------------------------------------------------------------------------------------------- pose
def test_ping_pong_pattern():
    assert ping_pong(11, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert ping_pong(5, 2).tolist() == [0, 1, 0, 1, 0]
    assert ping_pong(3, 1).tolist() == [0, 0, 0]
    assert ping_pong(5, 9).tolist() == [0, 1, 2, 3, 4]


def test_expression_mode_keeps_the_targets_pose_frame_by_frame(models):
    source_model, target_model = models
    rng = np.random.default_rng(0)
    src = track(random_cameras(rng, 11), rng.normal(size=(11, source_model.n_exp)) * source_model.exp_std * 0.3)
    tgt_valid = np.array([True, False, True, True])
    tgt = track(random_cameras(rng, 4, r0=(0.0, 0.3, 0.0)), rng.normal(size=(4, target_model.n_exp)) * target_model.exp_std * 0.3, tgt_valid)
    res = transfer_motion(src, tgt, source_model, target_model, "expression")
    idx = [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert res.target_pose_frame.tolist() == idx and res.source_frame.tolist() == list(range(11))
    assert np.array_equal(res.camera, tgt.camera[idx])
    assert np.array_equal(res.valid, tgt_valid[idx])
    assert res.q.shape == (11, target_model.n_exp) and np.array_equal(res.p, tgt.p)

    long_tgt = track(random_cameras(rng, 20), np.zeros((20, target_model.n_exp)))
    res = transfer_motion(src, long_tgt, source_model, target_model, "expression")
    assert res.target_pose_frame.tolist() == list(range(11)) and np.array_equal(res.camera, long_tgt.camera[:11])
    # pose+expression records no target pose frame
    assert (transfer_motion(src, tgt, source_model, target_model).target_pose_frame == -1).all()


def test_self_transfer_reproduces_the_track(models):
    _, model = models
    rng = np.random.default_rng(1)
    T = 40
    q = rng.normal(size=(T, model.n_exp)) * model.exp_std * 0.5
    valid = np.ones(T, bool)
    valid[7] = False
    q[7] = 0.0  # a bridged frame, inside the range the valid frames show
    fit = track(random_cameras(rng, T, spread=0.4), q, valid)
    res = transfer_motion(fit, fit, model, model, "pose+expression")  # default settings, clamp included
    assert res.expression_transfer == "shared_basis"
    assert np.abs(res.q - fit.q).max() < 1e-12
    assert np.abs(rotation_matrix(res.camera[:, :3]) - rotation_matrix(fit.camera[:, :3])).max() < 1e-9
    assert np.abs(res.camera[:, 3:] - fit.camera[:, 3:]).max() < 1e-9
    assert np.array_equal(res.valid, valid)


def _talking_track(model, rng, T, neutral_jaw, n_rest, n_blink=0):
    """q (T, K) of a talker whose model neutral (q = 0) has the jaw ``neutral_jaw`` open: frames [0, n_rest)
    at rest (lips together, eyes open, all equal), then ``n_blink`` blinks with the lips together, then
    talking (jaw open 0.3–1.5, some smile). Returns q and the (rest, blink, talking) frame masks."""
    size = np.linalg.norm(model.mean[:, 0]) / np.linalg.norm(np.asarray(facemesh.canonical_face())[:, 0])
    jaw, blink, smile = (coefficients_of(model, FIELDS[n] * size) for n in ("jaw", "blink", "smile"))
    frame = np.arange(T)
    rest, blinking = frame < n_rest, (frame >= n_rest) & (frame < n_rest + n_blink)
    talking = ~rest & ~blinking
    opening = np.where(talking, rng.uniform(0.3, 1.5, T), 0.0) - neutral_jaw
    q = opening[:, None] * jaw + (talking * rng.uniform(-0.3, 0.3, T))[:, None] * smile + blinking[:, None] * blink
    return q, rest, blinking, talking


def test_rest_reference_maps_rest_onto_rest(models):
    """Person models are PCA about the video's typical face, which for a talker has the mouth open. 'auto'
    (rest) references map the source's rest face (lips together, eyes open) onto the target's rest face; the
    'zero' reference would leave the target's mouth open whenever the source's is closed."""
    source_model, target_model = models
    rng = np.random.default_rng(11)
    q_s, rest_s, _, _ = _talking_track(source_model, rng, 80, neutral_jaw=0.0, n_rest=24)
    q_t, rest_t, blink_t, talk_t = _talking_track(target_model, rng, 120, neutral_jaw=0.8, n_rest=30, n_blink=10)

    no_id = np.zeros(0)
    mouth_t, eyes_t = face_openings(target_model, no_id, q_t)
    mouth_neutral = face_openings(target_model, no_id, np.zeros((1, target_model.n_exp)))[0][0]
    assert mouth_t[rest_t].max() < mouth_neutral < mouth_t[talk_t].max() and mouth_t[rest_t].max() < mouth_t[talk_t].min()
    assert eyes_t[blink_t].max() < eyes_t[rest_t].min()
    found = rest_frames(mouth_t, eyes_t, np.ones(len(q_t), bool))
    assert found.any() and (found <= rest_t).all()  # lips together and eyes open: blinks are no rest face

    src, tgt = _expression_track(source_model, q_s), _expression_track(target_model, q_t)
    auto = transfer_motion(src, tgt, source_model, target_model, settings=NO_CLAMP)
    assert np.allclose(auto.target_expression_reference, q_t[0], atol=1e-9)  # the target's rest face
    assert np.allclose(auto.source_expression_reference, 0.0, atol=1e-9)  # the source's rest is its q = 0
    mouth_out, _ = face_openings(target_model, no_id, auto.q)
    assert np.allclose(mouth_out[rest_s], mouth_t[0], atol=1e-9)  # source at rest -> target at rest
    assert mouth_out[~rest_s].min() > mouth_t[0]  # and opens when the source opens

    zero = transfer_motion(src, tgt, source_model, target_model, settings=TransferSettings(clamp_margin=None, **ZERO_REF))
    mouth_zero, _ = face_openings(target_model, no_id, zero.q)
    assert np.allclose(mouth_zero[rest_s], mouth_neutral, atol=1e-9)  # the half-open typical face instead


def test_reference_pose_is_the_median_pose():
    R0 = rotation_matrix(np.array([0.2, -0.4, 0.3]))
    frames = [R0] * 5 + [R0 @ axis_rotation("y", 25), R0 @ axis_rotation("y", -25), R0 @ axis_rotation("x", 40), R0 @ axis_rotation("x", -40)]
    cam = np.stack([pose_at(R, t=(100 + k, 50 - k, 2.0), scale=3 + k) for k, R in enumerate(frames)])
    cam = np.vstack([cam, pose_at(axis_rotation("z", 170), t=(1e4, 1e4, 0), scale=1e3)])  # invalid frame
    valid = np.r_[np.ones(9, bool), False]
    for kind in ("median", "mean"):
        ref = reference_pose(cam, valid, kind)
        assert np.abs(rotation_matrix(ref[:3]) - R0).max() < 1e-8
        assert np.allclose(ref[3:], [104, 46, 2.0, 7])
    # a few far-off poses move the mean but not the median
    cam2 = np.vstack([cam[:9], [pose_at(R0 @ axis_rotation("y", 80))] * 2])
    assert np.abs(rotation_matrix(reference_pose(cam2, np.ones(11, bool))[:3]) - R0).max() < 1e-6
    assert np.abs(rotation_matrix(reference_pose(cam2, np.ones(11, bool), "mean")[:3]) - R0).max() > 1e-2
    with pytest.raises(TransferError):
        reference_pose(cam, np.zeros(10, bool))


@pytest.mark.parametrize("axis,degrees", [("y", 10.0), ("y", -35.0), ("x", 12.0), ("z", 20.0)])
def test_relative_head_turn_is_carried_about_the_targets_own_axes(models, axis, degrees):
    """``rotation_transfer: head``: source reference and target reference differ (pitched/rolled heads); a +X° turn
    of the source about its own axis turns the target +X° about the same axis of its own head: R_tref⁻¹ R_out = R_sref⁻¹ R_s."""
    _, model = models
    Rs_ref = rotation_matrix(np.array([0.25, 0.1, 0.35]))
    Rt_ref = rotation_matrix(np.array([-0.15, 0.45, -0.3]))
    sym = [axis_rotation("y", 15), axis_rotation("y", -15), axis_rotation("x", 9), axis_rotation("x", -9)]
    src_R = [Rs_ref] * 3 + [Rs_ref @ S for S in sym] + [Rs_ref @ axis_rotation(axis, degrees)]
    tgt_R = [Rt_ref] * 3 + [Rt_ref @ S for S in sym]
    src = track(np.stack([pose_at(R) for R in src_R]), np.zeros((8, model.n_exp)), np.r_[np.ones(7, bool), False])
    tgt = track(np.stack([pose_at(R, t=(500, 300, 0), scale=35) for R in tgt_R]), np.zeros((7, model.n_exp)))
    res = transfer_motion(src, tgt, model, model, settings=TransferSettings(rotation_transfer="head"))
    assert np.abs(rotation_matrix(res.target_reference[:3]) - Rt_ref).max() < 1e-8
    rel = rotation_log(Rt_ref.T @ rotation_matrix(res.camera[-1, :3]))
    expected = np.zeros(3)
    expected["xyz".index(axis)] = np.radians(degrees)
    assert np.allclose(rel, expected, atol=1e-9)
    # every frame: the target's motion about its reference equals the source's about its own
    rel_t = rotation_log(Rt_ref.T @ rotation_matrix(res.camera[:, :3]))
    rel_s = rotation_log(Rs_ref.T @ rotation_matrix(src.camera[:, :3]))
    assert np.allclose(rel_t, rel_s, atol=1e-9)


def model_face_size(model) -> float:
    return face_size(model, np.zeros(0), correspondence(model, model))


def test_soft_limit_is_identity_inside_and_bounded_beyond():
    x = np.linspace(-60, 60, 2401)
    y = soft_limit(x, -2.0, 3.0, 5.0)
    inside = (x >= -2) & (x <= 3)
    assert np.array_equal(y[inside], x[inside])
    assert y.max() < 8.0 and y.min() > -7.0 and y.max() > 7.9  # approaches hi + 5 and lo - 5
    assert (np.diff(y) > 0).all()  # monotone: a source that turns further turns the target further
    slope = np.diff(y) / np.diff(x)
    assert np.abs(np.diff(slope)).max() < 0.01  # no kink at the range's bounds
    assert np.array_equal(soft_limit(x, -2.0, 3.0, 0.0), np.clip(x, -2, 3))


@pytest.mark.parametrize("pose_range", [None, 4.0])
def test_pose_range_keeps_the_head_where_the_target_went(models, pose_range):
    """The target's head stays within ±1.5° and 2 px (a phone selfie); the source turns 30°, nods 20° and moves
    sideways by 60 px. Without a limit the target follows and the transfer warns; ``pose_range: 4`` keeps yaw, pitch,
    roll and the shift within the target's range + 4° (the shift: what a 4° turn moves a point one face size out by),
    still following the source's direction, and leaves frames inside the range as they were."""
    _, model = models
    rng = np.random.default_rng(3)
    T = 80  # at rest most of the time (its reference), then a turn and a nod
    yaw = np.r_[np.zeros(50), np.linspace(0, 30, 15), np.linspace(30, -20, 15)]
    pitch = np.r_[np.zeros(50), np.linspace(0, 20, 15), np.linspace(20, 0, 15)]
    src_R = np.stack([yaw_pitch_roll_matrix(y, p, 0.0) for y, p in zip(yaw, pitch)])
    tgt_R = np.stack([yaw_pitch_roll_matrix(*a) for a in rng.uniform(-1.5, 1.5, (T, 3))])
    shift = np.r_[np.zeros(50), np.linspace(0, 60, 30)]
    src = track(np.stack([pose_at(R, t=(320.0 + dx, 240.0, 0.0)) for R, dx in zip(src_R, shift)]), np.zeros((T, model.n_exp)))
    tgt_t = np.c_[500 + rng.uniform(-2, 2, T), 300 + rng.uniform(-2, 2, T), np.zeros(T)]
    tgt = track(np.stack([pose_at(R, t=t, scale=35) for R, t in zip(tgt_R, tgt_t)]), np.zeros((T, model.n_exp)))
    settings = TransferSettings(pose_range=pose_range)
    res = transfer_motion(src, tgt, model, model, settings=settings)
    free = transfer_motion(src, tgt, model, model)
    angles = yaw_pitch_roll(rotation_matrix(res.camera[:, :3]))
    x = np.degrees(res.camera[:, 3] / (35 * model_face_size(model)))
    lo, hi = (np.array(v) for v in zip(*res.stats["target_pose_range_deg"].values()))
    assert list(res.stats["target_pose_range_deg"]) == ["yaw", "pitch", "roll", "x", "y", "scale"]
    assert (lo[:3] > -1.6).all() and (hi[:3] < 1.6).all()
    face_px = 35 * model_face_size(model)
    assert np.allclose([lo[3], hi[3]], np.degrees(np.array([498, 502]) / face_px), atol=np.degrees(0.2 / face_px))
    excess = res.stats["pose_excess_p95_deg"]
    assert excess["yaw"] > 15 and excess["pitch"] > 10 and excess["x"] > np.degrees(40 / face_px)
    if pose_range is None:
        assert np.array_equal(res.camera, free.camera)
        assert angles[:, 0].max() > 25  # follows the source's turn
        assert res.camera[:, 3].max() > 500 + 50 * 35 / 20  # and its shift, scaled by the faces' sizes in pixels
        line = pose_warning(res.stats, settings)
        assert "yaw" in line and "pitch" in line and "pose_range" in line
    else:
        assert pose_warning(res.stats, settings) is None
        assert (angles < hi[:3] + pose_range + 1e-6).all() and (angles > lo[:3] - pose_range - 1e-6).all()
        assert (x < hi[3] + pose_range + 1e-6).all() and x.max() > hi[3] + 0.9 * pose_range
        assert angles[:, 0].max() > hi[0] + 0.9 * pose_range  # still turns, towards the bound
        assert np.corrcoef(angles[:, 0], yaw)[0, 1] > 0.8  # in the source's direction
        free_angles = yaw_pitch_roll(rotation_matrix(free.camera[:, :3]))
        free_x = np.degrees(free.camera[:, 3] / (35 * model_face_size(model)))
        inside = ((free_angles >= lo[:3]) & (free_angles <= hi[:3])).all(axis=1) & (free_x >= lo[3]) & (free_x <= hi[3])
        assert inside.sum() >= 10 and np.allclose(res.camera[inside], free.camera[inside], atol=1e-9)
        assert np.array_equal(res.camera[:, 4:], free.camera[:, 4:])  # no vertical shift, depth or scale to limit
        assert 0.2 < res.stats["pose_limited_fraction"] < 0.5


def _image_tilt(R: np.ndarray) -> np.ndarray:
    """Image-plane angle (degrees, y down) of the head's x axis (the ear line) under rotations R (..., 3, 3)."""
    d = (FLIP @ R)[..., :, 0]
    return np.degrees(np.arctan2(d[..., 1], d[..., 0]))


@pytest.mark.parametrize("composition, exact", [("angles", True), ("head", False), ("world", False)])
def test_image_plane_roll_arrives_whole_with_angles(models, composition, exact):
    """Both heads turned and pitched at rest, differently; the source tilts its head by 8° in the image (a roll about
    the camera's axis) and nods: with ``angles`` (the default) the target's image tilt changes by the source's 8°,
    its yaw/pitch/roll change by the source's; composed in the head or the camera frame the tilt arrives
    changed (a roll about a turned head's own axis tilts its image by less; a camera-frame nod of a turned head tilts it)."""
    _, model = models
    Rs_ref, Rt_ref = yaw_pitch_roll_matrix(25.0, 15.0, 0.0), yaw_pitch_roll_matrix(-20.0, -12.0, 5.0)
    sym = [axis_rotation("y", 15), axis_rotation("y", -15), axis_rotation("x", 9), axis_rotation("x", -9)]
    moves = [axis_rotation("z", 8.0) @ Rs_ref, axis_rotation("z", 8.0) @ Rs_ref @ axis_rotation("x", 10.0)]
    src = track(np.stack([pose_at(R) for R in [Rs_ref] * 3 + [Rs_ref @ S for S in sym] + moves]), np.zeros((9, model.n_exp)))
    tgt = track(np.stack([pose_at(R) for R in [Rt_ref] * 3 + [Rt_ref @ S for S in sym]]), np.zeros((7, model.n_exp)))
    res = transfer_motion(src, tgt, model, model, settings=TransferSettings(rotation_transfer=composition))
    R_out = rotation_matrix(res.camera[-2:, :3])
    tilt_s = _image_tilt(rotation_matrix(src.camera[-2:, :3])) - _image_tilt(Rs_ref)
    tilt_t = _image_tilt(R_out) - _image_tilt(Rt_ref)
    assert np.allclose(np.abs(tilt_s), 8.0, atol=1e-6)
    assert np.allclose(tilt_t, tilt_s, atol=1e-6) == exact, (composition, tilt_t)
    if exact:
        change_s = yaw_pitch_roll(rotation_matrix(src.camera[-2:, :3])) - yaw_pitch_roll(Rs_ref)
        assert np.allclose(yaw_pitch_roll(R_out) - yaw_pitch_roll(Rt_ref), change_s, atol=1e-6)
    else:
        assert np.abs(tilt_t - tilt_s).max() > 0.3


def _nodding(model: MorphableModel, degrees: float = 3.0) -> MorphableModel:
    """``model`` with one more expression component: the whole face turned ``degrees`` about x (a person model's PCA
    takes up some head rotation the rigid fit left)."""
    C = np.array(model.mean)
    nod = (C - C.mean(axis=0)) @ axis_rotation("x", degrees).T - (C - C.mean(axis=0))
    return MorphableModel(**{**model.__dict__, "exp_basis": np.concatenate([model.exp_basis, nod[None]]), "exp_std": np.r_[model.exp_std, 1.0]})


@pytest.mark.parametrize("anchored", [True, False])
def test_head_rotation_inside_the_expression_reaches_the_target_as_head_motion(models, anchored):
    """The source nods through an expression component (its camera still); the target's basis has none: with
    ``anchor_rotation`` the target's head anchors (camera and expression together) turn as the source's, frame by
    frame; without it the nod is lost in the projection."""
    source_model, target_model = _nodding(models[0]), models[1]
    T = 60
    nod = 0.5 + 0.5 * np.sin(np.arange(T) / 4.0)
    q = np.zeros((T, source_model.n_exp))
    q[:, -1] = nod
    R0 = yaw_pitch_roll_matrix(20.0, -10.0, 4.0)
    src = track(np.stack([pose_at(R0)] * T), q)
    tgt = track(np.stack([pose_at(yaw_pitch_roll_matrix(-15.0, 8.0, -6.0), t=(500, 300, 0), scale=35)] * 20), np.zeros((20, target_model.n_exp)))
    res = transfer_motion(src, tgt, source_model, target_model, settings=TransferSettings(anchor_rotation=anchored))
    eff_s = yaw_pitch_roll(R0 @ anchor_rotations(source_model, src.p, q))
    eff_t = yaw_pitch_roll(rotation_matrix(res.camera[:, :3]) @ anchor_rotations(target_model, res.p, res.q))
    moved_s, moved_t = eff_s - eff_s[0], eff_t - eff_t[0]
    assert np.ptp(moved_s[:, 1]) > 2.5  # the source's head anchors nod ~3°
    if anchored:
        assert np.abs(moved_t - moved_s).max() < 1e-6
        assert res.stats["anchor_rotation_p95_deg"]["source"] > 2.5
    else:
        assert np.ptp(moved_t[:, 1]) < 0.5 * np.ptp(moved_s[:, 1])
    # a lost frame (no expression, no camera) stays lost and leaves the others as they were
    q[5], cam = np.nan, src.camera.copy()
    cam[5] = np.nan
    lost = transfer_motion(track(cam, q, np.arange(T) != 5), tgt, source_model, target_model, settings=TransferSettings(anchor_rotation=anchored))
    assert not lost.valid[5] and np.allclose(np.delete(lost.camera, 5, axis=0), np.delete(res.camera, 5, axis=0), atol=1e-6)


def test_translation_scales_with_the_face_size(models):
    _, model = models
    T, d, s_s, s_t = 9, np.array([12.0, -7.0, 3.0]), 2.0, 5.0
    cam = np.tile(pose_at(np.eye(3), t=(100, 80, 1), scale=s_s), (T, 1))
    cam[4, 3:6] += d
    cam[6, 6] = 1.1 * s_s  # the source comes 10 % closer
    src = track(cam, np.zeros((T, model.n_exp)))
    tgt = track(np.tile(pose_at(np.eye(3), t=(400, 260, -2), scale=s_t), (5, 1)), np.zeros((5, model.n_exp)))
    res = transfer_motion(src, tgt, model, model)
    moved = res.camera[:, 3:6] - [400, 260, -2]
    assert np.allclose(moved[4], d * s_t / s_s) and np.allclose(np.delete(moved, 4, 0), 0)
    assert np.allclose(res.camera[:, 6], np.where(np.arange(T) == 6, 1.1 * s_t, s_t))
    res = transfer_motion(src, tgt, model, model, settings=TransferSettings(scale_motion=False))
    assert np.allclose(res.camera[:, 6], s_t)
    # a target face 1.5x larger in model units moves 1.5x further at the same camera scale
    big = person_like("big", 1.5 * 1.15, ["jaw", "smile", "blink", "gaze", "brow"], mix_seed=2)
    res = transfer_motion(src, track(tgt.camera, np.zeros((5, big.n_exp))), model, big)
    assert np.allclose(res.camera[4, 3:6] - [400, 260, -2], 1.5 * d * s_t / s_s)


# -------------------------------------------------------------------------------------------- expression
def test_displacement_matrix_is_the_person_transfer_matrix(models):
    source_model, target_model = models
    corr = correspondence(source_model, target_model)
    assert not corr.on_landmarks
    M = expression_transfer_matrix(source_model, target_model, corr, 0.01, 1.3)
    assert np.allclose(M, 1.3 * transfer_matrix(source_model, target_model, 0.01))


def _expression_track(model, q):
    return track(np.tile(pose_at(np.eye(3)), (len(q), 1)), q)


def test_displacement_in_the_target_span_is_reproduced(models):
    source_model, target_model = models
    ratio = 1.15 / 0.9
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 5)) * 0.7  # jaw, smile, blink, gaze, brow: all in the target's span
    d_s = np.einsum("tk,knd->tnd", w, np.stack([FIELDS[n] for n in ("jaw", "smile", "blink", "gaze", "brow")]) * 0.9)
    q_s = np.stack([coefficients_of(source_model, d) for d in d_s])
    tgt_q = rng.normal(size=(30, target_model.n_exp)) * target_model.exp_std
    exact, default_ridge = TransferSettings(ridge=0.0, clamp_margin=None, **ZERO_REF), TransferSettings(clamp_margin=None, **ZERO_REF)
    for settings, tol in ((exact, 1e-9), (default_ridge, 1e-2)):  # default ridge: a slight, intended shrink
        res = transfer_motion(_expression_track(source_model, q_s), _expression_track(target_model, tgt_q), source_model, target_model, settings=settings)
        assert res.expression_transfer == "displacement"
        d_t = target_model.shape(None, res.q) - target_model.mean
        err = np.linalg.norm((d_t - ratio * d_s).reshape(6, -1), axis=1) / np.linalg.norm((ratio * d_s).reshape(6, -1), axis=1)
        assert err.max() < tol, err
        assert res.stats["unrepresented_p95"] < max(tol, 1e-6)  # (a square root of rounding noise at ridge 0)


def test_eyelid_closing_and_gaze_reach_the_target(models):
    source_model, target_model = models
    ratio = 1.15 / 0.9
    upper, lower = _eye_lids(np.array(facemesh.canonical_face()))
    d_s = np.stack([np.zeros_like(FIELDS["blink"]), FIELDS["blink"] * 0.9, FIELDS["gaze"] * 0.9])
    q_s = np.stack([coefficients_of(source_model, d) for d in d_s])
    res = transfer_motion(_expression_track(source_model, q_s), _expression_track(target_model, np.zeros((3, target_model.n_exp))),
                   source_model, target_model, settings=TransferSettings(**ZERO_REF))  # fmt: skip
    d_t = target_model.shape(None, res.q) - target_model.mean
    assert np.abs(d_t[0]).max() < 1e-12  # neutral stays neutral
    lid_drop = d_t[1, upper, 1]
    assert np.all(lid_drop < 0) and np.allclose(lid_drop, ratio * d_s[1, upper, 1], rtol=0.02)
    assert np.abs(d_t[1, lower]).max() < 0.02 * np.abs(lid_drop).max()
    iris = list(facemesh.IRIS)
    assert np.allclose(d_t[2, iris, 0], ratio * 0.9 * 0.3, rtol=0.05)  # the ridge damps the small gaze mode a little


def test_displacement_outside_the_target_span_is_projected_and_clamped(models):
    source_model, target_model = models
    ratio = 1.15 / 0.9
    d_s = np.stack([FIELDS["puff"] * 0.9 * a for a in (1.0, 5.0, 20.0)]) + 0.9 * FIELDS["jaw"] * 3.0
    q_s = np.stack([coefficients_of(source_model, d) for d in d_s])
    rng = np.random.default_rng(4)
    tgt_q = rng.uniform(-1, 1, size=(40, target_model.n_exp)) * target_model.exp_std
    src, tgt = _expression_track(source_model, q_s), _expression_track(target_model, tgt_q)

    free = transfer_motion(src, tgt, source_model, target_model, settings=TransferSettings(ridge=0.0, clamp_margin=None, **ZERO_REF))
    B = target_model.exp_basis.reshape(target_model.n_exp, -1)
    d_t = free.q @ B
    target_d = ratio * d_s.reshape(3, -1)
    assert np.all(np.linalg.norm(d_t, axis=1) <= np.linalg.norm(target_d, axis=1) + 1e-9)  # no blow-up
    assert np.abs((d_t - target_d) @ B.T).max() < 1e-9  # the orthogonal projection onto the target's span
    assert free.stats["unrepresented_median"] > 0.3

    clamped = transfer_motion(src, tgt, source_model, target_model, settings=TransferSettings(**ZERO_REF))  # clamp_margin 0.5
    lo = tgt_q.min(0) - 0.5 * target_model.exp_std
    hi = tgt_q.max(0) + 0.5 * target_model.exp_std
    assert np.all(clamped.q >= lo - 1e-12) and np.all(clamped.q <= hi + 1e-12)
    assert clamped.stats["clamped_fraction"] > 0
    assert np.isfinite(clamped.q).all()


def test_shared_basis_copies_relative_coefficients():
    model = ict_like()
    assert expression_reference_kinds(model) == ("percentile", "percentile", "percentile", "median", "median")
    rng = np.random.default_rng(5)
    q_s = np.c_[rng.uniform(0, 1, size=(50, 3)), rng.normal(scale=0.2, size=(50, 2))]
    q_t = np.c_[rng.uniform(0.1, 0.6, size=(30, 3)), rng.normal(0.1, 0.1, size=(30, 2))]
    valid_s = np.ones(50, bool)
    valid_s[:5] = False
    q_s[:5] = 9.0  # invalid frames do not enter the references
    src, tgt = track(random_cameras(rng, 50), q_s, valid_s), track(random_cameras(rng, 30), q_t)
    res = transfer_motion(src, tgt, model, model, settings=NO_CLAMP)
    assert res.expression_transfer == "shared_basis"
    ref_s = np.r_[np.percentile(q_s[5:, :3], 10, axis=0), np.median(q_s[5:, 3:], axis=0)]
    ref_t = np.r_[np.percentile(q_t[:, :3], 10, axis=0), np.median(q_t[:, 3:], axis=0)]
    assert np.allclose(res.source_expression_reference, ref_s) and np.allclose(res.target_expression_reference, ref_t)
    assert np.abs(res.q - (ref_t + q_s - ref_s)).max() < 1e-12
    # same components by name (e.g. ICT face vs full region): shared too; person models never by name
    other = ict_like(size=1.2)
    assert other.content_hash() != model.content_hash() and shared_expression_basis(model, other)
    res = transfer_motion(src, track(tgt.camera, q_t), model, other, settings=TransferSettings(clamp_margin=None, expression_reference="zero"))
    assert np.abs(res.q - q_s).max() < 1e-12


def test_shared_basis_eyes_close_by_the_sources_fraction_on_any_face(ict_model_path):
    """ICT (a shared basis): a copied eyeBlink moves the lid by the same distance on every face, so it closes a wider
    eye by less. With named expressions the target's eye closes and opens by the fraction the source's did, measured
    on the meshes' detector landmarks by the fidelity's own signals; the other coefficients stay the copy."""
    from deep_puppets.expression_signals import expression_signals
    from deep_puppets.models.ict import EYE_COMPONENTS, load_ict

    ict = load_ict(ict_model_path)
    names = list(ict.exp_names)
    blink, wide = [names.index(n) for n in EYE_COMPONENTS[0]], [names.index(n) for n in EYE_COMPONENTS[1]]

    def apertures(p, q):
        sig = expression_signals(ict.landmark_points(ict.shape(p, q)), y_down=False)
        return np.c_[sig["eye_aperture_left"], sig["eye_aperture_right"]]

    # identities whose open eyes differ most: ±3 standard deviations along the identity component that opens them most
    k = int(np.argmax([apertures(np.eye(ict.n_id)[i], np.zeros((1, ict.n_exp)))[0, 0] for i in range(ict.n_id)]))
    p_s, p_t = -3.0 * np.eye(ict.n_id)[k], 3.0 * np.eye(ict.n_id)[k]
    rest_s, rest_t = apertures(p_s, np.zeros((1, ict.n_exp)))[0], apertures(p_t, np.zeros((1, ict.n_exp)))[0]
    assert rest_t[0] / rest_s[0] > 1.3  # d6 and d3 differ by 1.5

    T = 41
    q_s = np.zeros((T, ict.n_exp))
    q_s[:, blink[0]] = np.clip(1.5 - np.abs(np.arange(T) - 12) / 4, 0, 1)  # the left eye blinks
    q_s[:, wide[1]] = np.clip(1.5 - np.abs(np.arange(T) - 30) / 4, 0, 1)  # the right eye opens wide
    q_s[:, names.index("jawOpen")] = np.linspace(0, 0.8, T)
    rng = np.random.default_rng(3)
    src = track(random_cameras(rng, T), q_s, p=p_s)
    tgt = track(random_cameras(rng, 20), np.zeros((20, ict.n_exp)), p=p_t)
    settings = TransferSettings(clamp_margin=None, expression_reference="zero")
    closure_s = apertures(p_s, q_s) / rest_s

    copied = transfer_motion(src, tgt, ict, ict, settings=replace(settings, named_expressions=False))
    assert np.abs(copied.q - q_s).max() < 1e-12
    copy_error = np.abs(apertures(p_t, copied.q) / rest_t - closure_s).max()
    assert copy_error > 0.1  # the copy leaves the wider eye open

    res = transfer_motion(src, tgt, ict, ict, settings=settings)
    # (the transfer matches the named signal, 7 lid pairs; the fidelity measures 5 of them over the eye's width)
    error = np.abs(apertures(p_t, res.q) / rest_t - closure_s).max()
    assert error <= 0.05 and error < copy_error / 2
    others = np.setdiff1d(np.arange(ict.n_exp), blink + wide)
    assert np.abs(res.q[:, others] - q_s[:, others]).max() < 1e-12
    assert res.q[:, blink + wide].min() >= 0.0 and res.q[:, wide].max() <= 1.0
    assert res.q[:, blink].max() > 1.0  # the wider eye needs more than ICT's eyeBlink = 1 to close
    assert res.stats["eye_closure"]["changed_fraction"][0] > 0


def test_mismatched_track_and_model_is_an_error(models):
    source_model, target_model = models
    src = _expression_track(source_model, np.zeros((3, source_model.n_exp)))
    with pytest.raises(TransferError, match="expression coefficients"):
        transfer_motion(src, src, source_model, target_model)
    with pytest.raises(ConfigError, match="mode"):
        transfer_motion(src, src, source_model, source_model, "pose")
    with pytest.raises(TransferError, match="source: .*no valid frame"):
        transfer_motion(track(src.camera, src.q, np.zeros(3, bool)), src, source_model, source_model)


# ----------------------------------------------------------------------------------------------- storage
def test_hdf5_round_trip(tmp_path, models):
    source_model, target_model = models
    rng = np.random.default_rng(6)
    src = track(random_cameras(rng, 13), rng.normal(size=(13, source_model.n_exp)))
    tgt = track(random_cameras(rng, 5), rng.normal(size=(5, target_model.n_exp)))
    res = transfer_motion(src, tgt, source_model, target_model, "expression", TransferSettings(ridge=0.05))
    path = write_transfer(tmp_path / "t.h5", res, source="alice", target="bob", width=640, height=480, fps=25.0)
    back, attrs = read_transfer(path)
    for k in ("p", "q", "camera", "valid", "source_frame", "target_pose_frame", "source_reference", "target_reference",
              "source_expression_reference", "target_expression_reference"):  # fmt: skip
        assert np.array_equal(getattr(back, k), getattr(res, k)) and getattr(back, k).dtype == getattr(res, k).dtype, k
    assert back.settings == res.settings and back.stats == res.stats and back.mode == "expression"
    assert back.source_model_hash == source_model.content_hash() and back.target_model_hash == target_model.content_hash()
    assert (attrs["source"], attrs["target"], attrs["width"], attrs["height"], attrs["fps"]) == ("alice", "bob", 640, 480, 25.0)
    assert back.to_fit().q.shape == (13, target_model.n_exp)


def test_transfer_files_checks_the_models(tmp_path, models):
    from deep_puppets.tracks import write_track

    source_model, target_model = models
    rng = np.random.default_rng(7)
    paths = {}
    for name, model, T, fps in (("alice", source_model, 12, 30.0), ("bob", target_model, 8, 25.0)):
        fit = track(random_cameras(rng, T), rng.normal(size=(T, model.n_exp)))
        attrs = dict(video=name, model=model.name, model_hash=model.content_hash(), fit_settings=fit.settings.to_json(),
                     width=320, height=240, fps=fps, n_frames=T, segments="[]")  # fmt: skip
        paths[name] = write_track(tmp_path / f"{name}.h5", fit, attrs)
    out = tmp_path / "pair.h5"
    res = transfer_files(paths["alice"], paths["bob"], source_model, target_model, out, mode="expression")
    back, attrs = read_transfer(out)
    assert (attrs["source"], attrs["target"], attrs["fps"], attrs["width"]) == ("alice", "bob", 30.0, 320)
    assert np.array_equal(back.q, res.q) and back.n_frames == 12
    with pytest.raises(TransferError, match="not the model given"):
        transfer_files(paths["alice"], paths["bob"], target_model, target_model, out)


def test_other_topologies_are_compared_on_the_detector_landmarks(models):
    """A target on another mesh (here: the same face with its vertices renumbered and the landmarks placed
    through the new numbering) goes through the landmark path and gives the same expression as the vertex path."""
    source_model, target_model = models
    perm = np.random.default_rng(8).permutation(N_LANDMARKS)  # new vertex j = old vertex perm[j]
    inverse = np.argsort(perm)
    tri = inverse[target_model.triangles].astype(np.int32)
    lm_tri, lm_bary = facemesh.vertex_correspondence(tri, inverse[np.arange(N_LANDMARKS)])
    renumbered = MorphableModel(**{**target_model.__dict__, "name": "renumbered", "mean": target_model.mean[perm],
                                   "exp_basis": target_model.exp_basis[:, perm], "triangles": tri, "lm_tri": lm_tri, "lm_bary": lm_bary})  # fmt: skip
    assert correspondence(source_model, renumbered).on_landmarks
    rng = np.random.default_rng(9)
    src = track(random_cameras(rng, 10), rng.normal(size=(10, source_model.n_exp)) * source_model.exp_std)
    tgt_q = rng.normal(size=(20, target_model.n_exp)) * target_model.exp_std
    a = transfer_motion(src, track(random_cameras(rng, 20), tgt_q), source_model, target_model)
    b = transfer_motion(src, track(random_cameras(rng, 20), tgt_q), source_model, renumbered)
    assert np.allclose(a.q, b.q, atol=1e-10) and np.isclose(a.stats["size_ratio"], b.stats["size_ratio"])
