"""One track per video: the segment fits joined without seams.

Segments overlap (see :mod:`deep_puppets.segments`) and are fitted with the same, fixed identity, so in the
overlap both fits describe the same frames and differ only by the end effects of each fit's temporal prior
(a few frames at each end). The merge cross-fades them across the overlap with weights that follow a
smoothstep (zero slope at both ends, so the blend adds no velocity jump): expression, translation, depth
offset and scale linearly, rotation geodesically (:func:`camera.blend_cameras`). Frames of a segment without
any face (NaN cameras) get no weight; frames that no segment covers with a camera hold the nearest one and
stay ``valid = False``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from . import h5io
from .camera import blend_cameras
from .fit_files import (
    FIT_ATTRS,
    check_fit_arrays,
    fit_arrays,
    fit_datasets,
    read_fit_segment,
    result_from_file,
)
from .fit_types import FitError, FitResult
from .segments import Segment

TRACK = h5io.Layout(
    name="track",
    version=1,
    doc=(
        "Morphable-model track of a whole video: the segment fits cross-faded across their overlaps "
        "(deep_puppets/tracks.py). One row per video frame; valid = false where no face was detected "
        "(values bridged, or held at the ends; NaN cameras only if the video has no face at all)."
    ),
    datasets=fit_datasets("0 … n_frames − 1"),
    attrs={
        **FIT_ATTRS,
        "n_frames": "frames in the video",
        "segments": "JSON list of the merged segments (index, start, stop, core_start, core_stop)",
    },
    check=check_fit_arrays,
)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """3x² − 2x³ on [0, 1], 0 below, 1 above."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def segment_weights(segments: Sequence[Segment]) -> list[np.ndarray]:
    """Blend weight of every frame of each segment (sorted by start): 1 outside overlaps, a smoothstep across
    each overlap with the neighbour, and a hard cut at the core boundary where segments do not overlap.
    Normalised so that the weights of a frame sum to 1 (which only matters when overlaps are longer than
    half a segment and three segments share frames)."""
    out = []
    for k, seg in enumerate(segments):
        f = np.arange(seg.start, seg.stop) + 0.5
        w = np.ones(seg.stop - seg.start)
        if k > 0:
            prev = segments[k - 1]
            w *= _ramp(f, seg.start, prev.stop, seg.core_start)
        if k + 1 < len(segments):
            nxt = segments[k + 1]
            w *= 1.0 - _ramp(f, nxt.start, seg.stop, nxt.core_start)
        out.append(w)
    total = np.zeros(max(s.stop for s in segments))
    for seg, w in zip(segments, out):
        total[seg.start : seg.stop] += w
    return [w / np.where(total[s.start : s.stop] > 0, total[s.start : s.stop], 1.0) for s, w in zip(segments, out)]


def _ramp(f: np.ndarray, lo: int, hi: int, cut: int) -> np.ndarray:
    """0 → 1 across [lo, hi) (the overlap); a step at ``cut`` when there is no overlap."""
    if hi > lo:
        return smoothstep((f - lo) / (hi - lo))
    return (f >= cut).astype(float)


