"""A fake puppet-studio engine following the contract of ``deep_puppets.studio.engine`` (notes: the studio
interface), for the web app's tests before and besides the real one.

It draws the demo's astronaut (the demo's photo-warp rig, :mod:`deep_puppets.demo_rig`): ``mouth_open`` opens
the rig's mouth, ``yaw`` turns the head (degrees, the project's convention: positive turns the nose toward image
right), ``brow`` raises the brows; the "tracked" values vary a little with the frame. Stricter than the real
engine, its frames must come from the thread that built it (a call from another thread raises); an export may
run on any thread (the real engine gives it its own renderer).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deep_puppets.studio.controls import Control
from deep_puppets.studio.results import StudioError


@dataclass
class FakeFrame:
    conditioning: np.ndarray
    generated: np.ndarray | None
    out_of_range: list[str]
    values: dict[str, float]


CONTROLS = [
    Control("yaw", "Head yaw (°)", "pose", -30, 30, 1),
    Control("pitch", "Head pitch (°)", "pose", -20, 20, 1),
    Control("gaze_x", "Gaze sideways", "gaze", -0.3, 0.3, 0.01),
    Control("mouth_open", "Mouth open", "expression", 0, 1, 0.05),
    Control("brow", "Brows raised", "expression", -0.5, 1, 0.05),
    Control("pc_0", "Component 0", "advanced", -3, 3, 0.1),
]
TRAINED = {"yaw": (-8, 8), "pitch": (-5, 5), "gaze_x": (-0.2, 0.2), "mouth_open": (0, 0.4), "brow": (0, 0.3), "pc_0": (-1, 1)}


@functools.lru_cache(maxsize=2)
def rig_and_photo(size: int):
    from deep_puppets.demo_photo import detect_face_mesh, prepare_photo
    from deep_puppets.demo_rig import build_rig

    photo = prepare_photo("target", size)
    return build_rig(detect_face_mesh(photo), size), photo


class FakeEngine:
    def __init__(self, results_dir, target: str | None = None, device: str = "cpu", *, size: int = 128, n_frames: int = 12,
                 fps: float = 10.0, has_generator: bool = True, targets=("astro", "other"), pairs=(("src__astro", 6),),
                 frame_delay: float = 0.0, export_gate: threading.Event | None = None):
        self.thread = threading.get_ident()
        self.results_dir = Path(results_dir)
        self.targets = list(targets)
        if target is None:
            target = self.targets[0]
        if target not in self.targets:
            raise StudioError(results_dir, f"no target {target!r}")
        self.target, self.device, self.size, self.n_frames, self.fps = target, device, size, n_frames, fps
        self.has_generator = has_generator
        self._pairs = [{"name": n, "n_frames": t} for n, t in pairs]
        self.frame_delay, self.export_gate = frame_delay, export_gate
        self.calls: list[tuple] = []
        self.export_threads: set[int] = set()
        self.closed = False

    def _check_thread(self):
        if threading.get_ident() != self.thread:
            raise RuntimeError("engine called from another thread than the one that built it")

    def controls(self):
        self._check_thread()
        return list(CONTROLS)

    def pairs(self):
        self._check_thread()
        return list(self._pairs)

    def tracked(self, t: int, pair: str | None = None) -> dict[str, float]:
        phase = t / max(1, self.n_frames - 1) + (0.5 if pair else 0.0)
        return {"yaw": 4 * np.sin(2 * np.pi * phase), "pitch": 0.0, "gaze_x": 0.0, "mouth_open": 0.05, "brow": 0.1, "pc_0": 0.0}

    def draw(self, values: dict[str, float]) -> np.ndarray:
        from deep_puppets.camera import yaw_pitch_roll_matrix
        from deep_puppets.demo_warp import pose_vertices, render_frame

        rig, photo = rig_and_photo(self.size)
        # the demo rig's camera frame turns the nose to image left for a positive yaw: the model's yaw is its negative
        rotation = yaw_pitch_roll_matrix(-values["yaw"], values["pitch"], 0.0)
        posed = pose_vertices(rig, [values["mouth_open"], 0.0, max(0.0, values["brow"])], rotation, 1.0, [0.0, 0.0])
        return render_frame(rig, photo, posed)

    def frame(self, t: int, edits=None, pair: str | None = None) -> FakeFrame:
        self._check_thread()
        edits = dict(edits or {})
        names = {c.name for c in CONTROLS}
        for k in edits:
            if k not in names:
                raise StudioError(self.target, f"no control {k!r}")
        n = next((p["n_frames"] for p in self._pairs if p["name"] == pair), None) if pair else self.n_frames
        if n is None:
            raise StudioError(self.target, f"no pair {pair!r}")
        if not 0 <= t < n:
            raise StudioError(self.target, f"frame {t} outside 0..{n - 1}")
        self.calls.append(("frame", t, dict(edits), pair))
        if self.frame_delay:
            time.sleep(self.frame_delay)
        values = {k: float(v + edits.get(k, 0.0)) for k, v in self.tracked(t, pair).items()}
        image = self.draw(values)
        conditioning = (0.5 * image + 0.5 * image.mean(axis=-1, keepdims=True)).astype(np.uint8)  # a greyer "render"
        out = [k for k, (lo, hi) in TRAINED.items() if not lo <= values[k] <= hi]
        return FakeFrame(conditioning, image if self.has_generator else None, out, values)

    def export_clip(self, keyframes, out_path, *, progress=None) -> Path:
        from deep_puppets.mp4_writer import write_mp4

        self.export_threads.add(threading.get_ident())  # any thread: the real engine gives an export its own renderer
        if self.export_gate is not None:
            self.export_gate.wait(30)
        keys = sorted(keyframes, key=lambda k: k["frame"])
        frames = np.arange(keys[0]["frame"], keys[-1]["frame"] + 1)
        xs = [k["frame"] for k in keys]
        images = []
        for i, t in enumerate(frames):
            edits = {c.name: float(np.interp(t, xs, [k["edits"].get(c.name, 0.0) for k in keys])) for c in CONTROLS}
            values = {k: v + edits[k] for k, v in self.tracked(int(t)).items()}
            images.append(self.draw(values))
            if progress:
                progress(i + 1, len(frames))
        self.calls.append(("export", len(frames)))
        write_mp4(out_path, images, self.fps)
        return Path(out_path)

    def close(self):
        self._check_thread()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
