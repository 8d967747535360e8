"""The fit files: the ``fit_segment`` and ``fit_identity`` HDF5 layouts (and the datasets, attributes and checks
the ``track`` layout of :mod:`deep_puppets.tracks` shares with them), their writers and readers, and the check
that a file was fitted with a given model.
"""

from __future__ import annotations

import json

import numpy as np

from . import h5io
from .fit_types import FitError, FitResult, FitSettings
from .models.base import MorphableModel

_CAMERA_DOC = (
    "rx, ry, rz (axis-angle rotation R, radians), tx, ty (pixels), tz (depth offset, pixels), scale (pixels per "
    "model unit): image point (u, v, d) = scale·F·R·X + (tx, ty, tz), F = diag(1, −1, −1), scaled orthographic "
    "(deep_puppets/camera.py)"
)


def fit_datasets(frames_doc: str) -> dict:
    """The datasets of every fit layout (segment, identity, track); ``frames_doc`` says what ``frame_index`` holds."""
    return {
        "frame_index": h5io.Dataset("int64", ("T",), f"absolute frame index in the video ({frames_doc})"),
        "p": h5io.Dataset("float64", ("K_id",), "identity coefficients (prior standard deviations: the model's id_std)"),
        "q": h5io.Dataset("float64", ("T", "K_exp"), "expression coefficients per frame"),
        "camera": h5io.Dataset("float64", ("T", 7), _CAMERA_DOC),
        "valid": h5io.Dataset("bool", ("T",), "the detector found a face; other frames are bridged by the smoothness prior"),
        "residual": h5io.Dataset("float32", ("T",), "mean 2D distance of the projected model landmarks to the detections (pixels); NaN where not valid"),
    }


COEFFICIENT_LIMIT = 1e6  # |p|, |q| beyond this are not a fit but damage (fits keep them within a few std)


def camera_problem(camera, valid, width: float, height: float, name: str = "camera") -> str | None:
    """A problem with per-frame cameras (T, 7): a row is all finite or all NaN (a segment without a face),
    valid frames have finite ones, scale > 0, the translation within 100 frame sizes, |rotation| < 100 rad."""
    camera, valid = np.asarray(camera, float), np.asarray(valid, bool)
    nan = np.isnan(camera)
    if np.isinf(camera).any() or (nan.any(1) != nan.all(1)).any():
        return h5io.nonfinite(name, camera[~nan.all(1)])
    side = 100.0 * max(float(width), float(height))
    return h5io.first_problem(
        h5io.nonfinite(name, camera, valid),
        h5io.out_of_range(name, camera[:, 6], 1e-12, np.inf, what="scales (column 6)"),
        h5io.out_of_range(name, camera[:, 3:6], -side, side, what="translations (columns 3-5)"),
        h5io.out_of_range(name, camera[:, :3], -100.0, 100.0, what="rotations (columns 0-2)"),
    )


def check_fit_arrays(arrays: dict, attrs: dict) -> str | None:
    """Layout check of the fit files (segment, identity, track): finite p and q, plausible cameras."""
    lim = COEFFICIENT_LIMIT
    return h5io.first_problem(
        h5io.nonfinite("p", arrays["p"]),
        h5io.out_of_range("p", arrays["p"], -lim, lim),
        h5io.nonfinite("q", arrays["q"]),
        h5io.out_of_range("q", arrays["q"], -lim, lim),
        camera_problem(arrays["camera"], arrays["valid"], attrs["width"], attrs["height"]),
        h5io.out_of_range("residual", arrays["residual"], 0.0, np.inf),
        h5io.out_of_range("frame_index", arrays["frame_index"], 0, np.inf),
    )


FIT_ATTRS = {  # the attributes every fit layout (segment, identity, track) has
    "video": "video name (config key)",
    "model": "morphable model name",
    "model_hash": "MorphableModel.content_hash() of the model fitted",
    "fit_settings": "JSON of the FitSettings that produced the fit",
    "width": "frame width in pixels",
    "height": "frame height in pixels",
    "fps": "frames per second",
}

