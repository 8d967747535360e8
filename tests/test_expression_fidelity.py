"""Expression fidelity (deep_puppets/expression_fidelity.py, jobs/transfer.py): the scores on hand-made signals, and
the job on a tiny synthetic pair (person-like models, a source with blinks, a mouth and head motion, its detected
landmarks drawn from its own model) written to files as the workflow has them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deep_puppets import h5io
from deep_puppets.camera import rotation_log, rotation_matrix
from deep_puppets.errors import InputError
from deep_puppets.expression_fidelity import amplitude_ratio, blink_scores, fidelity_summary, match_events, pearson
from deep_puppets.expression_signals import EXPRESSION_SIGNALS, SIGNALS
from deep_puppets.fit_types import FitResult
from deep_puppets.jobs.transfer import expression_fidelity
from deep_puppets.landmark_basis import projected_landmarks
from deep_puppets.models.person import load_person_model, save_model
from deep_puppets.tracks import write_track
from deep_puppets.transfer import TransferSettings
from deep_puppets.transfer_files import transfer_files

from .test_transfer import FIELDS, coefficients_of, person_like

FIELD_NAMES = ["jaw", "blink", "gaze", "brow", "smile"]


# -------------------------------------------------------------------------------------------- the scores
def test_pearson_and_amplitude():
    t = np.linspace(0, 6, 200)
    a = np.sin(t)
    assert pearson(a, 3 + 0.5 * a) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert amplitude_ratio(a, 3 + 0.5 * a) == pytest.approx(0.5)
    valid = np.ones(200, bool)
    valid[:100] = False
    b = np.where(valid, a, 100.0)  # garbage on invalid frames is ignored
    assert pearson(a, b, valid) == pytest.approx(1.0) and amplitude_ratio(a, b, valid) == pytest.approx(1.0)
    assert np.isnan(pearson(a, np.ones(200))) and np.isnan(pearson(a[:2], a[:2]))


def _apertures(level, blinks, T=100):
    a = np.full(T, level)
    for s, e in blinks:
        a[s:e] = 0.1 * level
    return {"eye_aperture_left": a, "eye_aperture_right": a}


def test_blinks_matched_within_two_frames():
    assert match_events([(10, 13)], [(14, 17)]) == 1  # frames 12 and 14: 2 frames apart
    assert match_events([(10, 13)], [(15, 17)]) == 0  # 3 frames apart
    assert match_events([(20, 22)], [(15, 19)]) == 1  # 18 and 20, before
    assert match_events([(10, 13), (14, 16)], [(12, 15)]) == 1  # one-to-one
    source = _apertures(0.3, [(10, 13), (40, 43), (70, 74)])
    measured = _apertures(0.2, [(11, 14), (71, 73), (90, 92)])  # misses the second, adds one at 90
    b = blink_scores(source, measured)
    assert (b["recall"], b["precision"], b["n_source"], b["n_measured"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3, 3)
    none = blink_scores(source, _apertures(0.2, []))
    assert none["recall"] == 0 and none["precision"] is None


def test_eye_amplitude_is_relative_closure():
    """Open eyes 0.3 (source) and 0.45 (target, 1.5x): the target closing by the same fraction of its own rest gives
    a = 1 (raw ratio 1.5 kept as amplitude_absolute); blinks at the same frames match."""
    blinks = [(10, 13), (40, 43), (70, 74)]
    t = np.arange(100)
    wobble = 1 + 0.05 * np.sin(t / 5)
    source = {k: v * wobble for k, v in _apertures(0.3, blinks).items()}
    target = {k: v * wobble for k, v in _apertures(0.45, blinks).items()}
    rest = {k: np.sin(t / 7) for k in SIGNALS if k not in source}
    valid = np.ones(100, bool)
    out = fidelity_summary({**rest, **source}, {**rest, **target}, valid, {**rest, **source}, valid, "pose+expression")
    for k in source:
        m = out["transferred"][k]
        assert m["a"] == pytest.approx(1.0) and m["amplitude_absolute"] == pytest.approx(1.5)
        assert m["r"] == pytest.approx(1.0) and m["rest_measured"] / m["rest_source"] == pytest.approx(1.5)
        assert out["vs_ceiling"][k]["a_relative"] == pytest.approx(1.0)
    assert out["transferred"]["mouth_open"]["a"] == pytest.approx(1.0) and "amplitude_absolute" not in out["transferred"]["mouth_open"]
    b = out["blinks"]["transferred"]
    assert (b["recall"], b["precision"]) == (1.0, 1.0)


def test_expression_mode_compares_no_head_signal():
    rng = np.random.default_rng(0)
    s = {k: rng.normal(size=50) for k in SIGNALS}
    valid = np.ones(50, bool)
    out = fidelity_summary(s, s, valid, s, valid, "expression")
    assert set(out["transferred"]) == set(EXPRESSION_SIGNALS) and set(out["ceiling"]) == set(SIGNALS)
    assert set(fidelity_summary(s, s, valid, s, valid, "pose+expression")["transferred"]) == set(SIGNALS)


# ------------------------------------------------------------------------------------------ the job
T = 60
BLINKS = [(8, 11), (30, 33), (50, 53)]


def _source_motion(model):
    """q (T, K) with three blinks and a talking jaw, and cameras turning the head (yaw and pitch)."""
    t = np.arange(T)
    blink = np.zeros(T)
    for s, e in BLINKS:
        blink[s:e] = 1.8  # 1 = upper lids down to the eye centre line (half open); 1.8 = nearly shut
    jaw = 1.5 + 1.5 * np.sin(t / 3.0)  # the jaw field opens the inner lips by 0.06 cm per unit
    q = np.outer(blink, coefficients_of(model, FIELDS["blink"])) + np.outer(jaw, coefficients_of(model, FIELDS["jaw"]))
    cam = np.zeros((T, 7))
    cam[:, :3] = rotation_log(rotation_matrix(np.stack([0.15 * np.sin(t / 7.0), 0.25 * np.sin(t / 11.0), 0.05 * np.cos(t / 9.0)], 1)))
    cam[:, 3:] = [160.0, 120.0, 0.0, 18.0]
    return q, cam


def _write_pair(tmp, target_fields, mode="pose+expression", clamp_margin=0.5, named_expressions=True):
    """Model, track and landmark files of a source and a target, and their transfer; the job's keyword arguments."""
    paths, models, rng = {}, {}, np.random.default_rng(1)
    for name, size, fields, mix in (("src", 1.0, FIELD_NAMES, None), ("tgt", 1.15, target_fields, 3)):
        save_model(tmp / f"{name}_model.h5", person_like(name, size, fields, mix_seed=mix))
        models[name] = load_person_model(tmp / f"{name}_model.h5")
    q_s, cam_s = _source_motion(models["src"])
    # the target: a calm actor (slight jaw motion; it never blinks), facing the camera
    q_t = np.outer(0.3 * np.sin(np.arange(40) / 5.0), coefficients_of(models["tgt"], FIELDS["jaw"] * 1.15))
    cam_t = np.tile([0.0, 0.0, 0.0, 160.0, 120.0, 0.0, 16.0], (40, 1))
    for name, q, cam in (("src", q_s, cam_s), ("tgt", q_t, cam_t)):
        fit = FitResult(p=np.zeros(0), q=q, camera=cam, valid=np.ones(len(q), bool), residual=np.ones(len(q)))
        attrs = dict(video=name, model=name, model_hash=models[name].content_hash(), fit_settings=fit.settings.to_json(),
                     width=320, height=240, fps=25.0, n_frames=len(q), segments="[]")  # fmt: skip
        paths[name] = write_track(tmp / f"{name}_track.h5", fit, attrs)
    # detected landmarks: the source's model landmarks, with 0.15 px of noise
    src_fit = FitResult(p=np.zeros(0), q=q_s, camera=cam_s, valid=np.ones(T, bool), residual=np.ones(T))
    det = projected_landmarks(models["src"], src_fit) + rng.normal(scale=0.15, size=(T, 478, 3))
    valid = np.ones(T, bool)
    valid[20] = False
    det[20] = np.nan
    lm = {"frame_index": np.arange(T), "landmarks": det, "valid": valid, "score": valid.astype(float), "box": np.zeros((T, 4))}
    lm_attrs = dict(video="src", video_path="src.mp4", fps=25.0, width=320, height=240, n_frames=T, segment=0, start=0, stop=T,
                    core_start=0, core_stop=T, detector={})  # fmt: skip
    landmark_file = h5io.write(tmp / "seg000.h5", h5io.LANDMARKS, lm, lm_attrs)
    transfer_files(paths["src"], paths["tgt"], models["src"], models["tgt"], tmp / "transfer.h5", mode=mode,
                   settings=TransferSettings(clamp_margin=clamp_margin, named_expressions=named_expressions))  # fmt: skip
    return dict(model_cfg={"type": "person"}, landmark_files=[landmark_file], source_track=paths["src"], source_model_file=tmp / "src_model.h5",
                target_model_file=tmp / "tgt_model.h5", transfer_file=tmp / "transfer.h5", pair="src__tgt__pose",
                summary_json=tmp / "fidelity" / "summary.json", figure_png=tmp / "fidelity" / "fidelity.png")  # fmt: skip


