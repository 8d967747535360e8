"""Jobs of cross-recording self-reenactment (:mod:`deep_puppets.cross_recording`): one recording's generator
scored on another recording of the same person, and the table of every such run."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import cross_recording as cr
from .. import evaluation as ev
from ..errors import InputError
from ..files import atomic_path, read_json, write_json
from ..gan.baselines import mean_frame
from ..gan.data import crop_resize, split_frames
from ..gan.flow import open_flow_file
from ..gan.held_out import composites
from ..gan.inference import load_generator, resolve_device
from ..ingest import read_probe
from ..landmark_sets import read_video_landmarks
from ..mp4_writer import Mp4Feed
from ..progress import ProgressLog
from ..render.conditioning_file import open_conditioning
from ..tracks import read_track
from ..video import iter_frames

log = logging.getLogger(__package__)


def cross_recording(*, generator, train_flow, train_track, train_landmarks, conditioning_file, track_file, landmarks, video_path, probe_json,
                    outs: dict, composite_cfg: dict, names: tuple[str, str], device: str = "auto") -> dict:
    """Score the generator of recording ``names[0]`` (its flow file's real crops and its track give the baselines'
    training frames) on every frame with a face of recording ``names[1]`` (``conditioning_file``: its track
    drawn with the training recording's texture, at its crop boxes; its real frames), as the held-out evaluation
    scores a target: per-frame CSV, summary JSON and a side-by-side video of the head crop (``outs``: csv, json,
    side_mp4)."""
    train_name, test_name = names
    dev = resolve_device(device)
    G, settings = load_generator(generator, dev)
    size = tuple(settings.size)
    # the training recording: its generator's training part, frames with a detected face
    ttrack, _ = read_track(train_track)
    train_seq = read_video_landmarks(train_landmarks)
    if len(train_seq["valid"]) != ttrack.n_frames:
        raise InputError(train_landmarks[0], f"has {len(train_seq['valid'])} frames, the track {train_track} {ttrack.n_frames}")
    train, _ = split_frames(ttrack.n_frames, settings.held_out_fraction)
    train = train[ttrack.valid[train] & train_seq["valid"][train]]
    if not len(train):
        raise InputError(train_track, "has no training frame with a detected face")
    train_features = cr.retrieval_features(train_seq["landmarks"], train_seq["valid"])
    # the test recording: every frame, scored where detected, rendered and with a face in the render
    track, attrs = read_track(track_file)
    seq = read_video_landmarks(landmarks)
    info = read_probe(probe_json)
    fc, valid, boxes = open_conditioning(conditioning_file, tuple(dict.fromkeys(("colour", *settings.streams))))
    with fc, open_flow_file(train_flow, size)[0] as ff:
        n = len(valid)
        if not info.n_frames == n == track.n_frames == len(seq["valid"]):
            raise InputError(video_path, f"has {info.n_frames} frames, its conditioning {n}, its track {track.n_frames}, its landmarks {len(seq['valid'])}")
        frames = np.arange(n)
        face_pixels = [int((fc["colour"][int(t)].max(axis=-1) > 0).sum()) for t in frames]
        keep, counts = ev.scored_frames(track.valid & seq["valid"], valid, face_pixels)
        frames_text = ev.describe_frames(counts, "test")
        if not counts["scored"]:
            raise InputError(conditioning_file, f"nothing to score: {frames_text}")
        streams = {k: fc[k] for k in dict.fromkeys(("colour", *settings.streams))}
        retrieved = cr.nearest_across(train_features, train, cr.retrieval_features(seq["landmarks"], seq["valid"]))
        mean = mean_frame(ff["frames"], train, size)
        grow, feather = composite_cfg["grow"], composite_cfg["feather"]
        view = (max(256, size[0]),) * 2
        rows, scored, nearest = [], [], []
        progress = ProgressLog(f"cross-recording {train_name} -> {test_name}", counts["scored"], every=50, logger=log)
        with Mp4Feed(outs["side_mp4"], info.fps) as side_video:
            for c in composites(G, settings, streams, boxes, frames, keep, iter_frames(video_path, 0, n, info), grow, feather,
                                ff["frames"], retrieved, mean, dev):
                masks = ev.regions(c.alpha, c.box)
                for method in ev.METHODS:
                    scores, err = ev.region_scores(c.methods[method], c.real, masks)
                    rows += [{"frame": c.frame, "method": method, "region": r, **scores[r]} for r in ev.REGIONS]
                    if method == "gan":
                        side_video.put(ev.comparison_frame(crop_resize(c.real, c.box, view), crop_resize(c.methods["gan"], c.box, view),
                                                           crop_resize(err, c.box, view)[..., 0], c.frame, scores[ev.HEAD]["e_col"]))
                scored.append(c.frame)
                nearest.append(c.nearest)
                progress(len(scored))
            if len(scored) != counts["scored"]:
                raise InputError(video_path, f"only {len(scored)} of the {counts['scored']} frames to score were read")
    df = pd.DataFrame(rows)
    with atomic_path(outs["csv"]) as tmp:
        df.to_csv(tmp, index=False)
    methods = ev.summary_table(df)
    summary = {
        "train": train_name,
        "test": test_name,
        "video": attrs["video"],
        "protocol": f"cross-recording self-reenactment: the generator of {train_name} given {test_name}'s motion (its fitted model "
                    f"and track at its crop boxes, drawn with {train_name}'s texture); each method's crop pasted with the face mask over {test_name}'s real "
                    "frame; baselines from the training frames of "
                    f"{train_name} only (retrieval by named expression signals and head-angle proxies of the detected landmarks); regions: "
                    f"whole frame, head crop, face (mask >= {ev.FACE_LEVEL})",
        "frame_size": [info.height, info.width],
        "crop_size": list(size),
        "training_frames": int(len(train)),
        "frames": {"test": counts["held_out"], "scored": counts["scored"], "excluded": counts["excluded"], "scored_frames": scored},
        "n_frames": counts["scored"],
        "composite": {"grow": grow, "feather": feather},
        **ev.method_summary(methods),
        "nearest_frames": nearest,
    }
    write_json(outs["json"], summary)
    log.info("%s -> %s on %s: face PSNR GAN %.2f dB, nearest %.2f, alpha %.2f, mean %.2f", train_name, test_name, frames_text,
             *(summary["mean"][m][ev.FACE]["psnr"] for m in ev.METHODS))
    return summary


def cross_recording_table(*, runs: list[tuple[str, str]], summaries, within: dict, out_csv, out_html) -> pd.DataFrame:
    """The table of every run (:func:`deep_puppets.cross_recording.cross_table`), CSV and HTML; ``within``:
    training recording -> the path of its own held-out evaluation summary."""
    df = cr.cross_table([tuple(r) for r in runs], [read_json(p, "cross-recording summary") for p in summaries],
                        {k: read_json(p, "evaluation summary") for k, p in within.items()})
    cr.write_table(df, out_csv, out_html, "Cross-recording self-reenactment")
    for _, r in df.iterrows():
        log.info("%s -> %s: GAN face PSNR %.2f dB (%+.2f over retrieval; within its own recording %+.2f)", r["train"], r["test"],
                 r["gan_face_psnr"], r["gan_gain_db_over_nearest"], r["within_gan_gain_db_over_nearest"])
    return df
