"""The reconstruction on a real talking-head clip (../shared; skipped where it is absent): the fitted model
follows the detector (landmark NME ≤ 3% of the inter-ocular distance) and jitters less than it (ratio ≤ 0.6),
and an ICT fit closes the eyes where the detector sees a blink."""

import numpy as np
import pytest

from deep_puppets import diagnostics as dg
from deep_puppets.fit_types import FitSettings
from deep_puppets.fitting import identity_frames, solve_identity, solve_segment
from deep_puppets.landmark_basis import projected_landmarks
from deep_puppets.landmarks import LandmarkSettings, detect_frames
from deep_puppets.models.person import build_person_model
from deep_puppets.video import iter_frames

N = 300


@pytest.fixture(scope="module")
def d6_landmarks():
    from .conftest import shared_file

    path = shared_file("data/videos/LivePortrait__d6.mp4")
    return detect_frames(iter_frames(path, 0, N), LandmarkSettings())


@pytest.fixture(scope="module")
def d6_fit(d6_landmarks):
    lm, valid = d6_landmarks["landmarks"], d6_landmarks["valid"]
    model = build_person_model(lm, valid, 20)
    ident = solve_identity(model, lm[identity_frames(valid, 60)])
    return model, solve_segment(model, lm, valid, FitSettings(), p=ident.p), ident


def test_fit_follows_the_detector(d6_landmarks, d6_fit):
    model, fit, _ = d6_fit
    nme = dg.landmark_nme(projected_landmarks(model, fit), d6_landmarks["landmarks"], d6_landmarks["valid"])
    assert np.nanmean(nme) <= 0.03


def test_fit_jitters_less_than_the_detector(d6_landmarks, d6_fit):
    model, fit, _ = d6_fit
    valid = d6_landmarks["valid"]
    ratio = np.nanmean(dg.jitter(projected_landmarks(model, fit), valid)) / np.nanmean(dg.jitter(d6_landmarks["landmarks"], valid))
    assert ratio <= 0.6


def test_smoothing_lowers_jitter_on_the_real_clip(d6_landmarks, d6_fit):
    from dataclasses import replace

    model, fit, ident = d6_fit
    lm, valid = d6_landmarks["landmarks"], d6_landmarks["valid"]
    raw = solve_segment(model, lm, valid, replace(FitSettings(), lambda_q=0.0, lambda_c=0.0), p=ident.p)
    d2 = lambda c: np.nanmean(np.linalg.norm(c[:-2] - 2 * c[1:-1] + c[2:], axis=1))  # noqa: E731
    assert d2(fit.camera) < 0.5 * d2(raw.camera)


def test_ict_fit_blinks_where_the_detector_sees_a_blink(d6_landmarks, ict_model_path):
    """The clip's two blinks in its first 300 frames (detected lid gap below half its median for ≥ 2 frames) are
    blinks of the fitted ICT track too. The detector's ring of lid skin above the upper margin barely moves in a
    blink, ICT's eyeBlink moves it most of the way: weighted like the other landmarks it held the lids half open
    and the track blinked 0 times."""
    import dataclasses

    from deep_puppets.expression_fidelity import blink_scores
    from deep_puppets.expression_signals import expression_signals
    from deep_puppets.models import facemesh
    from deep_puppets.models.ict import load_ict

    lm, valid = d6_landmarks["landmarks"], d6_landmarks["valid"]
    detected = expression_signals(lm, valid)

    def fitted_blinks(model):
        ident = solve_identity(model, lm[identity_frames(valid, 60)])
        fit = solve_segment(model, lm, valid, FitSettings(), p=ident.p)
        return blink_scores(detected, expression_signals(projected_landmarks(model, fit)), valid & fit.valid)

    ict = load_ict(ict_model_path)
    shipped = fitted_blinks(ict)
    assert shipped["n_source"] >= 2 and shipped["recall"] == 1.0 and shipped["precision"] == 1.0
    w = ict.lm_weight.copy()
    w[facemesh.EYELID_SKIN] = 1.0
    assert fitted_blinks(dataclasses.replace(ict, lm_weight=w))["recall"] <= 0.5
