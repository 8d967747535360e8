"""Job of the texture stage: a video's albedo and spherical-harmonics lighting, from its frames and track."""

from __future__ import annotations

import logging

import numpy as np

from .. import h5io
from ..errors import InputError
from ..files import json_text
from ..fit_files import check_model
from ..ingest import read_probe
from ..mesh import vertex_normals_float64
from ..texture.albedo import estimate_albedo_and_lighting
from ..texture.texture_file import TEXTURE
from ..texture.visibility import visible_vertices
from ..tracks import read_track
from ..video import iter_frames
from .model import ScreenVertices, load_video_model

log = logging.getLogger(__package__)


def texture(*, model_cfg: dict, model_file, track_file, video_path, probe_json, out, n_frames: int, smooth: float) -> None:
    """Albedo and SH lighting from up to ``n_frames`` frames with a face (config section ``texture``)."""
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
    normals = vertex_normals_float64(verts, model.triangles)
    visible = visible_vertices(verts, normals, model.triangles, (info.height, info.width))
    albedo, sh, stats = estimate_albedo_and_lighting(frames, verts[..., :2], normals, visible, triangles=model.triangles, n_frames=len(good), smooth=smooth)
    h5io.write(
        out,
        TEXTURE,
        {"albedo": albedo, "sh": sh},
        {"video": attrs["video"], "model_hash": model.content_hash(), "frames": json_text(good.tolist()), "stats": json_text(stats, default=float)},
    )
    log.info("%s: albedo + SH lighting from %d frames: %s", attrs["video"], len(good), stats)
