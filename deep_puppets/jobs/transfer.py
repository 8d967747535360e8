"""Jobs of the transfer stage: a source video's motion transferred onto a target's face, and how faithfully its
expression arrives (against the source's detected landmarks, next to the ceiling set by the source's own track),
in the transferred mesh and in the synthesised output (the detector run on the re-enactment)."""

from __future__ import annotations

import json
import logging

import numpy as np

from ..errors import InputError
from ..expression_fidelity import fidelity_figure, fidelity_summary
from ..expression_signals import expression_signals
from ..files import write_json
from ..landmark_basis import projected_landmarks
from ..landmark_sets import read_video_landmarks
from ..landmarks import LandmarkSettings, detect_frames, detector_description
from ..named_expressions import named_landmarks
from ..output_fidelity import on_output_frames, output_fidelity_figure, output_fidelity_summary
from ..progress import ProgressLog
from ..reenactment import pair_frames_for_output
from ..tracks import read_track
from ..transfer import TransferSettings, pose_warning
from ..transfer_files import read_transfer, transfer_files
from ..video import iter_frames, probe_video
from .model import load_video_model

log = logging.getLogger(__package__)


def transfer(*, model_cfg: dict, source_model_file, target_model_file, source_track, target_track, out, mode: str, transfer_cfg: dict) -> None:
    """The pair's transfer in ``mode`` (config section ``transfer``)."""
    settings = TransferSettings.from_config(transfer_cfg)
    result = transfer_files(
        source_track,
        target_track,
        load_video_model(model_cfg, source_model_file),
        load_video_model(model_cfg, target_model_file),
        out,
        mode=mode,
        settings=settings,
    )
    log.info("transfer (%s): %d frames, stats %s", mode, len(result.q), result.stats)
    warning = pose_warning(result.stats, settings)
    if warning:
        log.warning("%s: %s", out, warning)


def transferred_signals(target_model, transfer_file, n_source_frames: int):
    """The pair's transfer (result, attrs) and the named signals of what the pair render draws: the transferred
    mesh's landmark vertices with its named expressions, projected; checked against the target's model and the
    source's frame count."""
    result, attrs = read_transfer(transfer_file)
    if result.target_model_hash != target_model.content_hash():
        raise InputError(transfer_file, f"made for another target model ({result.target_model_hash[:12]}), not {target_model.name!r}")
    frames = np.asarray(result.source_frame)
    if len(frames) and (frames.min() < 0 or frames.max() >= n_source_frames):
        raise InputError(transfer_file, f"source frames outside the source's {n_source_frames} frames")
    return result, attrs, expression_signals(named_landmarks(target_model, result.p, result.q, result.camera, result.named))


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
    result, attrs, transferred = transferred_signals(target_model, transfer_file, n_frames)
    frames = np.asarray(result.source_frame)
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


def output_fidelity(*, model_cfg: dict, landmarks_cfg: dict, landmark_files, target_model_file, transfer_file, reenactment, pair: str,
                    summary_json, figure_png) -> dict:  # fmt: skip
    """The motion fidelity of the pair's re-enactment (JSON and figure, :mod:`deep_puppets.output_fidelity`): the
    landmark detector (config section ``landmarks``, as the landmark stage) on every frame of the full-resolution
    output, its named signals against the conditioning it was asked to follow and against the source's detected
    landmarks."""
    seq = read_video_landmarks(list(landmark_files))
    source = expression_signals(seq["landmarks"], seq["valid"])
    target_model = load_video_model(model_cfg, target_model_file)
    result, attrs, conditioning = transferred_signals(target_model, transfer_file, len(seq["valid"]))
    info = probe_video(reenactment)
    pair_idx = pair_frames_for_output(len(result.valid), float(attrs["fps"]), info.fps)
    if len(pair_idx) != info.n_frames:
        raise InputError(reenactment, f"{info.n_frames} frames, its transfer {transfer_file} makes {len(pair_idx)} at {info.fps:.3f} fps")
    settings = LandmarkSettings.from_config(landmarks_cfg)
    det = detect_frames(iter_frames(reenactment, 0, None, info), settings, progress=ProgressLog(f"landmarks of {reenactment}", info.n_frames, logger=log))
    src_idx = np.asarray(result.source_frame, np.int64)[pair_idx]
    aligned = dict(output=expression_signals(det["landmarks"], det["valid"]), output_valid=det["valid"],
                   conditioning=on_output_frames(conditioning, pair_idx), conditioning_valid=np.asarray(result.valid, bool)[pair_idx],
                   source=on_output_frames(source, src_idx), source_valid=seq["valid"][src_idx])  # fmt: skip
    summary = output_fidelity_summary(**aligned, mode=result.mode)
    summary = {"pair": pair, "source": str(attrs["source"]), "target": str(attrs["target"]), "video": str(reenactment), "width": info.width,
               "height": info.height, "fps": info.fps, "detector": json.loads(detector_description(settings)), **summary}  # fmt: skip
    write_json(summary_json, summary)
    output_fidelity_figure(figure_png, **aligned, summary=summary, fps=info.fps, title=f"{attrs['source']} → {attrs['target']} ({result.mode}) output")
    bar = summary["bar"]
    log.info("output fidelity %s: %d of %d frames with a face (missing %s); mouth vs conditioning r %.2f a %.2f (%s the bar)", pair,
             summary["n_detected"], summary["n_frames"], summary["missing_fraction"], bar["r"], bar["a"], "passes" if bar["passes"] else "misses")  # fmt: skip
    return summary