def merge_segments(fits: Sequence[FitResult], segments: Sequence[Segment], n_frames: int | None = None) -> FitResult:
    """Join segment fits (``fits[k]`` covers ``segments[k].start … stop − 1``) into one track of ``n_frames``."""
    if len(fits) != len(segments) or not fits:
        raise ValueError(f"{len(fits)} fits for {len(segments)} segments")
    order = np.argsort([s.start for s in segments])
    fits, segments = [fits[i] for i in order], [segments[i] for i in order]
    n = n_frames if n_frames is not None else max(s.stop for s in segments)
    for fit, seg in zip(fits, segments):
        if fit.n_frames != seg.stop - seg.start:
            raise ValueError(f"segment {seg.index} has {seg.stop - seg.start} frames, its fit {fit.n_frames}")
    p = fits[0].p
    for fit, seg in zip(fits, segments):
        if fit.p.shape != p.shape or not np.allclose(fit.p, p, rtol=0, atol=1e-9):
            raise FitError(f"segment {seg.index} was fitted with another identity: fix p per video before fitting segments")
        if fit.settings != fits[0].settings:
            raise FitError(f"segment {seg.index} was fitted with other settings than segment {segments[0].index}")

    total = np.zeros(n)
    q = np.zeros((n, fits[0].q.shape[1]))
    camera = np.full((n, 7), np.nan)
    valid_w = np.zeros(n)
    res_sum, res_w = np.zeros(n), np.zeros(n)
    for fit, seg, w in zip(fits, segments, segment_weights(segments)):
        frames = np.arange(seg.start, seg.stop)
        w = np.where(np.isfinite(fit.camera).all(axis=1), w, 0.0)
        use = w > 0
        frames, w = frames[use], w[use]
        # running weighted mean: the new segment's share of everything merged so far at these frames
        share = w / (total[frames] + w)
        first = total[frames] == 0
        cam_k, q_k = fit.camera[use], fit.q[use]
        blended = blend_cameras(np.where(first[:, None], cam_k, camera[frames]), cam_k, share)
        camera[frames] = np.where(first[:, None], cam_k, blended)
        q[frames] += share[:, None] * (q_k - q[frames])
        total[frames] += w
        valid_w[frames] += w * fit.valid[use]
        r = fit.residual[use]
        ok = np.isfinite(r)
        res_sum[frames[ok]] += w[ok] * r[ok]
        res_w[frames[ok]] += w[ok]
    covered = total > 0
    valid = covered & (valid_w >= 0.5 * total)
    residual = np.where(res_w > 0, res_sum / np.maximum(res_w, 1e-300), np.nan)
    residual[~valid] = np.nan
    if covered.any() and not covered.all():  # hold the nearest covered frame
        idx = np.flatnonzero(covered)
        nearest = idx[np.clip(np.searchsorted(idx, np.arange(n)), 0, len(idx) - 1)]
        before = idx[np.clip(np.searchsorted(idx, np.arange(n)) - 1, 0, len(idx) - 1)]
        nearest = np.where(np.abs(before - np.arange(n)) < np.abs(nearest - np.arange(n)), before, nearest)
        camera[~covered], q[~covered] = camera[nearest[~covered]], q[nearest[~covered]]
    return FitResult(
        p=p.copy(),
        q=q,
        camera=camera,
        valid=valid,
        residual=residual,
        iterations=max(f.iterations for f in fits),
        energy=float(np.nansum([f.energy for f in fits])),
        converged=all(f.converged for f in fits),
        settings=fits[0].settings,
    )


def merge_segment_files(paths: Sequence, n_frames: int | None = None) -> tuple[FitResult, dict]:
    """Read segment fit files of one video and merge them. Returns (track, attributes for :func:`write_track`).
    Checks that they share video, model and settings."""
    fits, segments, first = [], [], None
    for path in paths:
        fit, attrs, frame_index = read_fit_segment(path)
        seg = Segment.from_attrs(attrs)
        if not np.array_equal(frame_index, np.arange(seg.start, seg.stop)):
            raise FitError(f"{path}: frame_index does not match the segment range {seg.start}…{seg.stop}")
        if first is None:
            first = attrs
        for key in ("video", "model_hash", "width", "height"):
            if attrs[key] != first[key]:
                raise FitError(f"{path}: {key} differs from the other segments of the video")
        if fits and fit.settings != fits[0].settings:  # as values: a key added since, at its default, is the same setting
            raise FitError(f"{path}: fit_settings differs from the other segments of the video")
        fits.append(fit)
        segments.append(seg)
    track = merge_segments(fits, segments, n_frames)
    attrs = {k: first[k] for k in FIT_ATTRS}
    attrs.update(n_frames=track.n_frames, segments=json.dumps([s.to_dict() for s in sorted(segments, key=lambda s: s.start)]))
    return track, attrs


def write_track(path, track: FitResult, attrs: dict):
    """Write a merged track; ``attrs`` as returned by :func:`merge_segment_files` (or the same keys)."""
    return h5io.write(path, TRACK, fit_arrays(track, np.arange(track.n_frames)), {k: attrs[k] for k in TRACK.attrs})


def read_track(path) -> tuple[FitResult, dict]:
    """(track, attributes) of a track file."""
    arrays, attrs = h5io.read(path, TRACK)
    return result_from_file(arrays, attrs), attrs
