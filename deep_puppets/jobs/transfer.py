"""Jobs of the transfer stage: a source video's motion transferred onto a target's face, and how faithfully its
expression arrives (against the source's detected landmarks, next to the ceiling set by the source's own track)."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from ..expression_fidelity import fidelity_figure, fidelity_summary
from ..expression_signals import expression_signals
from ..files import write_json
from ..landmark_basis import projected_landmarks
from ..landmark_sets import read_video_landmarks
from ..named_expressions import named_landmarks
from ..tracks import read_track
from ..transfer import TransferSettings
from ..transfer_files import read_transfer, transfer_files
from .model import load_video_model

log = logging.getLogger(__package__)


def transfer(*, model_cfg: dict, source_model_file, target_model_file, source_track, target_track, out, mode: str, transfer_cfg: dict) -> None:
    """The pair's transfer in ``mode`` (config section ``transfer``)."""
    result = transfer_files(
        source_track,
        target_track,
        load_video_model(model_cfg, source_model_file),
        load_video_model(model_cfg, target_model_file),
        out,
        mode=mode,
        settings=TransferSettings.from_config(transfer_cfg),
    )
    log.info("transfer (%s): %d frames, stats %s", mode, len(result.q), result.stats)


def expression_fidelity(*, model_cfg: dict, landmark_files, source_track, source_model_file, target_model_file, transfer_file, pair: str,
                            summary_json, figure_png) -> dict:  # fmt: skip
    """The pair's fidelity summary (JSON) and figure: the source's detected landmarks against the transferred mesh's
    projected landmark vertices, and against the source's own track (the ceiling)."""
    seq = read_video_landmarks(list(landmark_files))
    source = expression_signals(seq["landmarks"], seq["valid"])
    n_frames = len(seq["valid"])

    source_model = load_video_model(model_cfg, source_model_file)
    track, track_attrs = read_track(source_track)
    if track_attrs["model_hash"] != source_model.content_hash():
        raise InputError(source_track, f"fitted with model {track_attrs['model']!r}, not the source's model {source_model.name!r}")
    if track.n_frames != n_frames:
        raise InputError(source_track, f"{track.n_frames} frames, the source's landmarks have {n_frames}")
    ceiling = expression_signals(projected_landmarks(source_model, track))
    ceiling_valid = np.asarray(track.valid, bool) & seq["valid"]

    same_file = str(target_model_file) == str(source_model_file)  # a model file shared by all videos (ICT): load it once
    target_model = source_model if same_file else load_video_model(model_cfg, target_model_file)
    result, attrs = read_transfer(transfer_file)
    if result.target_model_hash != target_model.content_hash():
        raise InputError(transfer_file, f"made for another target model ({result.target_model_hash[:12]}), not {target_model.name!r}")
    frames = np.asarray(result.source_frame)
    if len(frames) and (frames.min() < 0 or frames.max() >= n_frames):
        raise InputError(transfer_file, f"source frames outside the source's {n_frames} frames")
    transferred = expression_signals(named_landmarks(target_model, result.p, result.q, result.camera, result.named))  # what the pair render draws
    source_aligned = {k: v[frames] for k, v in source.items()}
    ceiling_aligned = {k: v[frames] for k, v in ceiling.items()}
    transfer_valid = np.asarray(result.valid, bool) & seq["valid"][frames]

    summary = fidelity_summary(source_aligned, transferred, transfer_valid, ceiling_aligned, ceiling_valid[frames], result.mode)
    summary = {"pair": pair, "source": str(attrs["source"]), "target": str(attrs["target"]), "n_frames": len(frames),
               "n_compared": int(transfer_valid.sum()), "expression_transfer": result.expression_transfer, **summary}  # fmt: skip
    write_json(summary_json, summary)
    fidelity_figure(figure_png, source_aligned, transferred, transfer_valid, ceiling_aligned, ceiling_valid[frames], summary,
                    float(attrs["fps"]), f"{attrs['source']} → {attrs['target']} ({result.mode})")  # fmt: skip
    t, b = summary["transferred"], summary["blinks"]["transferred"]
    log.info("fidelity %s: %s; blinks recall %s precision %s", pair, ", ".join(f"{k} r {v['r']:.2f} a {v['a']:.2f}" for k, v in t.items()),
             b["recall"], b["precision"])  # fmt: skip
    return summary
