"""Monocular face fitting: camera, block solver, normal equations, accuracy on synthetic ground truth,
temporal smoothing, faceless frames, robustness, files."""

import json
import tracemalloc

import numpy as np
import pytest

from deep_puppets import blocksolve as B
from deep_puppets import fit_files
from deep_puppets import fitting as F
from deep_puppets.camera import (
    blend_rotations,
    left_jacobian,
    project,
    rotation_log,
    rotation_matrix,
)
from deep_puppets.errors import ConfigError
from deep_puppets.fit_types import FitError, FitSettings
from deep_puppets.fitting import identity_frames, solve_identity, solve_segment
from deep_puppets.landmark_basis import LandmarkBasis, projected_landmarks
from deep_puppets.models.base import MorphableModel
from deep_puppets.segments import Segment

from .synthetic_faces import IOD_CM, synthetic_model, synthetic_sequence

# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def model():
    return synthetic_model(n_vertices=600, k_id=8, k_exp=12, seed=0)


def rotation_errors_deg(cam_a, cam_b):
    Ra, Rb = rotation_matrix(cam_a[:, :3]), rotation_matrix(cam_b[:, :3])
    return np.degrees(np.linalg.norm(rotation_log(Ra @ np.swapaxes(Rb, 1, 2)), axis=1))


def vertex_error(model, res, seq, vertices=slice(None)):
    """Mean distance (model units) between fitted and true meshes, per frame → mean."""
    return np.linalg.norm(model.shape(res.p, res.q)[:, vertices] - model.shape(seq.p, seq.q)[:, vertices], axis=2).mean()


def similarity_aligned_error(V, Vg):
    """Mean vertex error after aligning each fitted mesh to the true one by a similarity transform."""
    errs = []
    for a, b in zip(V, Vg):
        A, B = a - a.mean(0), b - b.mean(0)
        U, S, Wt = np.linalg.svd(A.T @ B)
        d = np.sign(np.linalg.det(U @ Wt))
        S[-1] *= d
        U[:, -1] *= d
        errs.append(np.linalg.norm(S.sum() / np.sum(A * A) * A @ (U @ Wt) - B, axis=1).mean())
    return float(np.mean(errs))


# --------------------------------------------------------------------------------------------- settings


def test_settings_from_config():
    assert FitSettings.from_config(None) == FitSettings()
    s = FitSettings.from_config({"lambda_q": 3, "robust": "geman_mcclure"})
    assert s.lambda_q == 3 and s.robust == "geman_mcclure" and s.lambda_c == FitSettings().lambda_c
    assert FitSettings(**json.loads(s.to_json())) == s
    with pytest.raises(ConfigError, match="lambda_x"):
        FitSettings.from_config({"lambda_x": 1})
    with pytest.raises(ConfigError, match="sigma_px"):
        FitSettings.from_config({"sigma_px": 0})
    with pytest.raises(ConfigError, match="robust"):
        FitSettings.from_config({"robust": "cauchy"})


# ----------------------------------------------------------------------------------------------- camera


def test_rotation_helpers():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(200, 3))
    r *= (rng.uniform(0, np.pi - 1e-3, 200) / np.linalg.norm(r, axis=1))[:, None]
    r = np.vstack([r, [[0, 0, 0], [1e-10, 0, 0], [0, np.pi, 0]]])
    R = rotation_matrix(r)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(R), 1)
    assert np.allclose(rotation_matrix(rotation_log(R)), R, atol=1e-10)
    assert np.allclose(rotation_log(R[:-1]), r[:-1], atol=1e-10)
    # left Jacobian: exp(r + ε) ≈ exp(J ε) exp(r)
    J, eps = left_jacobian(r[:20]), 1e-6
    for i in range(3):
        d = np.zeros(3)
        d[i] = eps
        dR = (rotation_matrix(r[:20] + d) - rotation_matrix(r[:20] - d)) / (2 * eps) @ np.swapaxes(R[:20], 1, 2)
        assert np.allclose(np.stack([dR[:, 2, 1], dR[:, 0, 2], dR[:, 1, 0]], 1), J[:, :, i], atol=1e-7)
    # geodesic blend: halfway between two rotations about the same axis is the half angle
    assert np.allclose(blend_rotations(np.array([0, 0, 0.2]), np.array([0, 0, 1.0]), np.array(0.5)), [0, 0, 0.6])
    # across the ±π wrap the blend stays near π instead of passing through the identity
    mid = blend_rotations(np.array([np.pi - 0.1, 0, 0]), np.array([-(np.pi - 0.1), 0, 0]), np.array(0.5))
    assert np.isclose(np.linalg.norm(mid), np.pi, atol=1e-6)


