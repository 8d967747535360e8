"""Jobs of the fitting stage: a video's person model, its identity, each segment's fit, and the merged track."""

from __future__ import annotations

import logging

import numpy as np

from .. import h5io
from ..errors import InputError
from ..fit_files import (
    check_model,
    read_fit_identity,
    write_fit_identity,
    write_fit_segment,
)
from ..fit_types import FitSettings
from ..fitting import identity_frames, solve_identity, solve_segment
from ..landmark_sets import read_video_landmarks
from ..models.person import build_person_model, save_model
from ..segments import Segment
from ..tracks import merge_segment_files, write_track
from .model import load_video_model

log = logging.getLogger(__package__)


def fit_settings(fit_cfg: dict) -> FitSettings:
    """The fit's settings from the config section ``fit``."""
    return FitSettings.from_fit_section(fit_cfg)


def person_model(*, landmark_files, out, n_components: int, video: str):
    """The person-specific morphable model of ``video``, built from its landmarks."""
    seq = read_video_landmarks(landmark_files)
    try:
        model = build_person_model(seq["landmarks"], seq["valid"], n_components, name=f"person:{video}")
    except ValueError as e:
        raise InputError(landmark_files[0], f"cannot build a person model for {video}: {e}") from None
    save_model(out, model, {"video": video})
    log.info("%s: person model with %d expression components", video, model.n_exp)
    return model


def fit_identity(*, model_cfg: dict, model_file, landmark_files, out, fit_cfg: dict, video: str, threads: int = 1) -> None:
    """The identity ``p`` of a video, from a sample of its frames with a face."""
    model = load_video_model(model_cfg, model_file)
    seq = read_video_landmarks(landmark_files)
    frames = identity_frames(seq["valid"], fit_cfg["identity_frames"])
    if not len(frames):
        raise InputError(seq["attrs"]["video_path"], "no frame with a face: cannot estimate the identity")
    result = solve_identity(model, seq["landmarks"][frames], fit_settings(fit_cfg), threads=threads)
    a = seq["attrs"]
    write_fit_identity(out, result, frame_index=frames, model=model, video=video, width=a["width"], height=a["height"], fps=a["fps"])
    log.info("%s: identity from %d frames, mean residual %.2f px", video, len(frames), np.nanmean(result.residual))


def fit_segment(*, model_cfg: dict, model_file, identity_file, landmark_file, out, fit_cfg: dict, threads: int = 1):
    """Expressions and cameras of one segment, with the video's identity fixed."""
    model = load_video_model(model_cfg, model_file)
    identity, id_attrs, _ = read_fit_identity(identity_file)
    check_model(id_attrs, model, identity_file)
    arrays, a = h5io.read(landmark_file, h5io.LANDMARKS)
    result = solve_segment(model, arrays["landmarks"], arrays["valid"], fit_settings(fit_cfg), p=identity.p, threads=threads)
    seg = Segment.from_attrs(a)
    write_fit_segment(
        out, result, frame_index=arrays["frame_index"], segment=seg, model=model, video=a["video"], width=a["width"], height=a["height"], fps=a["fps"]
    )
    log.info(
        "%s segment %d: %d frames, %d iterations, median residual %.2f px",
        a["video"], seg.index, result.n_frames, result.iterations, np.nanmedian(result.residual),
    )
    return result


def track(*, fit_files, out) -> None:
    """The video's track: its segments' fits merged over their overlaps."""
    merged, attrs = merge_segment_files(list(fit_files))
    write_track(out, merged, attrs)
    log.info("%s: track of %d frames (%d with a face) from %d segments", attrs["video"], merged.n_frames, merged.valid.sum(), len(fit_files))
