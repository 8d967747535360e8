"""Job of the diagnostics stage: how well the track follows the detector, with and without temporal smoothing,
and (for a demo clip) how well it recovers the known head motion."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from .. import diagnostics as dg
from .. import h5io
from ..demo import DEMO_TRUTH
from ..errors import InputError
from ..files import write_json
from ..fit_files import read_fit_identity
from ..fitting import solve_segment
from ..ingest import read_probe
from ..landmark_basis import projected_landmarks
from ..landmark_sets import read_video_landmarks
from ..mp4_writer import write_mp4
from ..tracks import read_track
from ..video import iter_frames
from .fit import fit_settings
from .model import load_video_model

log = logging.getLogger(__package__)


def diagnostics(*, model_cfg: dict, model_file, track_file, identity_file, landmark_files, video_path, probe_json, outs: dict, fit_cfg: dict,
                window: int, truth_file=None) -> dict:
    """Landmark error and jitter of the fitted track, the camera with and without smoothing over the first
    ``window`` frames (refitted with λ_q = λ_c = 0), and an overlay video of the fitted face's outlines. For a demo
    clip (``truth_file``: its known motion, layout ``demo_truth``) the fitted head rotation scored against the
    true one (:func:`deep_puppets.diagnostics.rotation_vs_truth`), in the summary under ``truth`` and the figure."""
    model = load_video_model(model_cfg, model_file)
    track, attrs = read_track(track_file)
    seq = read_video_landmarks(landmark_files)
    det, valid = seq["landmarks"], seq["valid"]
    fitted = projected_landmarks(model, track)
    nme = dg.landmark_nme(fitted, det, valid)
    j_raw, j_fit = dg.jitter(det, valid), dg.jitter(fitted, valid)

    # the same frames fitted without temporal smoothing, for the comparison
    n = min(window, len(valid))
    identity, _, _ = read_fit_identity(identity_file)
    settings = replace(fit_settings(fit_cfg), lambda_q=0.0, lambda_c=0.0)
    raw = solve_segment(model, det[:n], valid[:n], settings, p=identity.p)
    raw_points = projected_landmarks(model, raw)
    j_unsmoothed = np.full(len(valid), np.nan)
    j_unsmoothed[:n] = dg.jitter(raw_points, valid[:n])
    fps, video = float(attrs["fps"]), attrs["video"]
    dg.camera_smoothing_figure(raw.camera, track.camera[:n], fps, outs["camera_png"], f"{video}: camera over the first {n} frames, without and with smoothing")
    summary = dg.summary(nme, j_raw, j_fit, j_unsmoothed, valid)
    summary["window_frames"] = n
    summary["jitter_ratio_unsmoothed"] = float(np.nanmean(j_unsmoothed[:n]) / np.nanmean(j_raw[:n]))
    curves = None
    if truth_file:
        truth, _ = h5io.read(truth_file, DEMO_TRUTH)
        try:
            scores = dg.rotation_vs_truth(track.camera, track.valid, truth["rotation"])
        except ValueError as e:
            raise InputError(truth_file, str(e)) from None
        curves = scores.pop("curves")
        summary["truth"] = {"file": str(truth_file), **scores}
        log.info("%s head rotation vs the known motion: RMS %s deg, correlation %s", video,
                 {k: round(v, 2) for k, v in scores["rms_deg"].items()}, {k: round(v, 3) for k, v in scores["correlation"].items()})
    dg.tracking_figure(nme, j_raw, j_fit, j_unsmoothed, fps, outs["tracking_png"],
                       f"{video}: fitted model vs detector (NME mean {100 * summary['nme_mean']:.2f}%, jitter ratio {summary['jitter_ratio']:.2f})",
                       truth=curves)
    info = read_probe(probe_json)
    # the fitted face's outlines over the 478 fitted landmark points (every model places them)
    write_mp4(outs["overlay_mp4"], dg.overlay_frames(iter_frames(video_path, 0, None, info), fitted[..., :2], det, valid, dg.outline_edges()), fps)
    write_json(outs["json"], summary)
    log.info("%s diagnostics: %s", video, summary)
    return summary
