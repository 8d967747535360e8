"""Rendering a whole fitted sequence: a :class:`~deep_puppets.render.conditioning_file.Frame` per frame
(:func:`render_sequence`), or streamed into a ``conditioning`` HDF5 file (:func:`write_conditioning`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..files import json_text
from .conditioning_file import DEFAULT_ENCODER, ConditioningWriter, Frame
from .gl import Renderer


def _per_frame(x, t: int, name: str, item_ndim: int):
    """``x`` given once (item_ndim dims) or per frame (item_ndim + 1 dims, length t) → a per-frame getter."""
    if x is None:
        return lambda i: None
    x = np.asarray(x)
    if x.ndim == item_ndim:
        return lambda i: x
    if x.ndim == item_ndim + 1 and len(x) == t:
        return lambda i: x[i]
    raise ValueError(f"{name} has shape {x.shape}: expected one item or {t} of them")


def render_sequence(renderer: Renderer, vertices: np.ndarray, boxes, sh=None, eye_points=None) -> Iterator[Frame]:
    """Yield a :class:`~.conditioning_file.Frame` per frame of ``vertices`` (T, N, 3).

    ``boxes`` (4,) or (T, 4); ``sh`` None, (9, 3) or (T, 9, 3); ``eye_points`` None or (T, P, ≥2).
    """
    t = len(vertices)
    box_of = _per_frame(boxes, t, "boxes", 1)
    sh_of = _per_frame(sh, t, "sh", 2)
    eyes_of = _per_frame(eye_points, t, "eye_points", 2)
    for i in range(t):
        yield renderer.render(vertices[i], box_of(i), sh_of(i), eyes_of(i))


def write_conditioning(
    path,
    renderer: Renderer,
    vertices: np.ndarray,
    boxes,
    *,
    frame_index: np.ndarray | None = None,
    sh=None,
    eye_points=None,
    source: str = "",
    framing: str = "null",
    compression: str = "gzip",
    encoder: str = DEFAULT_ENCODER,
    level: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render ``vertices`` (T, N, 3) and stream the frames into a ``conditioning`` HDF5 file at ``path``.

    ``boxes`` (4,) or (T, 4) crop boxes; ``framing``: JSON of the settings they were made with
    (:meth:`deep_puppets.framing.FramingSettings.to_json`), ``"null"`` when the caller chose them.
    ``compression``, ``encoder`` and ``level`` as :class:`ConditioningWriter` takes them; ``progress(n_done)``
    is called after every frame (e.g. :class:`deep_puppets.progress.ProgressLog`).
    """
    t = len(vertices)
    frame_index = np.arange(t) if frame_index is None else np.asarray(frame_index)
    if frame_index.shape != (t,):
        raise ValueError(f"frame_index has shape {frame_index.shape}, expected ({t},)")
    box_of = _per_frame(boxes, t, "boxes", 1)
    attrs = {
        "renderer": renderer.gl_renderer,
        "settings": json_text(renderer.settings(), sort_keys=True),
        "source": source,
        "framing": framing,
    }
    with ConditioningWriter(path, t, renderer.size, attrs, compression, level, encoder=encoder) as out:
        for i, frame in enumerate(render_sequence(renderer, vertices, boxes, sh, eye_points)):
            out.append(frame, frame_index[i], box_of(i))
            if progress is not None:
                progress(i + 1)
    return Path(path)