def test_projection_formula():
    # a frontal face (R = I): model y up / z to the viewer -> image y down / depth growing away
    cam = np.array([0, 0, 0, 100.0, 50.0, 7.0, 2.0])
    uvd = project(np.array([[1.0, 2.0, 3.0]]), cam)
    assert np.allclose(uvd, [[100 + 2, 50 - 4, 7 - 6]])
    # a 90° yaw brings the model's +x towards the viewer (smaller depth)
    cam[:3] = [0, np.pi / 2, 0]
    assert np.allclose(project(np.array([[1.0, 0, 0]]), cam), [[100, 50, 7 + 2]])


# ----------------------------------------------------------------------------------------------- solver


def random_block_system(T, n, rng, m=None):
    """SPD block-pentadiagonal system: random dense diagonal blocks + smoothness-like diagonal couplings."""
    X = rng.normal(size=(T, n, n))
    A = X @ np.swapaxes(X, 1, 2) / n + 0.1 * np.eye(n)
    S = rng.uniform(0.5, 50, n)
    d0, d1, d2 = B.second_difference_coefficients(T)
    A += (d0[:, None] * S)[:, :, None] * np.eye(n)
    g = rng.normal(size=(T, n) if m is None else (T, n, m))
    return A, d1[:, None] * S, d2[:, None] * S, g


def dense_matrix(A, b, c):
    T, n, _ = A.shape
    M = np.zeros((T * n, T * n))
    for t in range(T):
        M[t * n : (t + 1) * n, t * n : (t + 1) * n] = A[t]
        for k, off in ((1, b), (2, c)):
            if t + k < T:
                M[t * n : (t + 1) * n, (t + k) * n : (t + k + 1) * n] = np.diag(off[t])
                M[(t + k) * n : (t + k + 1) * n, t * n : (t + 1) * n] = np.diag(off[t])
    return M


@pytest.mark.parametrize("T", [1, 2, 3, 11, 2 * B.CHECKPOINT + 7])
@pytest.mark.parametrize("store_all", [True, False])
def test_block_solver_equals_dense_solve(T, store_all, monkeypatch):
    monkeypatch.setattr(B, "FACTOR_MEMORY", 1e12 if store_all else 0)  # every sub-diagonal block, or checkpoints
    rng = np.random.default_rng(T)
    A, b, c, g = random_block_system(T, 6, rng)
    x = B.solve_block_pentadiagonal(A, b, c, g)
    expected = np.linalg.solve(dense_matrix(A, b, c), g.ravel()).reshape(T, 6)
    assert np.abs(x - expected).max() <= 1e-8 * np.abs(expected).max()
    # several right-hand sides at once
    A, b, c, G = random_block_system(T, 6, rng, m=3)
    X = B.solve_block_pentadiagonal(A, b, c, G)
    assert np.allclose(X, np.linalg.solve(dense_matrix(A, b, c), G.reshape(T * 6, 3)).reshape(T, 6, 3), rtol=0, atol=1e-9)


def test_bordered_solver_equals_dense_solve():
    rng = np.random.default_rng(1)
    T, n, k = 9, 5, 4
    A, b, c, g = random_block_system(T, n, rng)
    E = rng.normal(size=(T, n, k)) * 0.3
    H_pp = np.eye(k) * 20 + 0.1
    g_p = rng.normal(size=k)
    x, y = B.solve_bordered(B.pack_lower(A), b, c, g, E, H_pp, g_p)
    M = np.block([[dense_matrix(A, b, c), E.reshape(T * n, k)], [E.reshape(T * n, k).T, H_pp]])
    expected = np.linalg.solve(M, np.concatenate([g.ravel(), g_p]))
    assert np.abs(np.concatenate([x.ravel(), y]) - expected).max() <= 1e-8 * np.abs(expected).max()


