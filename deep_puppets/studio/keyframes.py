"""Keyframed edits over a clip: checked keyframes (:func:`parse_keyframes`) and the edits of every frame between
them (:func:`interpolate`), each control eased from one keyframe's value to the next with a smoothstep
(``3u² − 2u³``: no jump in speed at a keyframe), held before the first and after the last. A control a keyframe
leaves out counts as 0 there (as tracked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..tracks import smoothstep
from .results import StudioError

MAX_KEYFRAMES = 1000


def parse_keyframes(keyframes: Sequence[Mapping], n_frames: int, check_edits) -> list[tuple[int, dict[str, float]]]:
    """``[(frame, edits)]`` sorted by frame from ``[{"frame": int, "edits": {name: value}}, ...]``; ``check_edits``
    (e.g. :meth:`~.controls.ControlSet.check`) validates each keyframe's edits. StudioError on anything wrong."""
    if not isinstance(keyframes, Sequence) or isinstance(keyframes, (str, bytes)) or not keyframes:
        raise StudioError("keyframes", "need a list of at least one {frame, edits}")
    if len(keyframes) > MAX_KEYFRAMES:
        raise StudioError("keyframes", f"{len(keyframes)} keyframes: at most {MAX_KEYFRAMES}")
    out = {}
    for i, k in enumerate(keyframes):
        if not isinstance(k, Mapping) or "frame" not in k:
            raise StudioError("keyframes", f"keyframe {i} is not a {{frame, edits}} mapping")
        f = k["frame"]
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not 0 <= int(f) < n_frames:
            raise StudioError("keyframes", f"keyframe {i}: frame {f!r} is not a frame 0…{n_frames - 1}")
        if int(f) in out:
            raise StudioError("keyframes", f"keyframe {i}: frame {int(f)} has a keyframe already")
        out[int(f)] = check_edits(k.get("edits") or {}, f"keyframe {i}")
    return sorted(out.items())


def interpolate(keys: Sequence[tuple[int, Mapping[str, float]]], frames: Sequence[int]) -> list[dict[str, float]]:
    """The edits at each of ``frames`` (see the module docstring); zero values left out."""
    names = sorted({n for _, e in keys for n in e})
    at = np.array([f for f, _ in keys], float)
    table = np.array([[e.get(n, 0.0) for n in names] for _, e in keys], float).reshape(len(keys), len(names))
    out = []
    for t in frames:
        j = int(np.searchsorted(at, t, side="right"))  # keys[j-1].frame <= t < keys[j].frame
        if j == 0:
            row = table[0]
        elif j == len(at):
            row = table[-1]
        else:
            w = float(smoothstep((t - at[j - 1]) / (at[j] - at[j - 1])))
            row = (1 - w) * table[j - 1] + w * table[j]
        out.append({n: float(v) for n, v in zip(names, row) if v != 0.0})
    return out
