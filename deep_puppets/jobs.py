"""One function per workflow job: read the job's inputs, call the library, write its outputs.

The scripts in ``workflow_scripts/`` are one call into this module; everything here is plain Python that
tests can call without Snakemake.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import h5io
from .errors import InputError
from .progress import ProgressLog

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- the model


def load_video_model(model_cfg: dict, model_file):
    """The morphable model a video is fitted with: its own person model, or the configured model file."""
    if model_cfg["type"] == "person":
        from .models.person import load_model

        return load_model(model_file)
    from .models.registry import load_model

    spec = {"type": model_cfg["type"], "path": model_file, "allow_pickle": model_cfg["allow_pickle"], **model_cfg["options"]}
    return load_model(spec)


def build_person_model(landmark_files, out, n_components: int, video: str):
    from .landmark_sets import read_video_landmarks
    from .models.person import build_person_model as build, save_model

    seq = read_video_landmarks(landmark_files)
    try:
        model = build(seq["landmarks"], seq["valid"], n_components, name=f"person:{video}")
    except ValueError as e:
        raise InputError(landmark_files[0], f"cannot build a person model for {video}: {e}") from None
    save_model(out, model, {"video": video})
    log.info("%s: person model with %d expression components", video, model.n_exp)
    return model


# --------------------------------------------------------------------------------------------- fitting


def fit_settings(fit_cfg: dict):
    from .fitting import FitSettings

    return FitSettings.from_fit_section(fit_cfg)


def fit_identity(model_cfg, model_file, landmark_files, out, fit_cfg: dict, video: str, threads: int = 1):
    from .fitting import fit_identity as fit, identity_frames, write_fit_identity
    from .landmark_sets import read_video_landmarks

    model = load_video_model(model_cfg, model_file)
    seq = read_video_landmarks(landmark_files)
    frames = identity_frames(seq["valid"], fit_cfg["identity_frames"])
    if not len(frames):
        raise InputError(seq["attrs"]["video_path"], "no frame with a face: cannot estimate the identity")
    result = fit(model, seq["landmarks"][frames], fit_settings(fit_cfg), threads=threads)
    a = seq["attrs"]
    write_fit_identity(out, result, frame_index=frames, model=model, video=video, width=a["width"], height=a["height"], fps=a["fps"])
    log.info("%s: identity from %d frames, mean residual %.2f px", video, len(frames), np.nanmean(result.residual))


def fit_segment(model_cfg, model_file, identity_file, landmark_file, out, fit_cfg: dict, threads: int = 1):
    from .fitting import check_model, fit_segment as fit, read_fit_identity, write_fit_segment

    model = load_video_model(model_cfg, model_file)
    identity, id_attrs, _ = read_fit_identity(identity_file)
    check_model(id_attrs, model, identity_file)
    arrays, a = h5io.read(landmark_file, h5io.LANDMARKS)
    result = fit(model, arrays["landmarks"], arrays["valid"], fit_settings(fit_cfg), p=identity.p, threads=threads)
    seg = _segment_from_attrs(a)
    write_fit_segment(out, result, frame_index=arrays["frame_index"], segment=seg, model=model, video=a["video"], width=a["width"], height=a["height"], fps=a["fps"])
    log.info("%s segment %d: %d frames, %d iterations, median residual %.2f px", a["video"], seg.index, result.n_frames, result.iterations, np.nanmedian(result.residual))
    return result


def _segment_from_attrs(a: dict):
    from .segments import Segment

    return Segment(int(a["segment"]), int(a["start"]), int(a["stop"]), int(a["core_start"]), int(a["core_stop"]))


def merge_track(fit_files, out):
    from .tracks import merge_segment_files, write_track

    track, attrs = merge_segment_files(list(fit_files))
    write_track(out, track, attrs)
    log.info("%s: track of %d frames (%d with a face) from %d segments", attrs["video"], track.n_frames, track.valid.sum(), len(fit_files))


# ------------------------------------------------------------------------------------- texture, renders


class ScreenVertices:
    """Per-frame mesh vertices in image coordinates, computed lazily (dense models need not fit in memory)."""

    def __init__(self, model, p, q, camera):
        self.model, self.p, self.q, self.camera = model, np.asarray(p), np.asarray(q), np.asarray(camera)
        self.identity = model.shape(self.p)

    def __len__(self):
        return len(self.q)

    def __getitem__(self, t):
        from .camera import project

        v = self.identity + np.tensordot(self.q[t], self.model.exp_basis, axes=(0, 0)) if self.model.n_exp else self.identity
        return project(v, self.camera[t])


class LandmarkPoints:
    """The 478 detector points (irises for the gaze image) of :class:`ScreenVertices`, lazily per frame."""

    def __init__(self, screen: ScreenVertices):
        self.screen = screen

    def __len__(self):
        return len(self.screen)

    def __getitem__(self, t):
        return self.screen.model.landmark_points(self.screen[t])


def estimate_texture(model_cfg, model_file, track_file, video_path, probe_json, out, n_frames: int, smooth: float):
    from .files import json_text
    from .fitting import check_model
    from .ingest import read_probe
    from .texture import TEXTURE, estimate_albedo_and_lighting, vertex_normals, visible_vertices
    from .tracks import read_track
    from .video import iter_frames

    model = load_video_model(model_cfg, model_file)
    track, attrs = read_track(track_file)
    check_model(attrs, model, track_file)
    good = np.flatnonzero(track.valid)[:n_frames]
    if not len(good):
        raise InputError(video_path, "no frame with a face: cannot estimate the texture")
    info = read_probe(probe_json)
    wanted = set(good.tolist())
    frames = [f for i, f in enumerate(iter_frames(video_path, 0, int(good[-1]) + 1, info)) if i in wanted]
    screen = ScreenVertices(model, track.p, track.q, track.camera)
    verts = np.stack([screen[t] for t in good])
    normals = vertex_normals(verts, model.triangles)
    visible = visible_vertices(verts, normals, model.triangles, (info.height, info.width))
    albedo, sh, stats = estimate_albedo_and_lighting(frames, verts[..., :2], normals, visible, triangles=model.triangles, n_frames=len(good), smooth=smooth)
    h5io.write(
        out,
        TEXTURE,
        {"albedo": albedo, "sh": sh},
        {"video": attrs["video"], "model_hash": model.content_hash(), "frames": json_text(good.tolist()), "stats": json_text(stats, default=float)},
    )
    log.info("%s: albedo + SH lighting from %d frames: %s", attrs["video"], len(good), stats)


SMALL_FACE_PX = 24  # a face shorter than this in the conditioning images leaves the generator too few pixels


def face_height_px(points, boxes, size: int, max_frames: int = 64) -> float | None:
    """Median height of the face in the conditioning images, in pixels at ``size``: the vertical extent of each
    frame's projected points (video pixels) scaled from that frame's square box (``boxes`` (4,) for every frame,
    or (T, 4) one per frame) to ``size``, over up to ``max_frames`` frames spread over the sequence; None when no
    sampled frame has finite points."""
    n = len(points)
    if n == 0:
        return None
    boxes = np.asarray(boxes, float)
    heights = []
    for t in np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int)):
        box = boxes if boxes.ndim == 1 else boxes[int(t)]
        y = np.asarray(points[int(t)], float)[..., 1]
        if y.size and np.isfinite(y).all():
            heights.append((y.max() - y.min()) * size / float(box[3] - box[1]))
    return float(np.median(heights)) if heights else None


def warn_if_face_small(points, boxes, size: int, what) -> float | None:
    """Log one WARNING when the face is only a few pixels tall at ``size`` (see :func:`face_height_px`)."""
    height = face_height_px(points, boxes, size)
    if height is not None and height < SMALL_FACE_PX:
        log.warning(
            "%s: face only ~%d px tall in the conditioning images (render.size %d); the generator cannot learn a face "
            "from so few pixels - raise render.size, use framing.mode head or a closer shot (at least ~%d px is needed)",
            what,
            round(height),
            size,
            SMALL_FACE_PX,
        )
    return height


def render_conditioning(
    model_cfg, model_file, params_file, texture_file, out, previews: dict, render_cfg: dict, kind: str, framing_cfg: dict | None = None
):
    """Conditioning frames of a target's own track (``kind='track'``) or of a transfer (``kind='transfer'``), each
    of its crop box (:mod:`deep_puppets.framing`, config section ``framing``): a track's boxes follow the track's
    head, a transfer's follow the transferred head (the source's motion in pose+expression mode)."""
    from .fitting import check_model
    from .framing import FramingSettings, fit_boxes
    from .render import Renderer, write_conditioning, write_previews
    from .texture import TEXTURE

    model = load_video_model(model_cfg, model_file)
    if kind == "track":
        from .tracks import read_track

        fit, attrs = read_track(params_file)
        check_model(attrs, model, params_file)
    else:
        from .transfer import read_transfer

        result, attrs = read_transfer(params_file)
        if attrs["target_model_hash"] != model.content_hash():
            raise InputError(params_file, "was transferred onto a different model than the target's")
        fit = result.to_fit()
    width, height, fps = attrs["width"], attrs["height"], attrs["fps"]
    tex, tex_attrs = h5io.read(texture_file, TEXTURE)
    if tex_attrs["model_hash"] != model.content_hash():
        raise InputError(texture_file, "belongs to a different model than the one rendered")
    screen = ScreenVertices(model, fit.p, fit.q, fit.camera)
    size = int(render_cfg["size"])
    framing = FramingSettings.from_config(framing_cfg)
    boxes = fit_boxes(model, fit, fps, framing, width, height)
    warn_if_face_small(LandmarkPoints(screen), boxes, size, params_file)

    subdivisions = render_cfg["subdivisions"] if model.n_vertices < 5000 else 0
    t0 = time.perf_counter()
    with Renderer.from_model(model, albedo=tex["albedo"], size=(size, size), subdivisions=subdivisions) as r:
        log.info("renderer: %s; %s", r.gl_renderer, json.dumps(r.settings(), sort_keys=True))
        progress = ProgressLog(f"render {kind} {params_file}", len(screen), every=250, logger=log)
        write_conditioning(
            out,
            r,
            screen,
            boxes,
            sh=tex["sh"],
            eye_points=LandmarkPoints(screen),
            source=str(params_file),
            framing=framing.to_json(),
            progress=progress,
        )
    t1 = time.perf_counter()
    write_previews(out, previews, fps)
    t2 = time.perf_counter()
    log.info(
        "rendered %d frames at %d² (%s): %.1f frames/s with HDF5 writing; previews %.1f s",
        len(screen),
        size,
        kind,
        len(screen) / max(t1 - t0, 1e-9),
        t2 - t1,
    )


def transfer_pair(model_cfg, source_model_file, target_model_file, source_track, target_track, out, mode: str, transfer_cfg: dict):
    from .transfer import TransferSettings, transfer_files

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


# ------------------------------------------------------------------------------------------ diagnostics


def tracking_diagnostics(model_cfg, model_file, track_file, identity_file, landmark_files, video_path, probe_json, outs: dict, fit_cfg: dict, window: int,
                         truth_file=None):
    """Landmark error and jitter of the fitted track, the camera with and without smoothing over the first
    ``window`` frames (refitted with λ_q = λ_c = 0), and an overlay video of the fitted face's outlines. For a demo
    clip (``truth_file``: its known motion, layout ``demo_truth``) the fitted head rotation scored against the
    true one (:func:`deep_puppets.diagnostics.rotation_vs_truth`), in the summary under ``truth`` and the figure."""
    from dataclasses import replace

    from . import diagnostics as dg
    from .files import write_json
    from .fitting import fit_segment as fit, projected_landmarks, read_fit_identity
    from .ingest import read_probe
    from .landmark_sets import read_video_landmarks
    from .tracks import read_track
    from .mp4_writer import write_mp4
    from .video import iter_frames

    model = load_video_model(model_cfg, model_file)
    track, attrs = read_track(track_file)
    seq = read_video_landmarks(landmark_files)
    det, valid = seq["landmarks"], seq["valid"]
    fitted = projected_landmarks(model, track)
    nme = dg.landmark_nme(fitted, det, valid)
    j_raw, j_fit = dg.jitter(det, valid), dg.jitter(fitted, valid)

    # the same frames fitted without temporal smoothing, for the comparison
    n = min(window, len(valid))
    identity, _, _ = read_fit_identity(identity_file)
    settings = replace(fit_settings(fit_cfg), lambda_q=0.0, lambda_c=0.0)
    raw = fit(model, det[:n], valid[:n], settings, p=identity.p)
    raw_points = projected_landmarks(model, raw)
    j_unsmoothed = np.full(len(valid), np.nan)
    j_unsmoothed[:n] = dg.jitter(raw_points, valid[:n])
    fps, video = float(attrs["fps"]), attrs["video"]
    dg.camera_smoothing_figure(raw.camera, track.camera[:n], fps, outs["camera_png"], f"{video}: camera over the first {n} frames, without and with smoothing")
    summary = dg.summary(nme, j_raw, j_fit, j_unsmoothed, valid)
    summary["window_frames"] = n
    summary["jitter_ratio_unsmoothed"] = float(np.nanmean(j_unsmoothed[:n]) / np.nanmean(j_raw[:n]))
    curves = None
    if truth_file:
        from .demo import DEMO_TRUTH

        truth, _ = h5io.read(truth_file, DEMO_TRUTH)
        try:
            scores = dg.rotation_vs_truth(track.camera, track.valid, truth["rotation"])
        except ValueError as e:
            raise InputError(truth_file, str(e)) from None
        curves = scores.pop("curves")
        summary["truth"] = {"file": str(truth_file), **scores}
        log.info("%s head rotation vs the known motion: RMS %s deg, correlation %s", video,
                 {k: round(v, 2) for k, v in scores["rms_deg"].items()}, {k: round(v, 3) for k, v in scores["correlation"].items()})
    dg.tracking_figure(nme, j_raw, j_fit, j_unsmoothed, fps, outs["tracking_png"], f"{video}: fitted model vs detector (NME mean {100 * summary['nme_mean']:.2f}%, jitter ratio {summary['jitter_ratio']:.2f})",
                       truth=curves)
    info = read_probe(probe_json)
    # the fitted face's outlines over the 478 fitted landmark points (every model places them)
    write_mp4(outs["overlay_mp4"], dg.overlay_frames(iter_frames(video_path, 0, None, info), fitted[..., :2], det, valid, dg.outline_edges()), fps)
    write_json(outs["json"], summary)
    log.info("%s diagnostics: %s", video, summary)
    return summary


# ---------------------------------------------------------------------------------- rendering-to-video


def gan_settings(gan_cfg: dict, render_cfg: dict):
    """Training settings: the ``gan`` section at the frame size of the conditioning renders."""
    from .gan.train import TrainSettings

    return TrainSettings.at_render_size(gan_cfg, render_cfg)


def gan_flow(video_path, conditioning_file, out, gan_cfg: dict, render_cfg: dict):
    from .gan.flow import write_flow_file
    from .render import open_conditioning

    settings = gan_settings(gan_cfg, render_cfg)
    f, _, boxes = open_conditioning(conditioning_file)
    f.close()
    write_flow_file(video_path, out, settings.size, preset=settings.flow_preset, boxes=boxes)
    log.info("optical flow of %s at %s cached in %s", video_path, settings.size, out)


def gan_train(conditioning_file, flow_file, generator_out, losses_png, gan_cfg: dict, render_cfg: dict, threads: int):
    """Train (or resume) the generator of one target, holding the target's training lock throughout.

    The run folder ``train-<fingerprint>/`` beside the generator is named by the settings and the content hashes
    of the conditioning and flow files: a killed run resumes there, while changed settings or changed inputs
    (anything upstream) start a new run; the folders of superseded runs are removed."""
    import shutil

    from .files import atomic_path
    from .gan.train import LOCK_NAME, TrainingLock, input_digests, remove_superseded_runs, train_from_files
    from .needs import check_training_frames
    from .render import open_conditioning

    settings = gan_settings(gan_cfg, render_cfg)
    with open_conditioning(conditioning_file, settings.streams)[0] as fc:
        check_training_frames(str(conditioning_file), len(fc[settings.streams[0]]), settings.to_dict())
    if not settings.threads:
        from dataclasses import replace

        settings = replace(settings, threads=threads)
    gan_dir = Path(generator_out).parent
    with TrainingLock(gan_dir / LOCK_NAME, "the training of this target"):
        inputs = input_digests(conditioning_file, flow_file)
        run_dir = gan_dir / f"train-{settings.fingerprint(inputs)}"
        log.info("run folder %s (conditioning sha256 %s, flow sha256 %s)", run_dir, inputs["conditioning"], inputs["flow"])
        remove_superseded_runs(gan_dir, keep=run_dir)
        train_from_files(conditioning_file, flow_file, settings, run_dir, generator_out, inputs=inputs)
        with atomic_path(losses_png) as tmp:
            shutil.copyfile(run_dir / "losses.png", tmp)


def gan_synthesize(generator, conditioning_file, transfer_file, source_video, source_probe, target_video, target_probe,
                   target_conditioning, out_mp4, side_mp4, composite_cfg: dict | None = None):
    """The re-enactment: G over the pair's conditioning, each crop composited into the target's own full-resolution
    frame (deep_puppets.reenactment), at the target's size and rate, as long as the source, with the source's
    audio; and the preview source | conditioning | output crop."""
    from .framing import frame_box
    from .ingest import read_probe
    from .reenactment import CompositeSettings, write_reenactment
    from .transfer import read_transfer

    src, tgt = read_probe(source_probe), read_probe(target_probe)
    transfer, attrs = read_transfer(transfer_file)
    with h5io.open_file(conditioning_file) as f:
        if len(f["valid"]) != len(transfer.valid):
            raise InputError(conditioning_file, f"has {len(f['valid'])} frames, its transfer {transfer_file} {len(transfer.valid)}")
    return write_reenactment(generator, conditioning_file, target_conditioning, source_video, src, target_video, tgt, out_mp4,
                             side_mp4, str(attrs["mode"]), transfer.target_pose_frame, CompositeSettings.from_config(composite_cfg),
                             source_box=frame_box(src.width, src.height))


# --------------------------------------------------------------------------------------------- reports


def evaluate_target(generator, conditioning_file, flow_file, track_file, video_path, probe_json, outs: dict, composite_cfg: dict,
                    device: str = "auto"):
    """Held-out self-reenactment at full resolution (:mod:`deep_puppets.gan.held_out`): the GAN and the
    baselines pasted over the real held-out frames, scored over the whole frame, the head crop and the face mask
    — per-frame CSV, summary JSON, E_col plot, seam figure, heat-map and side-by-side videos of the head crop."""
    from . import evaluation as ev
    from .files import atomic_path, write_json
    from .gan.data import crop_resize, split_frames
    from .gan.flow import open_flow_file
    from .gan.held_out import METHODS, held_out_composites
    from .gan.train import load_generator, resolve_device
    from .ingest import read_probe
    from .render import open_conditioning
    from .tracks import read_track
    from .mp4_writer import Mp4Feed
    from .video import iter_frames

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
    import pandas as pd

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


def report_page(out_dir, videos, pairs: list[dict], targets, exports=()) -> str:
    """The browser report folder ``{results}/report`` (:mod:`deep_puppets.report_page`): index.html with every
    figure, table and video of the run, and download links to the exports (files under results)."""
    from .report_page import Pair, write_report

    results = Path(out_dir).parent
    rel_exports = [str(Path(e).relative_to(results)) for e in exports]
    index = write_report(results, out_dir, list(videos), [Pair(p["name"], p["source"], p["target"], p["mode"]) for p in pairs],
                         list(targets), rel_exports)
    log.info("report written to %s", index)
    return str(index)


def video_pages(mp4s: dict, pages: dict) -> None:
    """Each video of ``mp4s`` (name -> mp4) wrapped in the HTML page ``pages[name]`` that plays it inline (for
    Snakemake's report)."""
    from .report_page import video_page

    for name, mp4 in mp4s.items():
        video_page(mp4, pages[name], f"{Path(mp4).parents[1].name}: {Path(mp4).stem.replace('_', ' ')}")


# -------------------------------------------------------------------------------------------------- export


def export_animation(model_cfg, model_file, kind: str, name: str, data_file):
    """The face to export: a video's track (``kind`` 'videos') or a pair's transfer ('pairs'), with its model."""
    from .export import pair_animation, video_animation

    model = load_video_model(model_cfg, model_file)
    return video_animation(data_file, model) if kind == "videos" else pair_animation(data_file, model, name)


def export_face(model_cfg, model_file, kind: str, name: str, data_file, outs: dict):
    """glTF (.glb) and parameter CSV + JSON of one video or pair."""
    from .export import write_face_exports

    write_face_exports(export_animation(model_cfg, model_file, kind, name, data_file), outs["glb"], outs["csv"], outs["json"])


def export_arkit(model_cfg, model_file, kind: str, name: str, data_file, out):
    """Live Link Face–style ARKit CSV (ICT model only)."""
    from .export import write_arkit_csv

    anim = export_animation(model_cfg, model_file, kind, name, data_file)
    write_arkit_csv(out, anim)
    log.info("%s: ARKit CSV of %d frames -> %s", name, anim.n_frames, out)


def export_meshes(model_cfg, model_file, kind: str, name: str, data_file, out, fmt: str):
    """One OBJ or PLY file per frame (``export.meshes``)."""
    from .export import write_mesh_sequence

    write_mesh_sequence(out, export_animation(model_cfg, model_file, kind, name, data_file), fmt)
