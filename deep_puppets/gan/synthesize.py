"""Synthesis: run a trained generator over a sequence of conditioning frames, write videos, compare side by side.

The conditioning window of frame ``t`` is assembled exactly as in training (:func:`~.data.window_indices`,
padded by repeating the sequence's first frame). With ``prev_frames > 0`` the frames are generated in order and
the previous outputs are fed back, zeros before the first one — as at the start of a training clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..mp4_writer import write_mp4
from .data import resize, stack_window, window_indices
from .train import TrainSettings, load_generator, resolve_device


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] → ``(H, W, 3)`` uint8."""
    return (img.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def generate(G: torch.nn.Module, conditioning: Mapping[str, object], frames: Sequence[int], settings: TrainSettings,
             device: str | torch.device = "cpu", first: int = 0, batch_size: int = 8) -> Iterator[np.ndarray]:
    """Yield the generated frame ``(H, W, 3)`` uint8 at the training size for each index in ``frames`` (in order).

    ``conditioning``: stream -> (T, H', W', 3) uint8 array-likes (any size: resized to ``settings.size``);
    ``first``: the sequence's first frame (window padding repeats it).
    """
    device = torch.device(device)
    s = settings
    was_training = G.training
    G.eval()
    try:
        def cond(t):
            return stack_window(conditioning, s.streams, window_indices(int(t), s.window, first), s.size)

        if s.prev_frames == 0:
            for i in range(0, len(frames), batch_size):
                x = torch.from_numpy(np.stack([cond(t) for t in frames[i:i + batch_size]])).to(device)
                for y in G(x):
                    yield to_uint8(y)
        else:
            prev = [torch.zeros((1, 3) + tuple(s.size), device=device)] * s.prev_frames
            for t in frames:
                x = torch.from_numpy(cond(t)[None]).to(device)
                y = G(torch.cat([x, *prev], 1))
                prev = prev[1:] + [y]
                yield to_uint8(y[0])
    finally:
        G.train(was_training)


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
    from ..render import open_conditioning

    _, s = load_generator(generator_path)
    with open_conditioning(conditioning_path, s.streams)[0] as f:  # a corrupted chunk names the file
        return synthesize_video(generator_path, {n: f[n] for n in s.streams}, out_path, fps, out_size=out_size, device=device)


def side_by_side(streams: Sequence[Iterable[np.ndarray]], height: int | None = None,
                 labels: Sequence[str] | None = None) -> Iterator[np.ndarray]:
    """Zip image streams and stack each group horizontally; every image is resized to ``height`` (default: the
    first stream's height) keeping its aspect ratio, then labelled with its stream's entry of ``labels`` (text on
    a dark strip at the panel's top). Grey images become RGB. Stops at the shortest stream."""
    from ..annotate import label_panels

    for group in zip(*streams):
        group = [np.repeat(g[:, :, None], 3, 2) if g.ndim == 2 else g for g in (np.asarray(g) for g in group)]
        h = height or group[0].shape[0]
        panels = [resize(g, (h, max(1, round(g.shape[1] * h / g.shape[0])))) for g in group]
        yield np.hstack(label_panels(panels, labels) if labels else panels)


def write_side_by_side(out_path, streams: Sequence[Iterable[np.ndarray]], fps: float, height: int | None = None,
                       labels: Sequence[str] | None = None) -> int:
    return write_mp4(Path(out_path), side_by_side(streams, height, labels), fps)
