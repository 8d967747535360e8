"""Job of the evaluation stage: held-out self-reenactment of a target at full resolution, the GAN against the
baselines, scored over the whole frame, the head crop and the face mask."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import stability as st
from ..errors import InputError
from ..files import atomic_path, write_json
from ..gan.data import crop_resize, split_frames
from ..gan.flow import open_flow_file
from ..gan.headroom import headroom
from ..gan.held_out import held_out_composites
from ..gan.inference import load_generator, resolve_device
from ..ingest import read_probe
from ..mp4_writer import Mp4Feed
from ..progress import ProgressLog
from ..render.conditioning_file import open_conditioning
from ..tracks import read_track
from ..transfer_files import read_transfer
from ..video import iter_frames
from .model import load_video_model

log = logging.getLogger(__package__)


def evaluate(*, generator, conditioning_file, flow_file, track_file, video_path, probe_json, outs: dict, composite_cfg: dict,
             model_cfg: dict, model_file, device: str = "auto") -> dict:
    """Held-out self-reenactment at full resolution (:mod:`deep_puppets.gan.held_out`): the GAN and the
    baselines pasted over the real held-out frames, scored over the whole frame, the head crop and the face mask
    — per-frame CSV, summary JSON, E_col plot, seam figure, heat-map and side-by-side videos of the head crop;
    and (:mod:`deep_puppets.stability`) the flicker of every method against the real video's flow and each
    frame's parameter distance to the training frames against its error (``flicker`` and ``distance`` figures);
    and (:mod:`deep_puppets.gan.headroom`) the generator's fit on training against held-out frames beside the oracle
    retrieval bound (``headroom`` in the summary)."""
    track, attrs = read_track(track_file)
    exp_std = load_video_model(model_cfg, model_file).exp_std
    if len(exp_std) != track.q.shape[1]:
        raise InputError(track_file, f"has {track.q.shape[1]} expression coefficients, its model {model_file} {len(exp_std)}")
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
        flicker, previous = {m: {r: [] for r in st.FLICKER_REGIONS} for m in ("real", *ev.METHODS)}, None
        progress = ProgressLog(f"evaluate {video_path}", counts["scored"], every=50, logger=log)
        with Mp4Feed(outs["heat_mp4"], info.fps) as heat_video, Mp4Feed(outs["side_mp4"], info.fps) as side_video:
            for c in held_out_composites(G, settings, streams, boxes, ff["frames"], features, train, held, keep, plates, grow, feather, dev):
                masks = ev.regions(c.alpha, c.box)
                for method in ev.METHODS:
                    scores, err = ev.region_scores(c.methods[method], c.real, masks)
                    rows += [{"frame": c.frame, "method": method, "region": r, **scores[r]} for r in ev.REGIONS]
                    if method == "gan":
                        seam.append(ev.seam_sums(err, c.alpha))
                        err_view = crop_resize(err, c.box, view)[..., 0]
                        heat_video.put(np.vstack([ev.heat_map(err_view), ev.legend_bar(view[1])]))
                        side_video.put(ev.comparison_frame(crop_resize(c.real, c.box, view), crop_resize(c.methods["gan"], c.box, view),
                                                           err_view, c.frame, scores[ev.HEAD]["e_col"]))
                previous = _flicker_frame(c, previous, ff["flow"], settings.size, flicker)
                scored.append(c.frame)
                nearest.append(c.nearest)
                progress(len(scored))
            if len(scored) != counts["scored"]:  # inside the block: the videos are not written either
                raise InputError(video_path, f"only {len(scored)} of the {counts['scored']} frames to score were read")
        usable_train = train[track.valid[train] & valid[train]]
        limits = headroom(G, settings, streams, ff["frames"], usable_train, scored, grow=grow, feather=feather, device=dev) if len(usable_train) else None
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
        "composite": {"grow": grow, "feather": feather},
        **ev.method_summary(methods),
        "seam": seam_figures,
        "nearest_frames": nearest,
        "heat_scale_max": ev.HEAT_MAX,
    }
    summary.update(_stability(df, flicker, scored, st.parameter_features(track.q, track.camera, exp_std), train[track.valid[train]], outs,
                              (attrs["video"], frames_text)))
    if limits is not None:
        summary["headroom"] = limits
        log.info("%s headroom (face PSNR in the crop): GAN %.2f dB on training frames, %.2f on held-out; oracle retrieval %.2f / %.2f",
                 attrs["video"], limits["gan"]["training"], limits["gan"]["held_out"], limits["oracle_retrieval"]["training"],
                 limits["oracle_retrieval"]["held_out"])
    write_json(outs["json"], summary)
    ev.e_col_plot(df, outs["plot"], f"{attrs['video']}: self-reenactment on {frames_text}")
    ev.seam_plot(scored, seam, outs["seam_plot"], f"{attrs['video']}: GAN error at the blend seam on {frames_text}")
    face = {m: round(summary["mean"][m][ev.FACE]["e_col"], 4) for m in ev.METHODS}
    log.info("%s held-out face-region E_col on %s: %s; GAN PSNR gain (dB) %s; seam ratio %.2f (bar %.1f)", attrs["video"],
             frames_text, face, {k: round(v, 2) for k, v in summary["gan_improvement_db"].items() if k != "region"},
             seam_figures["ratio"], ev.SEAM_BAR)
    return summary


def _flicker_frame(c, previous, flows, size, flicker: dict):
    """Append the warping error of held-out frame ``c`` (every method and the real frame, face mask and crop) to
    ``flicker`` — NaN when the frame before it was not scored — and return what the next frame needs."""
    crops = {m: crop_resize(img, c.box, size) for m, img in (("real", c.real), *c.methods.items())}
    face = crop_resize(c.alpha, c.box, size)[..., 0] >= ev.FACE_LEVEL
    consecutive = previous is not None and previous[0] == c.frame - 1
    flow = np.asarray(flows[c.frame], np.float32) if consecutive else None
    for m, img in crops.items():
        for region, mask in (("face", face), ("crop", None)):
            flicker[m][region].append(st.warping_error(previous[1][m], img, flow, mask) if consecutive else float("nan"))
    return c.frame, crops


def _stability(df, flicker: dict, scored: list, features, train, outs: dict, title: tuple[str, str]) -> dict:
    """The summary's flicker and out-of-distribution keys, and their two figures."""
    distance, near = st.nearest_distance(features, train, scored)
    gan_face = df[(df.method == "gan") & (df.region == ev.FACE)].set_index("frame").e_col.reindex(scored).to_numpy(float)
    rho = st.spearman(distance, gan_face)
    video, frames_text = title
    st.flicker_plot(scored, flicker, outs["flicker_plot"], f"{video}: flicker (warping error with the real video's flow)\non {frames_text}")
    st.distance_plot(scored, distance, gan_face, outs["distance_plot"], f"{video}: distance to the training frames against error\non {frames_text}", rho)

    def mean(v):
        v = np.asarray(v, float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    return {
        "flicker": {
            "measure": "mean |frame t - frame t-1 warped to t with the real video's backward flow| (RGB 0-1, channel mean) in the "
                       "head crop at the training size, per held-out frame whose predecessor is scored; regions: face (mask >= "
                       f"{ev.FACE_LEVEL}) and the whole crop; 'real' is the real video's own value (the flow's floor)",
            "frames": scored,
            "mean": {m: {r: mean(v) for r, v in regions.items()} for m, regions in flicker.items()},
            "excess_over_real": {m: {r: mean(v) - mean(flicker["real"][r]) for r, v in regions.items()} for m, regions in flicker.items() if m != "real"},
            "per_frame": flicker,
        },
        "training_distance": {
            "measure": f"Euclidean distance of (q / exp_std, rotation vector in units of {st.ROTATION_UNIT_DEG:g} degrees) to the nearest "
                       "training frame with a detected face; translation and scale left out (the crop follows them)",
            "per_frame": distance.tolist(),
            "nearest_training_frame": near.tolist(),
            "mean": mean(distance),
            "max": float(np.nanmax(distance)) if np.isfinite(distance).any() else float("nan"),
            "spearman_vs_gan_face_e_col": rho,
        },
    }


def pair_ood(*, transfer_file, target_track, target_model_file, model_cfg: dict, held_out_fraction: float, pair: str, out_json, out_png) -> dict:
    """Per output frame of a pair, the distance of its transferred parameters to the target's training frames
    (:mod:`deep_puppets.stability`; the generator's split), beside the target's own held-out frames'."""
    result, tattrs = read_transfer(transfer_file)
    track, _ = read_track(target_track)
    exp_std = load_video_model(model_cfg, target_model_file).exp_std
    for name, q in ((transfer_file, result.q), (target_track, track.q)):
        if q.shape[1] != len(exp_std):
            raise InputError(name, f"has {q.shape[1]} expression coefficients, the target's model {target_model_file} {len(exp_std)}")
    train, held = split_frames(track.n_frames, held_out_fraction)
    train = train[track.valid[train]]
    target_features = st.parameter_features(track.q, track.camera, exp_std)
    own, _ = st.nearest_distance(target_features, train, held[track.valid[held]])
    features = np.vstack([target_features[train], st.parameter_features(result.q, result.camera, exp_std)])
    query = np.arange(len(train), len(features))
    distance, near = st.nearest_distance(features, np.arange(len(train)), query)
    distance[~np.asarray(result.valid, bool)] = np.nan
    near = np.where(near >= 0, train[np.maximum(near, 0)], -1)
    reference = float(np.nanpercentile(own, 95)) if np.isfinite(own).any() else float("nan")
    finite = distance[np.isfinite(distance)]
    summary = {
        "pair": pair,
        "source": tattrs["source"],
        "target": tattrs["target"],
        "measure": f"Euclidean distance of (q / exp_std, rotation vector in units of {st.ROTATION_UNIT_DEG:g} degrees) to the nearest "
                   "training frame of the target with a detected face (the generator's split); named blendshapes are not in q "
                   "(see transfer.h5 out_of_range); NaN where the transferred frame is not valid",
        "training_frames": [int(train[0]), int(train[-1]) + 1] if len(train) else [],
        "per_frame": distance.tolist(),
        "nearest_training_frame": near.tolist(),
        "mean": float(finite.mean()) if len(finite) else float("nan"),
        "p95": float(np.percentile(finite, 95)) if len(finite) else float("nan"),
        "max": float(finite.max()) if len(finite) else float("nan"),
        "target_held_out_p95": reference,
        "fraction_beyond_target_held_out_p95": float((finite > reference).mean()) if len(finite) and np.isfinite(reference) else float("nan"),
        "named_out_of_range_fraction": float(np.asarray(result.out_of_range).any(axis=1).mean()) if result.n_frames else float("nan"),
    }
    write_json(out_json, summary)
    st.pair_distance_plot(distance, reference, out_png, f"{pair}: how far the transferred frames are from what {tattrs['target']} showed in training")
    log.info("%s: transferred frames' distance to the target's training frames mean %.2f, p95 %.2f (the target's own held-out p95 %.2f)",
             pair, summary["mean"], summary["p95"], reference)
    return summary
