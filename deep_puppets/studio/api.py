"""The studio's JSON requests and replies, without HTTP: what the browser may send, checked against the engine's
own lists, and what it gets back.

Nothing the browser sends names a file. Targets, pairs and controls are accepted only by exact membership in the
lists the engine made (:class:`StudioInfo`); a name that is not a plain name (letters, digits, ``_ . -``, no
``/``) is refused before it is even looked up. Frame indices, edit values and keyframe counts are bounded
(:data:`MAX_REQUEST_KEYFRAMES`, each control's own slider range); every problem is a :class:`RequestError` whose message
is one line (HTTP 400). Images leave as PNG data URLs (:func:`png_data_url`, fast compression).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_BODY = 64 * 1024  # bytes of a request body; more is refused with 413 before it is read
MAX_REQUEST_KEYFRAMES = 200
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # targets, pairs, controls: never a path
PNG_COMPRESSION = 1  # cv2.IMWRITE_PNG_COMPRESSION: fast (a 256² frame in ~3 ms, ~150 KB)


class RequestError(ValueError):
    """A bad request from the browser: one line, answered with ``status`` (400 unless said)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class StudioInfo:
    """What the page needs to know about the open target, read from the engine once (on its thread)."""

    target: str
    targets: list[str]
    n_frames: int
    fps: float
    size: int
    has_generator: bool
    controls: list[dict]  # Control.to_json() of each
    pairs: list[dict]  # {"name", "n_frames"}
    train_command: str = ""
    control_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_engine(cls, engine, results_dir) -> StudioInfo:
        controls = [c.to_json() for c in engine.controls()]
        return cls(target=engine.target, targets=list(engine.targets), n_frames=int(engine.n_frames), fps=float(engine.fps),
                   size=int(engine.size), has_generator=bool(engine.has_generator), controls=controls,
                   pairs=[{"name": str(p["name"]), "n_frames": int(p["n_frames"])} for p in engine.pairs()],
                   train_command=train_command(results_dir, engine.target),
                   control_ranges={c["name"]: (float(c["minimum"]), float(c["maximum"])) for c in controls})

    def to_json(self) -> dict:
        return {"target": self.target, "targets": self.targets, "n_frames": self.n_frames, "fps": self.fps, "size": self.size,
                "has_generator": self.has_generator, "controls": self.controls, "pairs": self.pairs,
                "train_command": self.train_command, "max_keyframes": MAX_REQUEST_KEYFRAMES}


def train_command(results_dir, target: str) -> str:
    """The command that trains ``target``'s generator: ``deep-puppets run DIR`` for an output folder of
    ``deep-puppets reenact`` (its config beside the results), else the Snakemake target of rule gan_train."""
    results = Path(results_dir)
    if (results.parent / "config.yaml").is_file():
        return f"deep-puppets run {results.parent}"
    return f"snakemake --cores all {results.name}/videos/{target}/gan/generator.pt   (in the folder holding {results.name}/)"


def plain_name(value, what: str) -> str:
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
        shown = repr(value)[:60]
        raise RequestError(f"{what} {shown} is not a name (letters, digits, '_', '.', '-'; no paths)")
    return value


def member(value, names, what: str) -> str:
    """``value`` if it is one of ``names`` (the engine's own list), else a one-line error listing a few."""
    name = plain_name(value, what)
    names = list(names)
    if name not in names:
        few = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise RequestError(f"unknown {what} {name!r} (known: {few or 'none'})")
    return name


