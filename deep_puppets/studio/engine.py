"""The studio engine: one target of a results folder opened once (model, track, texture, a persistent renderer
with the settings and crop boxes of the target's own conditioning file, the trained generator), and per request
the edited frame's conditioning render and generated frame (:meth:`StudioEngine.frame`) or a keyframed clip
composited into the target's video (:meth:`StudioEngine.export_clip`).

**The generator's window.** The generator's input for frame ``t`` stacks the conditioning of frames
``t-L+1 … t`` (:mod:`deep_puppets.gan.data`). The studio shows a still of frame ``t`` with an edit, so every frame
of the window is rendered from its own tracked (or transferred) parameters with the *same* edit applied: at a
zero edit the input is exactly the workflow's, and an edit looks as it would if the actor had held it over the
last ``L`` frames (no motion of the edit itself enters the window). With ``prev_frames > 0`` (fed-back outputs)
the frames ``t - prev_frames … t - 1`` are generated first, with the same edit, from zeros before the first
(as at the start of a clip), costing ``prev_frames`` more forward passes. The exported clip is generated frame by
frame in order by :func:`deep_puppets.gan.inference.generate`, exactly as the workflow's synthesis (windows padded
at the clip's first frame, previous outputs fed back).

**Compositing the export.** As the re-enactment (:mod:`deep_puppets.reenactment`) with the run's composite
settings (its config's ``composite`` section, :func:`~deep_puppets.studio.results.composite_settings`): the
generated crop pasted at the frame's crop box over the target's own full-resolution frame with the
soft face mask of the edited colour render; when a keyframe edits the head pose the target's own head region is
first replaced by its background plate (the pose+expression compositing). H.264 yuv420p +faststart at the
target's size and rate (:func:`deep_puppets.mp4_writer.write_mp4`, atomic). The clip of target frames ``a…b``
carries the target video's own sound from frame ``a``'s time on (its recorded time stamp, :func:`clip_audio`),
cut sample-exactly and ending with the clip, when the target video has an audio track.

**The generator's backend.** On CPU the generator's forward pass runs in ONNX Runtime by default
(``backend="auto"``, :mod:`.onnx_generator`): the loaded torch generator is exported once when the engine opens
(in memory, ~0.3 s), checked against the torch forward on a probe input (max abs difference ≤ 1e-4, else torch with
one log line saying why) and run with torch's thread count; about twice as fast as torch's eager forward on 2 cores
(benchmarks/studio.py). The stills and the exported clip both go through it. ``backend="torch"`` keeps torch (to
compare), ``"onnx"`` insists on ONNX Runtime (StudioError when it cannot be used); ``device="cuda"`` keeps torch.

Imports no training code (tests/test_structure.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import h5io
from ..framing import FramingSettings, fit_boxes
from ..gan.data import fill_boxes, resize, split_frames
from ..ingest import read_probe
from ..jobs.model import screen_vertices
from ..render.conditioning_file import STREAMS, open_conditioning
from ..render.gl import Renderer
from ..texture.texture_file import TEXTURE
from ..tracks import read_track
from .controls import Control, ControlSet, Params
from .keyframes import interpolate, parse_keyframes
from .onnx_generator import BACKENDS, onnx_forward
from .results import StudioError, choose_target, composite_settings, list_targets, load_target_model, pair_folders, resolve_video, target_files

__all__ = ["Control", "StudioEngine", "StudioError", "StudioFrame", "clip_audio"]

log = logging.getLogger(__name__)


@dataclass
class StudioFrame:
    """One edited frame: the colour conditioning render and the generated frame (crops, (H, W, 3) uint8; the
    generated one None without a generator), the controls out of the training range, the edited values."""

    conditioning: np.ndarray
    generated: np.ndarray | None
    out_of_range: list[str]
    values: dict[str, float]


@dataclass
class _Source:
    """The per-frame parameters a frame is rendered from: the target's track or a pair's transfer."""

    identity: np.ndarray  # (N, 3) model.shape(p)
    q: np.ndarray
    camera: np.ndarray
    named: np.ndarray | None
    box: np.ndarray  # (T, 4) crop boxes, finite

    def params(self, t: int) -> Params:
        named = None if self.named is None or not self.named[t].any() else self.named[t]
        return Params(self.q[t], self.camera[t], named)


class _LazyStream:
    """One conditioning stream (e.g. ``colour``) of frames rendered on first use: ``stream[t]`` is
    ``getattr(render(t), name)``, as :func:`deep_puppets.gan.inference.generate` reads a stream."""

    def __init__(self, render: Callable[[int], object], name: str):
        self.render, self.name = render, name

    def __getitem__(self, t):
        return getattr(self.render(int(t)), self.name)


def clip_audio(video, probe, first: int) -> dict:
    """:func:`deep_puppets.mp4_writer.write_mp4`'s audio arguments for a clip of ``video`` (probed as ``probe``)
    starting at its frame ``first``: its audio from that frame's time on (recorded time stamp, else
    ``first / fps``), or none when it has no audio track."""
    from ..mp4_writer import audio_codec
    from ..video import frame_time

    if audio_codec(video) is None:
        return {}
    return {"audio_from": video, "audio_start": max(0.0, frame_time(video, probe, first))}


class StudioEngine:
    """A target of a workflow results folder, opened once for interactive editing (see the module docstring).

    ``target`` None: the first target with a trained generator, else the only target; ``device``: torch device
    of the generator; ``model_cfg``: the config's ``model`` section for targets fitted with a configured model
    (ICT) when no ``config.yaml`` lies beside the results folder; ``backend``: the generator's forward pass in
    ``"torch"``, ``"onnx"`` (ONNX Runtime, CPU only) or ``"auto"`` (ONNX Runtime on CPU when its check passes, see
    the module docstring); :attr:`backend` is the one in use ("torch" or "onnx"; None without a generator).
    """

    def __init__(self, results_dir, target: str | None = None, device: str = "cpu", *, model_cfg: dict | None = None, backend: str = "auto"):
        if backend not in BACKENDS:
            raise StudioError("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
        self.results = Path(results_dir)
        if not self.results.is_dir():
            raise StudioError(self.results, "is not a folder")
        self.targets = list_targets(self.results)
        self.target = choose_target(self.results, target)
        self.files = files = target_files(self.results, self.target)
        self.device = device
        self.model = model = load_target_model(self.results, files, model_cfg)
        fit, attrs = read_track(files.track)
        if attrs["model_hash"] != model.content_hash():
            raise StudioError(files.track, f"was fitted with model {attrs.get('model')!r}, not the one found ({model.name!r})")
        self.fit, self.n_frames = fit, int(fit.n_frames)
        self.probe = read_probe(files.probe)
        self.fps = float(self.probe.fps)
        tex, tex_attrs = h5io.read(files.texture, TEXTURE)
        if tex_attrs["model_hash"] != model.content_hash():
            raise StudioError(files.texture, "belongs to a different model than the track's")
        self.sh = tex["sh"]
        f, valid, box = open_conditioning(files.conditioning, ("colour",))
        with f:
            settings = json.loads(f.attrs["settings"])
            self.framing = str(f.attrs["framing"])
        if len(valid) != self.n_frames:
            raise StudioError(files.conditioning, f"has {len(valid)} frames, the track {self.n_frames}: render it again")
        self.size = int(settings["size"][0])
        self._render_settings = settings
        self._albedo = tex["albedo"]
        self._identity = model.shape(fit.p)
        self._sources = {None: _Source(self._identity, fit.q, fit.camera, None, fill_boxes(box))}
        self.G, self.gs, self._net, self._onnx, self.backend = None, None, None, None, None
        if files.generator is not None:
            self._load_generator(files.generator, backend)
        held_out = self.gs.held_out_fraction if self.gs is not None else 0.0
        train = split_frames(self.n_frames, held_out)[0]
        train = train[fit.valid[train]] if fit.valid[train].any() else train
        self.train_frames = train
        self._controls = ControlSet(model, fit.p, fit.q[train], fit.camera[train])
        self._named_basis = getattr(self._controls, "B", None)
        self._pairs = pair_folders(self.results, self.target)
        self.renderer = self._new_renderer()  # last: nothing fails after it (close() releases it)
        self._lock = threading.Lock()  # one request at a time on the shared renderer (its GL context)

    def _new_renderer(self) -> Renderer:
        """A renderer with the settings the conditioning file records (StudioError when they cannot be matched)."""
        settings = self._render_settings
        r = Renderer.from_model(self.model, albedo=self._albedo, size=tuple(settings["size"]), subdivisions=int(settings["subdivisions"]),
                                nearer_z=settings.get("nearer_z", "smaller"), samples=int(settings.get("samples", 0)))  # fmt: skip
        mine = json.loads(json.dumps(r.settings()))
        if mine != settings:
            r.close()
            raise StudioError(self.files.conditioning, f"was rendered with settings {settings}, the studio's renderer has {mine}")
        return r

    def _load_generator(self, path, backend: str) -> None:
        import torch

        from ..gan.inference import load_generator

        self.G, self.gs = load_generator(path, self.device)
        self._torch = torch
        on_cpu = torch.device(self.device).type == "cpu"
        if backend == "onnx" and not on_cpu:
            raise StudioError("backend", f"onnx runs on the CPU only, not on device {self.device!r}")
        if backend != "torch" and on_cpu:
            self._onnx = onnx_forward(self.G, self.gs.in_channels, tuple(self.gs.size), name=f"{self.target}'s generator")
            if self._onnx is None and backend == "onnx":
                raise StudioError(path, "cannot run in ONNX Runtime (see the log line above); use backend torch or auto")
        self.use_backend("onnx" if self._onnx is not None else "torch")

    def use_backend(self, name: str) -> None:
        """Run the generator's forward pass in ``"torch"`` or ``"onnx"`` (when the engine opened with it: not with
        ``backend="torch"``, on a GPU, or after a failed check) from now on (benchmarks/studio.py compares them)."""
        if name == "onnx" and self._onnx is None:
            raise StudioError("backend", "onnx is not available in this engine (opened with backend torch, on a GPU, or its check failed)")
        if name not in ("torch", "onnx"):
            raise StudioError("backend", f"{name!r} is not torch or onnx")
        self._net = self._onnx if name == "onnx" else self.G
        self.backend = name

    @property
    def onnx_generator(self):
        """The checked :class:`~.onnx_generator.OnnxGenerator` (``export_s``, ``max_abs_diff``), or None."""
        return self._onnx

    def set_channels_last(self, on: bool) -> None:
        """Run the torch generator with channels-last weights (its convolutions then run channels-last) or the default layout
        (benchmarks/studio.py measures both)."""
        fmt = self._torch.channels_last if on else self._torch.contiguous_format
        self.G = self.G.to(memory_format=fmt)
        if self.backend == "torch":
            self._net = self.G

    # -- what the page shows --------------------------------------------------------------------------
    @property
    def has_generator(self) -> bool:
        return self.G is not None

    def controls(self) -> list[Control]:
        return self._controls.controls()

    def pairs(self) -> list[dict]:
        """The pair results driving this target: ``[{"name": pair, "n_frames": T}]``."""
        out = []
        for name, folder in self._pairs.items():
            with h5io.open_file(folder / "transfer.h5") as f:
                out.append({"name": name, "n_frames": int(len(f["valid"]))})
        return out

    def _source(self, pair: str | None) -> _Source:
        if pair in self._sources:
            return self._sources[pair]
        if pair not in self._pairs:
            raise StudioError(self.results, f"no pair {pair!r} drives target {self.target} (pairs: {', '.join(self._pairs) or 'none'})")
        from ..transfer_files import read_transfer

        folder = self._pairs[pair]
        result, attrs = read_transfer(folder / "transfer.h5")
        if attrs["target_model_hash"] != self.model.content_hash():
            raise StudioError(folder / "transfer.h5", "was transferred onto a different model than the target's")
        cond = folder / "conditioning.h5"
        if cond.is_file():
            f, _, box = open_conditioning(cond)
            f.close()
        else:  # not rendered yet: the boxes the render would use
            framing = FramingSettings(**json.loads(self.framing)) if self.framing != "null" else FramingSettings()
            box = fit_boxes(self.model, result.to_fit(), float(attrs["fps"]), framing, int(attrs["width"]), int(attrs["height"]))
        named = np.asarray(result.named, float) if np.any(result.named) else None
        if named is not None and self._named_basis is None:
            raise StudioError(folder / "transfer.h5", "carries named expressions the target's model cannot show")
        src = _Source(self.model.shape(result.p), result.q, result.camera, named, fill_boxes(box))
        self._sources[pair] = src
        return src

    # -- rendering -----------------------------------------------------------------------------------
    def _screen(self, src: _Source, params: Params) -> np.ndarray:
        """Screen-space vertices (N, 3), as the render jobs compute them."""
        return screen_vertices(self.model, src.identity, params.q, params.camera, params.named, self._named_basis)

    def _render(self, src: _Source, t: int, params: Params, renderer: Renderer | None = None):
        screen = self._screen(src, params)
        return (renderer or self.renderer).render(screen, src.box[t], self.sh, self.model.landmark_points(screen))

    def landmarks(self, t: int, edits: Mapping[str, float] | None = None, pair: str | None = None) -> np.ndarray:
        """The 478 detector landmarks (478, 3) of the edited mesh that :meth:`frame` renders, in pixels of the
        conditioning crop (x right, y down; z: depth in crop pixels)."""
        with self._lock:
            src = self._source(pair)
        t = self._check_frame(src, t, pair)
        pts = self.model.landmark_points(self._screen(src, self._controls.apply(src.params(t), self._controls.check(edits))))
        x0, y0, x1, y1 = src.box[t]
        scale = self.size / (x1 - x0)
        return np.stack([(pts[:, 0] - x0) * scale, (pts[:, 1] - y0) * self.size / (y1 - y0), pts[:, 2] * scale], axis=1)

    def _check_frame(self, src: _Source, t, pair: str | None) -> int:
        n = len(src.q)
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < n:
            raise StudioError(pair or self.target, f"frame {t!r} is not a frame 0…{n - 1}")
        return int(t)

    def _generate_still(self, src: _Source, t: int, edits: Mapping[str, float], rendered: dict) -> np.ndarray:
        """The generated frame ``t`` with ``edits`` held over its window (and its fed-back frames, generated first
        from zeros), by :func:`~deep_puppets.gan.inference.generate` as the workflow's synthesis."""
        from ..gan.inference import generate

        def frame_of(i):
            if i not in rendered:
                rendered[i] = self._render(src, i, self._controls.apply(src.params(i), edits))
            return rendered[i]

        streams = {name: _LazyStream(frame_of, name) for name in self.gs.streams}
        frames = range(max(0, t - self.gs.prev_frames), t + 1)
        return list(generate(self._net, streams, frames, self.gs, self.device))[-1]

    def frame(self, t: int, edits: Mapping[str, float] | None = None, pair: str | None = None) -> StudioFrame:
        """Frame ``t`` of the target (or of ``pair``'s transferred parameters) with ``edits`` (control name →
        slider offset) applied: its colour conditioning render and generated frame (module docstring). Requests
        are served one at a time (the renderer's GL context is shared)."""
        with self._lock:
            return self._frame(t, edits, pair)

    def _frame(self, t, edits, pair) -> StudioFrame:
        src = self._source(pair)
        t = self._check_frame(src, t, pair)
        edits = self._controls.check(edits)
        params = self._controls.apply(src.params(t), edits)
        rendered = {t: self._render(src, t, params)}
        generated = None
        if self.G is not None:
            generated = self._generate_still(src, t, edits, rendered)
            if generated.shape[:2] != (self.size, self.size):
                generated = resize(generated, (self.size, self.size))
        values = self._controls.values(params)
        return StudioFrame(rendered[t].colour, generated, self._controls.out_of_range(values), values)

    # -- export --------------------------------------------------------------------------------------
    def export_clip(self, keyframes: Sequence[Mapping], out_path, *, progress: Callable[[int, int], None] | None = None) -> Path:
        """The keyframed edit of the target's frames ``min(frame)…max(frame)`` as an mp4 at the target's full
        resolution and rate (module docstring); returns ``out_path``. The clip has the target video's sound of
        those frames (from the first one's time stamp) when the video has an audio track."""
        from ..gan.inference import generate
        from ..mp4_writer import write_mp4
        from ..reenactment import DecodedFrames, background_plate, composite_frames

        if self.G is None:
            raise StudioError(self.files.folder, "has no trained generator yet: an edited clip needs one")
        keys = parse_keyframes(keyframes, self.n_frames, self._controls.check)
        lo, hi = keys[0][0], keys[-1][0]
        frames = list(range(lo, hi + 1))
        edits = dict(zip(frames, interpolate(keys, frames)))
        pose = any(k in e for _, e in keys for k in ("yaw", "pitch", "roll"))
        mode = "pose+expression" if pose else "expression"
        src = self._sources[None]
        cache: dict[int, object] = {}
        keep = self.gs.window + 10  # generate() reads windows of up to 8 frames ahead of the compositing

        def rendered(t: int):
            if t not in cache:
                cache[t] = self._render(src, t, self._controls.apply(src.params(t), edits[t]), renderer)
                for old in [k for k in cache if k < t - keep]:
                    del cache[old]
            return cache[t]

        class _ClipColour:  # indexed by the clip frame k = t - lo, as composite_frames reads it
            def __getitem__(self, k):
                return rendered(lo + int(k)).colour

        cs = composite_settings(self.results)
        video = resolve_video(self.results, self.probe.path)
        total = len(frames)
        renderer = self._new_renderer()  # its own GL context: frame() requests go on meanwhile
        try:
            f, t_valid, t_box = open_conditioning(self.files.conditioning, ("colour",))
        except BaseException:
            renderer.close()
            raise
        with renderer, f, DecodedFrames(video, self.probe, near=out_path) as plates:
            background = None
            if pose:
                background, _ = background_plate(plates.frames, f["colour"], t_box, t_valid, cs.pose_grow, cs.feather, cs.background_frames)
            streams = {name: _LazyStream(rendered, name) for name in STREAMS}
            crops = generate(self._net, streams, frames, self.gs, self.device, first=lo)
            k_index = np.arange(total)
            out = composite_frames(crops, k_index, frames, plates.frames, _ClipColour(), src.box[lo:hi + 1], np.ones(total, bool), mode, cs,
                                   f["colour"], t_box, t_valid, background)  # fmt: skip

            def images():
                for k, c in enumerate(out, 1):
                    yield c.frame
                    if progress is not None:
                        progress(k, total)

            n = write_mp4(out_path, images(), self.fps, **clip_audio(video, self.probe, lo))
        log.info("studio: %d edited frames of %s written to %s (%s compositing)", n, self.target, out_path, mode)
        return Path(out_path)

    # -- lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "renderer", None) is not None:
            self.renderer.close()
            self.renderer = None
        self.G = self._net = self._onnx = None

    def __enter__(self) -> "StudioEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
