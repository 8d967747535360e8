"""The transfer file (layout ``transfer``): its layout and check, :func:`write_transfer`, :func:`read_transfer`,
and :func:`transfer_files`, the pair job's reading, transferring and writing of files around
:func:`deep_puppets.transfer.transfer_motion`.
"""

from __future__ import annotations

import json

import numpy as np

from . import h5io
from .files import json_text
from .fit_files import COEFFICIENT_LIMIT, camera_problem
from .models.base import MorphableModel
from .named_expressions import NAMED_EXPRESSIONS
from .tracks import read_track
from .transfer import TransferError, TransferResult, TransferSettings, transfer_motion


def _check_transfer(arrays: dict, attrs: dict) -> str | None:
    """Finite coefficients and references, plausible cameras (as the fit files')."""
    lim = COEFFICIENT_LIMIT
    problems = [camera_problem(arrays["camera"], arrays["valid"], attrs["width"], attrs["height"])]
    for name in ("p", "q", "source_expression_reference", "target_expression_reference"):
        problems += [h5io.nonfinite(name, arrays[name]), h5io.out_of_range(name, arrays[name], -lim, lim)]
    for name in ("source_reference", "target_reference"):
        problems.append(camera_problem(arrays[name][None], [True], attrs["width"], attrs["height"], name))
    problems += [h5io.nonfinite("named", arrays["named"])]
    if arrays["named"].shape[1] != len(json.loads(attrs["named_expressions"])):
        problems.append(f"dataset 'named' has {arrays['named'].shape[1]} columns, attribute named_expressions names a different number")
    return h5io.first_problem(*problems)


TRANSFER = h5io.Layout(
    name="transfer",
    version=2,
    doc=(
        "Target parameters re-animated by a source (deep_puppets/transfer.py): one row per source frame; render "
        "with the target's model. Pose and expression relative to each actor's reference (median pose, "
        "neutral expression); in expression mode the camera is the target's own (target_pose_frame)."
    ),
    datasets={
        "p": h5io.Dataset("float64", ("K_id",), "target identity coefficients"),
        "q": h5io.Dataset("float64", ("T", "K_exp"), "target expression coefficients per output frame"),
        "camera": h5io.Dataset("float64", ("T", 7), "target camera rx, ry, rz (axis-angle), tx, ty, tz, scale (camera.CAMERA_FIELDS)"),
        "valid": h5io.Dataset("bool", ("T",), "source frame valid (and, in expression mode, the target pose frame valid)"),
        "source_frame": h5io.Dataset("int64", ("T",), "source frame each output frame came from"),
        "target_pose_frame": h5io.Dataset("int64", ("T",), "target frame whose pose was kept (expression mode: ping-pong), -1 otherwise"),
        "source_reference": h5io.Dataset("float64", (7,), "reference camera of the source track (rotation median, medians)"),
        "target_reference": h5io.Dataset("float64", (7,), "reference camera of the target track"),
        "source_expression_reference": h5io.Dataset("float64", ("K_src",), "reference (neutral) expression of the source"),
        "target_expression_reference": h5io.Dataset("float64", ("K_exp",), "reference (neutral) expression of the target"),
        "named": h5io.Dataset("float64", ("T", "K_named"), "named blendshape coefficients (deep_puppets/named_expressions.py), added to the mesh"),
        "out_of_range": h5io.Dataset("bool", ("T", "K_named"), "desired named signal outside the range the target showed in its own track"),
    },
    attrs={
        "source": "source video name",
        "target": "target video name",
        "mode": "pose+expression or expression",
        "source_model_hash": "content_hash() of the source's model",
        "target_model_hash": "content_hash() of the target's model (render with it)",
        "expression_transfer": "shared_basis (relative coefficient copy) or displacement (ridge projection)",
        "settings": "JSON of the TransferSettings",
        "stats": "JSON: size_ratio, clamped_fraction, unrepresented_median/p95 and named (displacement), n_frames, n_valid",
        "named_expressions": "JSON list: the names of the columns of named and out_of_range",
        "width": "target frame width in pixels",
        "height": "target frame height in pixels",
        "fps": "frames per second of the output (the source's)",
    },
    check=_check_transfer,
)

_ARRAYS = ("p", "q", "camera", "valid", "source_frame", "target_pose_frame", "source_reference", "target_reference",
           "source_expression_reference", "target_expression_reference")  # fmt: skip


def write_transfer(path, result: TransferResult, *, source: str, target: str, width: int, height: int, fps: float):
    """Write a transfer result (layout ``transfer``, atomic)."""
    attrs = dict(
        source=source,
        target=target,
        mode=result.mode,
        source_model_hash=result.source_model_hash,
        target_model_hash=result.target_model_hash,
        expression_transfer=result.expression_transfer,
        settings=result.settings.to_json(),
        stats=json_text(result.stats, sort_keys=True),
        width=int(width),
        height=int(height),
        fps=float(fps),
        named_expressions=json.dumps(list(NAMED_EXPRESSIONS)),
    )
    T, K = result.n_frames, len(NAMED_EXPRESSIONS)
    named = np.zeros((T, K)) if result.named is None else np.asarray(result.named, float)
    out_of_range = np.zeros((T, K), bool) if result.out_of_range is None else np.asarray(result.out_of_range, bool)
    return h5io.write(path, TRANSFER, {**{k: getattr(result, k) for k in _ARRAYS}, "named": named, "out_of_range": out_of_range}, attrs)


def read_transfer(path) -> tuple[TransferResult, dict]:
    """(result, attributes) of a transfer file."""
    arrays, attrs = h5io.read(path, TRANSFER)
    result = TransferResult(
        **{k: arrays[k] for k in _ARRAYS},
        mode=str(attrs["mode"]),
        expression_transfer=str(attrs["expression_transfer"]),
        source_model_hash=str(attrs["source_model_hash"]),
        target_model_hash=str(attrs["target_model_hash"]),
        settings=TransferSettings(**json.loads(attrs["settings"])),
        stats=json.loads(attrs["stats"]),
        named=arrays["named"],
        out_of_range=arrays["out_of_range"],
    )
    return result, attrs


def transfer_files(source_track, target_track, source_model: MorphableModel, target_model: MorphableModel, out, *,
                   mode: str = "pose+expression", settings: TransferSettings | None = None) -> TransferResult:  # fmt: skip
    """One pair job: read both tracks, check each was fitted with the model given, transfer, write ``out``.

    Names, frame size and fps come from the tracks' attributes (target width/height, source fps).
    """
    src, src_attrs = read_track(source_track)
    tgt, tgt_attrs = read_track(target_track)
    for path, attrs, model in ((source_track, src_attrs, source_model), (target_track, tgt_attrs, target_model)):
        if attrs["model_hash"] != model.content_hash():
            raise TransferError(
                f"{path}: fitted with model {attrs['model']!r} ({attrs['model_hash'][:12]}), not the model given ({model.name!r}, {model.content_hash()[:12]})"
            )
    result = transfer_motion(src, tgt, source_model, target_model, mode, settings)
    write_transfer(out, result, source=str(src_attrs["video"]), target=str(tgt_attrs["video"]),
                   width=int(tgt_attrs["width"]), height=int(tgt_attrs["height"]), fps=float(src_attrs["fps"]))  # fmt: skip
    return result