@pytest.mark.parametrize("store_all", [True, False])
def test_block_solver_memory_is_linear_in_frames(monkeypatch, store_all):
    """No allocation of the size of a matrix over all frames: peak memory grows like T n², not (T n)²."""
    monkeypatch.setattr(B, "FACTOR_MEMORY", 1e12 if store_all else 0)
    rng = np.random.default_rng(2)
    n, peaks = 8, {}
    for T in (250, 1000):
        A, b, c, g = random_block_system(T, n, rng)
        Ap = B.pack_lower(A)
        del A
        tracemalloc.start()
        B.solve_packed(Ap, b, c, g, overwrite=True)
        peaks[T] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # with overwrite the factor's diagonal blocks live in Ap's memory; besides them only vectors and the
        # sub-diagonal blocks (all, or every CHECKPOINT-th) are allocated: far from the (T·n)² of a dense matrix
        factor = T * n * n * 8 if store_all else 0
        assert peaks[T] < factor + 0.75 * T * n * n * 8 + 300_000 < (T * n) ** 2 * 8 / 50
    assert peaks[1000] < 4.5 * peaks[250]


def test_second_difference_coefficients_are_DtD():
    for T in (1, 2, 3, 4, 7):
        D = np.zeros((max(T - 2, 0), T))
        for i in range(T - 2):
            D[i, i : i + 3] = (1, -2, 1)
        d0, d1, d2 = B.second_difference_coefficients(T)
        DtD = D.T @ D
        assert np.allclose(np.diag(DtD), d0) and np.allclose(np.diag(DtD, 1), d1) and np.allclose(np.diag(DtD, 2), d2)


# --------------------------------------------------------------------------------- normal equations


def perturbed_problem(model, seq, p_fixed, settings, seed=0):
    basis = LandmarkBasis.from_model(model)
    prob = F._Problem(basis, seq.landmarks, seq.valid, settings, p_fixed)
    par = F._initial_params(prob)
    rng = np.random.default_rng(seed)
    par.q += 0.3 * rng.normal(size=par.q.shape)
    par.cam[:, :3] += 0.05 * rng.normal(size=(len(par.cam), 3))
    if p_fixed is None:
        par.p = par.p + 0.3 * rng.normal(size=par.p.shape)
    return prob, par


@pytest.mark.parametrize("free_p", [False, True])
def test_data_normal_equations_match_numerical_jacobian(model, monkeypatch, free_p):
    """The per-frame Gauss-Newton matrices equal Σ w Jᵀ D J with J from finite differences, with robust
    weights on most landmarks and some landmarks missing."""
    monkeypatch.setattr(F, "EXACT_IRLS_FRACTION", 1.0)  # exact IRLS Hessian even with many outliers
    seq = synthetic_sequence(model, 5, seed=4)
    seq.landmarks[2, 10:20] = np.nan
    settings = FitSettings(robust="huber", robust_px=2.0)
    prob, par = perturbed_problem(model, seq, None if free_p else seq.p, settings)
    frames = np.arange(5)
    H, g = prob.data_normal_equations(par, frames)
    _, _, r, mask = prob.residuals(par, frames)
    w = prob.robust(r, mask)[1]
    assert (w < prob.basis.weight).mean() > 0.5
    n, Kp = prob.Klin + 7, prob.K_id if free_p else 0
    J, eps = np.zeros((5, 3, prob.L, n)), 1e-6
    for i in range(n):
        dx, dp = np.zeros((5, prob.K + 7)), np.zeros(Kp)
        if i < Kp:
            dp[i] = eps
        else:
            dx[:, i - Kp] = eps
        J[..., i] = (prob.residuals(par.step(dx, dp), frames)[2] - prob.residuals(par.step(-dx, -dp), frames)[2]) / (2 * eps)
    Hn = np.einsum("tl,tali,a,talj->tij", w, J, prob.D, J) / settings.sigma_px**2
    gn = np.einsum("tl,tali,a,tal->ti", w, J, prob.D, r) / settings.sigma_px**2
    assert np.abs(Hn - H).max() < 1e-6 * np.abs(H).max()
    assert np.abs(gn - g).max() < 1e-6 * np.abs(g).max()


