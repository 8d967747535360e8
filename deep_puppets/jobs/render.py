"""Jobs of the render stage: the conditioning frames (colour, correspondence, gaze) of a target's own track and
of a pair's transfer, each in its crop box (:mod:`deep_puppets.framing`, config section ``framing``)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from .. import h5io
from ..errors import InputError
from ..fit_files import check_model
from ..framing import FramingSettings, fit_boxes
from ..named_expressions import NAMED_EXPRESSIONS
from ..progress import ProgressLog
from ..render.conditioning_file import write_previews
from ..render.gl import Renderer
from ..render.sequence import write_conditioning
from ..texture.texture_file import TEXTURE
from ..tracks import read_track
from ..transfer_files import read_transfer
from .model import LandmarkPoints, ScreenVertices, load_video_model

log = logging.getLogger(__package__)

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


def render_track(*, model_cfg: dict, model_file, track_file, texture_file, out, previews: dict, render_cfg: dict, framing_cfg: dict | None = None) -> None:
    """Conditioning frames of a target's own track; the crop boxes follow the track's head."""
    model = load_video_model(model_cfg, model_file)
    fit, attrs = read_track(track_file)
    check_model(attrs, model, track_file)
    _render(model, fit, attrs, track_file, texture_file, out, previews, render_cfg, "track", framing_cfg)


def render_pair(*, model_cfg: dict, model_file, transfer_file, texture_file, out, previews: dict, render_cfg: dict, framing_cfg: dict | None = None) -> None:
    """Conditioning frames of a pair's transfer onto the target's model; the crop boxes follow the transferred head
    (the source's motion in pose+expression mode)."""
    model = load_video_model(model_cfg, model_file)
    result, attrs = read_transfer(transfer_file)
    if attrs["target_model_hash"] != model.content_hash():
        raise InputError(transfer_file, "was transferred onto a different model than the target's")
    if json.loads(attrs["named_expressions"]) != list(NAMED_EXPRESSIONS):
        raise InputError(transfer_file, f"names other named expressions than {list(NAMED_EXPRESSIONS)}: transfer it again")
    _render(model, result.to_fit(), attrs, transfer_file, texture_file, out, previews, render_cfg, "transfer", framing_cfg, result.named)


def render_cross(*, model_cfg: dict, model_file, track_file, texture_file, texture_model_file, out, previews: dict, render_cfg: dict,
                 framing_cfg: dict | None = None) -> None:  # fmt: skip
    """Conditioning frames of one recording's own track (cross-recording self-reenactment,
    :mod:`deep_puppets.cross_recording`) drawn with the texture of another recording of the same person — the
    generator's training recording, whose model ``texture_model_file`` must have the same mesh (vertices and
    triangles) — so that nothing of the scored recording's appearance reaches the conditioning."""
    model = load_video_model(model_cfg, model_file)
    fit, attrs = read_track(track_file)
    check_model(attrs, model, track_file)
    texture_model = load_video_model(model_cfg, texture_model_file)
    if texture_model.n_vertices != model.n_vertices or not np.array_equal(texture_model.triangles, model.triangles):
        raise InputError(texture_model_file, f"has another mesh than {model_file}: its texture cannot be drawn on that model")
    _render(model, fit, attrs, track_file, texture_file, out, previews, render_cfg, "cross-recording", framing_cfg, texture_model=texture_model)


def _render(model, fit, attrs: dict, params_file, texture_file, out, previews: dict, render_cfg: dict, kind: str, framing_cfg: dict | None,
            named=None, texture_model=None) -> None:  # fmt: skip
    """Render ``fit`` (of ``params_file``, a track or a transfer: ``kind``) with the texture (estimated on
    ``texture_model``, by default ``model``, the same mesh); write the conditioning file and its preview videos."""
    width, height, fps = attrs["width"], attrs["height"], attrs["fps"]
    tex, tex_attrs = h5io.read(texture_file, TEXTURE)
    if tex_attrs["model_hash"] != (texture_model or model).content_hash():
        raise InputError(texture_file, "belongs to a different model than the one rendered")
    screen = ScreenVertices(model, fit.p, fit.q, fit.camera, named)
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
