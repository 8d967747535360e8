"""A video's landmarks as one sequence: joining the per-segment landmark files, and their summary."""

from __future__ import annotations

import logging

import numpy as np

from . import h5io
from .errors import InputError
from .files import write_json

log = logging.getLogger(__name__)


def read_video_landmarks(files) -> dict:
    """Concatenate per-segment landmark files into one per-frame sequence over the whole video.

    Overlapping frames appear in two segments; each frame is taken from the segment whose core owns it. Returns arrays frame_index, landmarks, valid,
    score, box and the attrs of the first file.
    """
    parts = []
    for f in files:
        arrays, attrs = h5io.read(f, h5io.LANDMARKS)
        parts.append((arrays, attrs))
    if not parts:
        raise ValueError("no landmark files")
    parts.sort(key=lambda p: p[1]["start"])
    n_frames = int(parts[0][1]["n_frames"])
    out = {
        "frame_index": np.arange(n_frames, dtype=np.int64),
        "landmarks": np.full((n_frames, 478, 3), np.nan, np.float32),
        "valid": np.zeros(n_frames, bool),
        "score": np.zeros(n_frames, np.float32),
        "box": np.full((n_frames, 4), np.nan, np.float32),
    }
    covered = np.zeros(n_frames, bool)
    for arrays, attrs in parts:
        idx = arrays["frame_index"]
        sel = (idx >= attrs["core_start"]) & (idx < attrs["core_stop"])
        for key in ("landmarks", "valid", "score", "box"):
            out[key][idx[sel]] = arrays[key][sel]
        covered[idx[sel]] = True
    if not covered.all():
        missing = np.flatnonzero(~covered)
        raise InputError(files[0], f"landmark segments leave frames {missing[:5].tolist()}... uncovered")
    return {**out, "attrs": parts[0][1]}


def summarize_landmarks(files, video_name: str, video_path: str, min_valid_fraction: float, min_faces: int = 1) -> dict:
    """Per-video landmark summary, the gate of every job that reads landmarks: a video with fewer than
    M = :func:`~deep_puppets.needs.faces_needed` frames with a face (``landmarks.min_valid_fraction`` of its
    frames, and at least ``min_faces``, what the model needs) fails with one line naming the video."""
    from .needs import faces_needed

    seq = read_video_landmarks(files)
    valid = seq["valid"]
    n = len(valid)
    frac = float(valid.mean())
    need = faces_needed(n, min_valid_fraction, min_faces)
    invalid = np.flatnonzero(~valid)
    summary = {
        "video": video_name,
        "video_path": video_path,
        "frames": n,
        "valid_frames": int(valid.sum()),
        "valid_fraction": frac,
        "faces_needed": need,
        "invalid_frames": invalid.tolist(),
        "segments": len(files),
        "mean_score": float(seq["score"][valid].mean()) if valid.any() else 0.0,
    }
    if valid.sum() < need:
        raise InputError(
            f"{video_name} ({video_path})",
            f"{valid.sum()} frames with a face; at least {need} needed (of its {n} frames: 'landmarks.min_valid_fraction' "
            f"{min_valid_fraction:g}, and at least {min_faces} for the model)",
        )
    if len(invalid):
        log.warning("%s: %d of %d frames without a face (flagged, bridged by the fit)", video_name, len(invalid), n)
    return summary


def write_summary(path, summary: dict) -> None:
    write_json(path, summary)