def test_gradient_of_the_whole_energy(model):
    """The system's right-hand side is half the gradient of the full energy (data, priors, smoothing,
    faceless-frame hold), so Gauss-Newton minimises exactly the energy documented."""
    seq = synthetic_sequence(model, 10, seed=5)
    seq.valid[4] = False
    prob, par = perturbed_problem(model, seq, None, FitSettings(robust_px=3.0))
    reg = F._regularisation(prob, par)
    system = F._normal_system(prob, par, reg)
    n, eps = system.g.shape[1], 1e-6
    zero_p = np.zeros(len(par.p))
    for t in (0, 4, 9):
        for i in range(n):
            d = np.zeros((10, n))
            d[t, i] = eps
            num = (prob.energy(par.step(d, zero_p), reg) - prob.energy(par.step(-d, zero_p), reg)) / (4 * eps)
            assert abs(num - system.g[t, i]) <= 1e-5 * max(1.0, abs(num))
    for i in range(len(par.p)):
        dp = np.zeros(len(par.p))
        dp[i] = eps
        z = np.zeros((10, n))
        num = (prob.energy(par.step(z, dp), reg) - prob.energy(par.step(z, -dp), reg)) / (4 * eps)
        assert abs(num - system.g_p[i]) <= 1e-5 * max(1.0, abs(num))


# ----------------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("free_p", [True, False])
def test_recovers_synthetic_ground_truth(model, free_p):
    seq = synthetic_sequence(model, 120, noise_px=2.0, seed=1)
    res = solve_segment(model, seq.landmarks, seq.valid, p=None if free_p else seq.p)
    assert res.converged and res.valid.all()
    assert vertex_error(model, res, seq) <= 0.02 * IOD_CM
    rot = rotation_errors_deg(res.camera, seq.camera)
    assert rot.mean() <= 1.0 and rot.max() <= 2.0
    # residuals are the noise: mean of a 2D Gaussian's radius with σ = 2 px is 2.5 px
    assert 2.2 < np.nanmean(res.residual) < 2.8


def test_recovers_ict_ground_truth(ict_model_path):
    from scipy.spatial import cKDTree

    from deep_puppets.models.ict import load_ict

    ict = load_ict(ict_model_path)
    seq = synthetic_sequence(ict, 100, noise_px=2.0, seed=3)
    # the face the landmarks cover: vertices within 1 cm of one (ears, neck and skull are not observed)
    face = cKDTree(ict.landmark_points(ict.mean)).query(ict.mean)[0] < 1.0
    fixed = solve_segment(ict, seq.landmarks, seq.valid, p=seq.p)
    assert vertex_error(ict, fixed, seq) <= 0.02 * IOD_CM  # identity given: the whole mesh
    assert rotation_errors_deg(fixed.camera, seq.camera).mean() <= 1.0
    # identity free: under weak perspective the face's overall size trades with the camera scale, so the
    # shape is compared after a similarity alignment
    free = solve_segment(ict, seq.landmarks, seq.valid)
    aligned = similarity_aligned_error(ict.shape(free.p, free.q)[:, face], ict.shape(seq.p, seq.q)[:, face])
    assert aligned <= 0.02 * IOD_CM
    assert rotation_errors_deg(free.camera, seq.camera).mean() <= 1.0


def test_identity_step_then_fixed_identity(model):
    """The workflow's path: identity from a sample of frames (not consecutive), then segments with it."""
    seq = synthetic_sequence(model, 300, noise_px=2.0, seed=6)
    frames = identity_frames(seq.valid, 40)
    assert len(frames) == 40 and np.all(np.diff(frames) > 0)
    ident = solve_identity(model, seq.landmarks[frames])
    assert ident.settings.lambda_q == 0 and ident.settings.lambda_c == 0
    assert np.linalg.norm(model.shape(ident.p) - model.shape(seq.p), axis=1).mean() <= 0.02 * IOD_CM
    res = solve_segment(model, seq.landmarks[:100], seq.valid[:100], p=ident.p)
    assert np.array_equal(res.p, ident.p)
    assert np.linalg.norm(model.shape(res.p, res.q) - model.shape(seq.p, seq.q[:100]), axis=2).mean() <= 0.02 * IOD_CM


# ------------------------------------------------------------------------------------- smoothing


def second_difference_rms(x):
    return np.sqrt(np.mean((x[:-2] - 2 * x[1:-1] + x[2:]) ** 2))


