"""Job of the evaluation stage: held-out self-reenactment of a target at full resolution, the GAN against the
baselines, scored over the whole frame, the head crop and the face mask."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..errors import InputError
from ..files import atomic_path, write_json
from ..gan.data import crop_resize, split_frames
from ..gan.flow import open_flow_file
from ..gan.held_out import METHODS, held_out_composites
from ..gan.inference import load_generator, resolve_device
from ..ingest import read_probe
from ..mp4_writer import Mp4Feed
from ..progress import ProgressLog
from ..render.conditioning_file import open_conditioning
from ..tracks import read_track
from ..video import iter_frames

log = logging.getLogger(__package__)


def evaluate(*, generator, conditioning_file, flow_file, track_file, video_path, probe_json, outs: dict, composite_cfg: dict,
             device: str = "auto") -> dict:
    """Held-out self-reenactment at full resolution (:mod:`deep_puppets.gan.held_out`): the GAN and the
    baselines pasted over the real held-out frames, scored over the whole frame, the head crop and the face mask
    — per-frame CSV, summary JSON, E_col plot, seam figure, heat-map and side-by-side videos of the head crop."""
    track, attrs = read_track(track_file)
    features = np.hstack([track.q, track.camera])
    info = read_probe(probe_json)
    dev = resolve_device(device)
    G, settings = load_generator(generator, dev)
    fc, valid, boxes = open_conditioning(conditioning_file, tuple(dict.fromkeys(("colour", *settings.streams))))
    with fc, open_flow_file(flow_file, settings.size, boxes)[0] as ff:  # crops at these boxes
        n = len(valid)
        if info.n_frames != n:
            raise InputError(video_path, f"has {info.n_frames} frames, its conditioning {conditioning_file} has {n}")
        train, held = split_frames(n, settings.held_out_fraction)
        face_pixels = [int((fc["colour"][int(t)].max(axis=-1) > 0).sum()) for t in held]
        # one frame set for every method and region: detected, rendered, with a face in the render
        keep, counts = ev.scored_frames(track.valid[held], valid[held], face_pixels)
        frames_text = ev.describe_frames(counts)
        if not counts["scored"]:
            raise InputError(conditioning_file, f"nothing to evaluate: {frames_text}")
        streams = {k: fc[k] for k in dict.fromkeys(("colour", *settings.streams))}
        plates = iter_frames(video_path, int(held[0]), int(held[-1]) + 1, info)
        grow, feather = composite_cfg["grow"], composite_cfg["feather"]
        view = (max(256, settings.size[0]),) * 2  # the head crop at a readable size, for the videos
        rows, seam, scored, nearest = [], [], [], []
        progress = ProgressLog(f"evaluate {video_path}", counts["scored"], every=50, logger=log)
        with Mp4Feed(outs["heat_mp4"], info.fps) as heat_video, Mp4Feed(outs["side_mp4"], info.fps) as side_video:
            for c in held_out_composites(G, settings, streams, boxes, ff["frames"], features, train, held, keep, plates, grow, feather, dev):
                masks = ev.regions(c.alpha, c.box)
                for method in METHODS:
                    scores, err = ev.region_scores(c.methods[method], c.real, masks)
                    rows += [{"frame": c.frame, "method": method, "region": r, **scores[r]} for r in ev.REGIONS]
                    if method == "gan":
                        seam.append(ev.seam_sums(err, c.alpha))
                        err_view = crop_resize(err, c.box, view)[..., 0]
                        heat_video.put(np.vstack([ev.heat_map(err_view), ev.legend_bar(view[1])]))
                        side_video.put(ev.comparison_frame(crop_resize(c.real, c.box, view), crop_resize(c.methods["gan"], c.box, view),
                                                           err_view, c.frame, scores[ev.HEAD]["e_col"]))
                scored.append(c.frame)
                nearest.append(c.nearest)
                progress(len(scored))
            if len(scored) != counts["scored"]:  # inside the block: the videos are not written either
                raise InputError(video_path, f"only {len(scored)} of the {counts['scored']} frames to score were read")
    df = pd.DataFrame(rows)
    with atomic_path(outs["csv"]) as tmp:
        df.to_csv(tmp, index=False)
    methods = ev.summary_table(df)
    seam_figures = ev.seam_summary(seam)
    summary = {
        "video": attrs["video"],
        "protocol": "held-out self-reenactment at full resolution: each method's crop pasted with the face mask "
                    "over the real held-out frame; regions: whole frame, head crop (box within the frame), face "
                    f"(mask >= {ev.FACE_LEVEL})",
        "frame_size": [info.height, info.width],
        "crop_size": list(settings.size),
        "held_out_frames": [int(held[0]), int(held[-1]) + 1],
        "frames": {**counts, "scored_frames": scored},
        "n_frames": counts["scored"],
        "regions": list(ev.REGIONS),
        "composite": {"grow": grow, "feather": feather},
        "methods": methods,
        "mean": {m: {r: {k: v["mean"] for k, v in methods[m][r].items()} for r in ev.REGIONS} for m in METHODS},
        "gan_improvement_db": {"region": ev.FACE, **ev.improvement_db(methods, "gan", ev.FACE)},
        "seam": seam_figures,
        "nearest_frames": nearest,
        "heat_scale_max": ev.HEAT_MAX,
    }
    write_json(outs["json"], summary)
    ev.e_col_plot(df, outs["plot"], f"{attrs['video']}: self-reenactment on {frames_text}")
    ev.seam_plot(scored, seam, outs["seam_plot"], f"{attrs['video']}: GAN error at the blend seam on {frames_text}")
    face = {m: round(summary["mean"][m][ev.FACE]["e_col"], 4) for m in METHODS}
    log.info("%s held-out face-region E_col on %s: %s; GAN PSNR gain (dB) %s; seam ratio %.2f (bar %.1f)", attrs["video"],
             frames_text, face, {k: round(v, 2) for k, v in summary["gan_improvement_db"].items() if k != "region"},
             seam_figures["ratio"], ev.SEAM_BAR)
    return summary