def bounded_int(value, what: str, n: int) -> int:
    """An integer in 0..n-1 (bools and floats with a fraction refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float) and not value.is_integer()):
        raise RequestError(f"{what} must be an integer, not {str(value)[:40]!r}")
    if not 0 <= value < n:
        raise RequestError(f"{what} {int(value)} is outside 0..{n - 1}")
    return int(value)


def edits_of(value, info: StudioInfo) -> dict[str, float]:
    """``{control: offset}`` checked: known controls, finite numbers inside each control's slider range."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError("edits must be an object {control: value}")
    if len(value) > len(info.control_ranges):
        raise RequestError(f"{len(value)} edits for {len(info.control_ranges)} controls")
    out = {}
    for name, v in value.items():
        name = member(name, info.control_ranges, "control")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise RequestError(f"edit {name!r} must be a finite number, not {str(v)[:40]!r}")
        lo, hi = info.control_ranges[name]
        if not lo - 1e-9 <= v <= hi + 1e-9:
            raise RequestError(f"edit {name!r} = {v:g} is outside its range {lo:g}..{hi:g}")
        out[name] = float(v)
    return out


def _object(body, keys: set[str]) -> Mapping:
    if not isinstance(body, Mapping):
        raise RequestError("the request must be a JSON object")
    extra = sorted(set(body) - keys)
    if extra:
        raise RequestError(f"unknown field {extra[0]!r} (expected: {', '.join(sorted(keys))})")
    return body


def parse_frame(body, info: StudioInfo) -> tuple[int, dict[str, float], str | None]:
    """``(t, edits, pair)`` of a ``POST /api/frame`` body ``{frame, edits, pair, target}``: ``t`` indexes the
    pair's frames when ``pair`` is set, else the target's."""
    body = _object(body, {"frame", "edits", "pair", "target"})
    if body.get("target") is not None and body["target"] != info.target:
        raise RequestError(f"the studio now shows target {info.target!r}, not {str(body['target'])[:40]!r}: reload the page", 409)
    pair = body.get("pair")
    n = info.n_frames
    if pair is not None and pair != "":
        pair = member(pair, [p["name"] for p in info.pairs], "pair")
        n = next(p["n_frames"] for p in info.pairs if p["name"] == pair)
    else:
        pair = None
    if "frame" not in body:
        raise RequestError("missing field 'frame'")
    return bounded_int(body["frame"], "frame", n), edits_of(body.get("edits"), info), pair


def parse_export(body, info: StudioInfo) -> list[dict]:
    """The keyframes of a ``POST /api/export`` body ``{keyframes: [{frame, edits}, ...], target}``: 1 to
    :data:`MAX_REQUEST_KEYFRAMES`, target frames, distinct, sorted."""
    body = _object(body, {"keyframes", "target"})
    if body.get("target") is not None and body["target"] != info.target:
        raise RequestError(f"the studio now shows target {info.target!r}: reload the page", 409)
    keyframes = body.get("keyframes")
    if not isinstance(keyframes, list) or not keyframes:
        raise RequestError("keyframes must be a non-empty list of {frame, edits}")
    if len(keyframes) > MAX_REQUEST_KEYFRAMES:
        raise RequestError(f"{len(keyframes)} keyframes: at most {MAX_REQUEST_KEYFRAMES}")
    out = {}
    for k in keyframes:
        k = _object(k, {"frame", "edits"})
        t = bounded_int(k.get("frame"), "keyframe frame", info.n_frames)
        if t in out:
            raise RequestError(f"two keyframes at frame {t}")
        out[t] = {"frame": t, "edits": edits_of(k.get("edits"), info)}
    return [out[t] for t in sorted(out)]


def png_data_url(image) -> str:
    """An RGB uint8 image (H, W, 3) as a ``data:image/png;base64,...`` URL."""
    import cv2
    import numpy as np

    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {a.dtype} {a.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def frame_reply(frame, t: int, pair: str | None, ms: float) -> dict:
    """The ``POST /api/frame`` reply for a :class:`~deep_puppets.studio.engine.StudioFrame`."""
    return {"frame": t, "pair": pair, "conditioning": png_data_url(frame.conditioning),
            "generated": None if frame.generated is None else png_data_url(frame.generated),
            "out_of_range": list(frame.out_of_range), "values": {k: float(v) for k, v in frame.values.items()}, "ms": round(ms, 1)}