def test_smoothing_lowers_jitter_and_error(model):
    """On noisy landmarks the temporal prior lowers both the second differences of q and c and the error to
    the ground truth, compared with fitting every frame on its own (λ = 0)."""
    seq = synthetic_sequence(model, 150, noise_px=4.0, seed=7, period=40)
    raw = solve_segment(model, seq.landmarks, seq.valid, FitSettings(lambda_q=0, lambda_c=0), p=seq.p)
    smooth = solve_segment(model, seq.landmarks, seq.valid, FitSettings(), p=seq.p)
    for part in (slice(None), slice(0, 3), slice(3, 6), slice(6, 7)):  # all, rotation, translation, scale
        assert second_difference_rms(smooth.camera[:, part]) < 0.5 * second_difference_rms(raw.camera[:, part])
    assert second_difference_rms(smooth.q) < 0.5 * second_difference_rms(raw.q)
    assert vertex_error(model, smooth, seq) < 0.8 * vertex_error(model, raw, seq)
    assert rotation_errors_deg(smooth.camera, seq.camera).mean() < 0.8 * rotation_errors_deg(raw.camera, seq.camera).mean()
    truth = project(model.landmark_points(model.shape(seq.p, seq.q)), seq.camera)[..., :2]
    err = {k: np.linalg.norm(projected_landmarks(model, r)[..., :2] - truth, axis=2).mean() for k, r in (("raw", raw), ("smooth", smooth))}
    assert err["smooth"] < 0.8 * err["raw"]


# ------------------------------------------------------------------------------- faceless frames


def test_faceless_frames_are_bridged_and_flagged(model):
    seq = synthetic_sequence(model, 100, noise_px=2.0, seed=8)
    gap = slice(50, 56)
    seq.valid[gap] = False
    seq.landmarks[gap] = np.nan
    res = solve_segment(model, seq.landmarks, seq.valid, p=seq.p)
    assert not res.valid[gap].any() and res.valid[:50].all() and res.valid[56:].all()
    assert np.isnan(res.residual[gap]).all() and np.isfinite(res.residual[res.valid]).all()
    truth = project(model.landmark_points(model.shape(seq.p, seq.q)), seq.camera)[..., :2]
    err = np.linalg.norm(projected_landmarks(model, res)[..., :2] - truth, axis=2).mean(axis=1)
    assert err[gap].max() < 1.0  # pixels, on a ~200 px face, bridged by the prior alone
    assert rotation_errors_deg(res.camera[gap], seq.camera[gap]).max() < 2.0


def test_faceless_frames_at_the_ends_hold_still(model):
    seq = synthetic_sequence(model, 60, seed=9)
    seq.valid[:10] = seq.valid[-10:] = False
    seq.landmarks[~seq.valid] = np.nan
    res = solve_segment(model, seq.landmarks, seq.valid, p=seq.p)
    assert np.isfinite(res.camera).all() and not res.valid[:10].any() and not res.valid[-10:].any()
    # no extrapolation into the unknown: the nearest fitted frame is held
    assert np.all(res.camera[:10] == res.camera[10]) and np.all(res.q[-10:] == res.q[-11])


def test_segment_without_a_face(model):
    lm = np.full((20, 478, 3), np.nan, np.float32)
    res = solve_segment(model, lm, np.zeros(20, bool))
    assert not res.valid.any() and np.isnan(res.camera).all() and res.q.shape == (20, model.n_exp)


def test_missing_landmarks_and_gross_outliers(model):
    """Landmarks missing in valid frames are ignored; a few landmarks thrown far off barely move the robust
    fit, while plain least squares follows them."""
    seq = synthetic_sequence(model, 60, noise_px=1.0, seed=10)
    rng = np.random.default_rng(0)
    lm = seq.landmarks.copy()
    lm[:, rng.choice(478, 20, replace=False)] = np.nan  # 20 landmarks never detected
    bad = rng.random((60, 478)) < 0.04
    lm[bad, :2] += rng.normal(scale=40, size=(bad.sum(), 2)).astype(np.float32)  # 4% thrown ~40 px off
    robust = solve_segment(model, lm, seq.valid, FitSettings(robust="huber", robust_px=3.0), p=seq.p)
    plain = solve_segment(model, lm, seq.valid, FitSettings(robust="none"), p=seq.p)
    assert vertex_error(model, robust, seq) <= 0.01 * IOD_CM
    assert vertex_error(model, robust, seq) < 0.5 * vertex_error(model, plain, seq)
    gm = solve_segment(model, lm, seq.valid, FitSettings(robust="geman_mcclure", robust_px=3.0), p=seq.p)
    assert vertex_error(model, gm, seq) <= 0.01 * IOD_CM


