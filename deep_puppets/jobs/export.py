"""Jobs of the export stage: a video's track or a pair's transfer, with its model, as glTF, parameter tables,
an ARKit CSV or a mesh sequence."""

from __future__ import annotations

import logging

from ..export import (
    pair_animation,
    video_animation,
    write_arkit_csv,
    write_face_exports,
    write_mesh_sequence,
)
from .model import load_video_model

log = logging.getLogger(__package__)


def _animation(model_cfg: dict, model_file, kind: str, name: str, data_file):
    """The face to export: a video's track (``kind`` 'videos') or a pair's transfer ('pairs'), with its model."""
    model = load_video_model(model_cfg, model_file)
    return video_animation(data_file, model) if kind == "videos" else pair_animation(data_file, model, name)


def export_face(*, model_cfg: dict, model_file, kind: str, name: str, data_file, outs: dict) -> None:
    """glTF (.glb) and parameter CSV + JSON of one video or pair."""
    write_face_exports(_animation(model_cfg, model_file, kind, name, data_file), outs["glb"], outs["csv"], outs["json"])


def export_arkit(*, model_cfg: dict, model_file, kind: str, name: str, data_file, out) -> None:
    """Live Link Face–style ARKit CSV (ICT model only)."""
    anim = _animation(model_cfg, model_file, kind, name, data_file)
    write_arkit_csv(out, anim)
    log.info("%s: ARKit CSV of %d frames -> %s", name, anim.n_frames, out)


def export_meshes(*, model_cfg: dict, model_file, kind: str, name: str, data_file, out, fmt: str) -> None:
    """One OBJ or PLY file per frame (``export.meshes``)."""
    write_mesh_sequence(out, _animation(model_cfg, model_file, kind, name, data_file), fmt)
