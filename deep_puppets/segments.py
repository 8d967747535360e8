"""Cutting a video into overlapping segments, one job each.

Segments exist for parallelism only (the fit's memory is linear in frames): consecutive segments share
``overlap`` frames so that the merge can join them without a seam. Every segment is at most ``length`` frames
long; segments are spread evenly, so the last one is never a stub. The *core* ranges (each segment minus half
of each overlap) partition ``[0, n_frames)``: every frame belongs to exactly one core.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # first frame (overlap included)
    stop: int  # one past the last frame
    core_start: int  # first frame this segment owns
    core_stop: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs) -> Segment:
        """The segment of a file's attributes (``segment``, ``start``, ``stop``, ``core_start``, ``core_stop``)."""
        return cls(int(attrs["segment"]), int(attrs["start"]), int(attrs["stop"]), int(attrs["core_start"]), int(attrs["core_stop"]))


def plan_segments(n_frames: int, length: int, overlap: int) -> list[Segment]:
    """Segments of at most ``length`` frames sharing ``overlap`` frames with their neighbours."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if length < 2:
        raise ValueError(f"segment length must be >= 2, got {length}")
    if not 0 <= overlap < length:
        raise ValueError(f"overlap must be in [0, length), got {overlap} with length {length}")
    if n_frames <= length:
        return [Segment(0, 0, n_frames, 0, n_frames)]
    step = length - overlap
    n_seg = math.ceil((n_frames - overlap) / step)
    bounds = [round(k * (n_frames - overlap) / n_seg) for k in range(n_seg + 1)]
    half = overlap // 2
    segs = []
    for k in range(n_seg):
        start, stop = bounds[k], min(bounds[k + 1] + overlap, n_frames)
        core_start = 0 if k == 0 else bounds[k] + half
        core_stop = n_frames if k == n_seg - 1 else bounds[k + 1] + half
        segs.append(Segment(k, start, stop, core_start, core_stop))
    return segs