FIT_SEGMENT = h5io.Layout(
    name="fit_segment",
    version=1,
    doc=(
        "Morphable-model fit of one video segment, overlap included: identity p (fixed per video), and per "
        "frame expression q and scaled-orthographic camera. Frames without a face keep valid = false with "
        "values bridged by the temporal prior (NaN cameras when the segment has no face at all)."
    ),
    datasets=fit_datasets("segment frames, overlap included"),
    attrs={
        **FIT_ATTRS,
        "segment": "segment index",
        "start": "first frame of the segment (overlap included)",
        "stop": "one past the last frame",
        "core_start": "first frame this segment owns",
        "core_stop": "one past the last frame it owns",
        "iterations": "Levenberg-Marquardt iterations run",
        "energy": "final energy (units of sigma_px²)",
        "converged": "the energy stopped decreasing by more than the tolerance",
    },
    check=check_fit_arrays,
)

FIT_IDENTITY = h5io.Layout(
    name="fit_identity",
    version=1,
    doc="Identity of the person in a video, estimated from a sample of its frames; every segment is fitted with it.",
    datasets=fit_datasets("the sampled frames"),
    attrs={**FIT_ATTRS, "iterations": "Levenberg-Marquardt iterations run", "energy": "final energy (units of sigma_px²)"},
    check=check_fit_arrays,
)


def fit_arrays(result: FitResult, frame_index) -> dict:
    """The datasets of a fit layout for ``result`` with its absolute frame indices."""
    frame_index = np.asarray(frame_index, dtype=np.int64)
    if frame_index.shape != (result.n_frames,):
        raise ValueError(f"frame_index has shape {frame_index.shape}, the fit has {result.n_frames} frames")
    return dict(frame_index=frame_index, p=result.p, q=result.q, camera=result.camera, valid=result.valid, residual=result.residual)


def _model_attrs(model: MorphableModel, video: str, width: int, height: int, fps: float, settings: FitSettings) -> dict:
    return dict(
        video=video, model=model.name, model_hash=model.content_hash(), fit_settings=settings.to_json(), width=int(width), height=int(height), fps=float(fps)
    )


def write_fit_segment(path, result: FitResult, *, frame_index, segment, model: MorphableModel, video: str, width: int, height: int, fps: float):
    """Write a segment fit (``segment``: a :class:`deep_puppets.segments.Segment`)."""
    attrs = _model_attrs(model, video, width, height, fps, result.settings)
    attrs.update(
        segment=segment.index,
        start=segment.start,
        stop=segment.stop,
        core_start=segment.core_start,
        core_stop=segment.core_stop,
        iterations=int(result.iterations),
        energy=float(result.energy),
        converged=bool(result.converged),
    )
    return h5io.write(path, FIT_SEGMENT, fit_arrays(result, frame_index), attrs)


def write_fit_identity(path, result: FitResult, *, frame_index, model: MorphableModel, video: str, width: int, height: int, fps: float):
    """Write the identity fit of a video (``frame_index``: the sampled frames)."""
    attrs = _model_attrs(model, video, width, height, fps, result.settings)
    attrs.update(iterations=int(result.iterations), energy=float(result.energy))
    return h5io.write(path, FIT_IDENTITY, fit_arrays(result, frame_index), attrs)


def result_from_file(arrays: dict, attrs: dict) -> FitResult:
    """The :class:`FitResult` of arrays and attributes read with one of the fit layouts."""
    return FitResult(
        p=arrays["p"],
        q=arrays["q"],
        camera=arrays["camera"],
        valid=arrays["valid"],
        residual=arrays["residual"].astype(float),
        iterations=int(attrs.get("iterations", 0)),
        energy=float(attrs.get("energy", np.nan)),
        converged=bool(attrs.get("converged", False)),
        settings=FitSettings(**json.loads(attrs["fit_settings"])),
    )


def read_fit_segment(path) -> tuple[FitResult, dict, np.ndarray]:
    """(result, attributes, frame_index) of a segment fit file."""
    arrays, attrs = h5io.read(path, FIT_SEGMENT)
    return result_from_file(arrays, attrs), attrs, arrays["frame_index"]


def read_fit_identity(path) -> tuple[FitResult, dict, np.ndarray]:
    """(result, attributes, frame_index of the sampled frames) of an identity fit file."""
    arrays, attrs = h5io.read(path, FIT_IDENTITY)
    return result_from_file(arrays, attrs), attrs, arrays["frame_index"]


def check_model(attrs: dict, model: MorphableModel, path="") -> None:
    """Raise :class:`FitError` unless the file was fitted with this very model."""
    if attrs.get("model_hash") != model.content_hash():
        raise FitError(
            f"{path}: fitted with model {attrs.get('model')!r} ({str(attrs.get('model_hash'))[:12]}…), not {model.name!r} ({model.content_hash()[:12]}…)"
        )