def test_detector_landmarks_the_model_does_not_place(model):
    """Landmarks with model weight 0 are left out of the fit (and may be anything)."""
    w = np.ones(478)
    w[:100] = 0
    m2 = MorphableModel(**{**model.__dict__, "lm_weight": w})
    seq = synthetic_sequence(model, 40, seed=11)
    seq.landmarks[:, :100] = 1e6
    res = solve_segment(m2, seq.landmarks, seq.valid, p=seq.p)
    assert vertex_error(model, res, seq) <= 0.02 * IOD_CM


# ------------------------------------------------------------------------------------------- files


def test_fit_files_roundtrip(model, tmp_path):
    seq = synthetic_sequence(model, 30, seed=12)
    seq.valid[5] = False
    seq.landmarks[5] = np.nan
    res = solve_segment(model, seq.landmarks, seq.valid, p=seq.p)
    seg = Segment(2, 100, 130, 110, 125)
    meta = dict(model=model, video="alice", width=640, height=480, fps=25.0)
    path = fit_files.write_fit_segment(tmp_path / "seg2.h5", res, frame_index=np.arange(100, 130), segment=seg, **meta)
    back, attrs, frame_index = fit_files.read_fit_segment(path)
    assert np.array_equal(frame_index, np.arange(100, 130))
    for name in ("p", "q", "camera", "valid"):
        assert np.array_equal(getattr(back, name), getattr(res, name))
    assert np.allclose(back.residual, res.residual, equal_nan=True, rtol=1e-6)
    assert back.settings == res.settings and back.iterations == res.iterations and back.converged == res.converged
    assert attrs["core_start"] == 110 and attrs["video"] == "alice" and attrs["model_hash"] == model.content_hash()
    assert json.loads(attrs["fit_settings"]) == json.loads(FitSettings().to_json())
    fit_files.check_model(attrs, model)
    other = synthetic_model(n_vertices=600, k_id=8, k_exp=12, seed=1)
    with pytest.raises(FitError, match="fitted with model"):
        fit_files.check_model(attrs, other)
    ident = solve_identity(model, seq.landmarks[[0, 10, 20]])
    path = fit_files.write_fit_identity(tmp_path / "identity.h5", ident, frame_index=[0, 10, 20], **meta)
    back, attrs, frame_index = fit_files.read_fit_identity(path)
    assert np.array_equal(back.p, ident.p) and list(frame_index) == [0, 10, 20]


def test_activation_bounds_keep_blendshape_weights_in_their_range():
    """An ICT-like model (named ARKit-style activations and two signed gaze components): landmarks drawn from
    activations in [0, 1]. Unbounded, the noisy fit drives some below 0 (in real clips they then absorb the identity's
    errors); bounded (``activation_bounds: 100``), every activation stays within [0, 1] to 0.02, the signed gaze is
    free, and the coefficients are nearer the truth."""
    from dataclasses import replace

    from deep_puppets.models.ict import GAZE_NAMES, activation_components

    base = synthetic_model(k_exp=12, seed=4)
    names = tuple(f"shape{k}" for k in range(10)) + GAZE_NAMES
    model = replace(base, exp_names=names, extra={**base.extra, "provider": "ict"})
    act = activation_components(model)
    assert act.sum() == 10 and not act[10:].any()
    seq = synthetic_sequence(model, 80, noise_px=6.0, seed=6)
    assert seq.q[:, act].min() >= 0 and seq.q[:, act].max() <= 1 and seq.q[:, ~act].min() < -0.05
    free = solve_segment(model, seq.landmarks, seq.valid, FitSettings(), p=seq.p)  # the default: unbounded
    bounded = solve_segment(model, seq.landmarks, seq.valid, FitSettings(activation_bounds=100.0), p=seq.p)
    assert free.q[:, act].min() < -0.05
    assert bounded.q[:, act].min() > -0.02 and bounded.q[:, act].max() < 1.02
    assert bounded.q[:, ~act].min() < -0.05  # gaze is signed: not bounded
    err = lambda f: np.sqrt(np.mean((f.q[:, act] - seq.q[:, act]) ** 2))  # noqa: E731
    assert err(bounded) < err(free)
    # a PCA (person) model has no activations: the setting changes nothing
    plain = synthetic_model(k_exp=12, seed=4)
    assert not activation_components(plain).any()
    a = solve_segment(plain, seq.landmarks, seq.valid, FitSettings(), p=seq.p)
    b = solve_segment(plain, seq.landmarks, seq.valid, FitSettings(activation_bounds=100.0), p=seq.p)
    assert np.array_equal(a.q, b.q)