def test_job_scores_a_faithful_transfer_near_the_ceiling(tmp_path):
    kw = _write_pair(tmp_path, FIELD_NAMES, clamp_margin=None)
    expression_fidelity(**kw)
    s = json.loads(kw["summary_json"].read_text())
    assert kw["figure_png"].stat().st_size > 10_000
    assert s["n_frames"] == T and s["n_compared"] == T - 1 and s["mode"] == "pose+expression"
    for part in ("ceiling", "transferred"):
        for k in ("eye_aperture_left", "eye_aperture_right", "mouth_open", "yaw", "pitch", "roll"):
            assert s[part][k]["r"] > 0.97, (part, k, s[part][k])
        assert 0.8 < s[part]["eye_aperture_left"]["a"] < 1.25
        assert s["blinks"][part]["recall"] == 1 and s["blinks"][part]["precision"] == 1 and s["blinks"][part]["n_source"] == 3
    assert s["ceiling"]["mouth_open"]["r"] > 0.99 and abs(s["ceiling"]["mouth_open"]["a"] - 1) < 0.05
    assert abs(s["vs_ceiling"]["mouth_open"]["r_gap"]) < 0.03


def test_job_shows_blinks_the_target_cannot_make(tmp_path):
    """A target whose basis cannot close its eyes, without named expressions: the measurement sees the blinks lost
    (eye amplitude ~0, recall 0) while the mouth arrives and the ceiling keeps the blinks; expression mode compares no
    head signal. With named expressions (the default) the blinks arrive."""
    kw = _write_pair(tmp_path, ["jaw", "gaze", "brow", "smile"], mode="expression", clamp_margin=None, named_expressions=False)
    expression_fidelity(**kw)
    s = json.loads(kw["summary_json"].read_text())
    assert s["mode"] == "expression" and "yaw" not in s["transferred"] and "yaw" in s["ceiling"]
    assert s["transferred"]["eye_aperture_left"]["a"] < 0.2 and s["blinks"]["transferred"]["recall"] == 0
    assert s["transferred"]["mouth_open"]["r"] > 0.8  # not ~1: the source's head pitch (±14°) leaks into its 2D mouth signal
    assert s["ceiling"]["eye_aperture_left"]["r"] > 0.97 and s["blinks"]["ceiling"]["recall"] == 1
    kw = _write_pair(tmp_path, ["jaw", "gaze", "brow", "smile"], mode="expression", clamp_margin=None)
    expression_fidelity(**kw)
    s = json.loads(kw["summary_json"].read_text())
    assert s["transferred"]["eye_aperture_left"]["r"] > 0.9 and s["blinks"]["transferred"]["recall"] == 1


def test_job_refuses_a_transfer_for_another_target(tmp_path):
    kw = _write_pair(tmp_path, FIELD_NAMES)
    with pytest.raises(InputError, match="transfer.h5: made for another target model"):
        expression_fidelity(**{**kw, "target_model_file": kw["source_model_file"]})
