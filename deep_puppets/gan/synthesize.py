"""Synthesis: a trained generator's frames written as videos (mp4, optionally resized), side-by-side comparisons.

The frames come from :func:`~.inference.generate` (the conditioning windows assembled exactly as in training).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..annotate import label_panels
from ..mp4_writer import write_mp4
from ..render.conditioning_file import open_conditioning
from .data import resize
from .inference import generate, load_generator, resolve_device


def synthesize_video(generator_path, conditioning: Mapping[str, object], out_path, fps: float,
                     frames: Sequence[int] | None = None, out_size: tuple[int, int] | None = None,
                     device: str = "auto") -> int:
    """Generate frames (all by default) with the generator file and write them as an H.264 mp4.

    ``out_size = (height, width)`` resizes the output (e.g. back to the video's size). Returns the frame count.
    """
    dev = resolve_device(device)
    G, s = load_generator(generator_path, dev)
    n = len(next(iter(conditioning.values())))
    frames = range(n) if frames is None else frames
    first = int(frames[0]) if len(frames) else 0
    out = generate(G, conditioning, frames, s, dev, first=first)
    if out_size is not None:
        out = (resize(f, tuple(out_size)) for f in out)
    return write_mp4(out_path, out, fps)


def synthesize_from_files(generator_path, conditioning_path, out_path, fps: float, out_size=None,
                          device: str = "auto") -> int:
    """:func:`synthesize_video` on a conditioning HDF5 file (datasets named like the generator's streams)."""
    _, s = load_generator(generator_path)
    with open_conditioning(conditioning_path, s.streams)[0] as f:  # a corrupted chunk names the file
        return synthesize_video(generator_path, {n: f[n] for n in s.streams}, out_path, fps, out_size=out_size, device=device)


def side_by_side(streams: Sequence[Iterable[np.ndarray]], height: int | None = None,
                 labels: Sequence[str] | None = None) -> Iterator[np.ndarray]:
    """Zip image streams and stack each group horizontally; every image is resized to ``height`` (default: the
    first stream's height) keeping its aspect ratio, then labelled with its stream's entry of ``labels`` (text on
    a dark strip at the panel's top). Grey images become RGB. Stops at the shortest stream."""
    for group in zip(*streams):
        group = [np.repeat(g[:, :, None], 3, 2) if g.ndim == 2 else g for g in (np.asarray(g) for g in group)]
        h = height or group[0].shape[0]
        panels = [resize(g, (h, max(1, round(g.shape[1] * h / g.shape[0])))) for g in group]
        yield np.hstack(label_panels(panels, labels) if labels else panels)


def write_side_by_side(out_path, streams: Sequence[Iterable[np.ndarray]], fps: float, height: int | None = None,
                       labels: Sequence[str] | None = None) -> int:
    return write_mp4(Path(out_path), side_by_side(streams, height, labels), fps)
