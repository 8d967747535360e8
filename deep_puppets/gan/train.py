"""Training of the rendering-to-video GAN: settings, one training step, checkpoints, resume, logs.

One iteration takes a batch of clips of ``clip_len`` consecutive training frames (:mod:`.data`), generates the
clip frame by frame (feeding back the previous outputs when ``prev_frames > 0``; detached, zeros before the
clip's first frame — the same as at the start of a synthesised sequence), then

* updates G on ``λ_gan_image·GAN(D_I) + λ_gan_video·GAN(D_V) + λ_fm·(FM(D_I) + FM(D_V)) + λ_l1·L1
  + λ_warp·warp`` (warp: the previous generated frame warped with the real flow vs the current one, masked
  where the flow does not explain the real frames);
* updates D_I (current conditioning image ⊕ real/generated frame) and D_V (K frames ⊕ real flow).

Device: ``device="auto"`` picks CUDA when present, with mixed precision (``torch.autocast`` float16 +
``GradScaler``) when ``amp``; on CPU everything is float32. Runs are seeded (python, numpy, torch) and the
batch of iteration ``i`` is a pure function of (seed, i) (:func:`~.data.batch_items`).

Files under ``out_dir``: ``checkpoints/iter_XXXXXXXX.pt`` every ``checkpoint_every`` iterations (the last
``keep_checkpoints`` kept; G, D_I, D_V, both optimisers, the scaler, the iteration counter and the RNG states
as tensors), ``losses.csv`` (one row per logged iteration), ``losses.png``, ``train.log`` (every attempt,
appended) and, once the final generator (:func:`save_generator`, a separate file written atomically) is written,
the done mark ``done.json``. A killed run started again with the same ``out_dir`` resumes from the newest
checkpoint (on CPU it reproduces the uninterrupted one exactly); a completed one (done mark) trains afresh. Only
the same training resumes: checkpoints record the settings and the content hashes of the inputs
(:func:`input_digests`; the workflow names the run folder by both), and other ones are refused. Checkpoints and
generators carry a sha256 over all their tensors and values, verified on load with the weights' finiteness
(a damaged checkpoint is skipped, a damaged generator is an :class:`InputError`); everything is loaded with
``torch.load(..., weights_only=True)``. A trainer holds an exclusive ``fcntl.flock`` on ``out_dir/.train.lock``:
a second one fails at once naming the first (:class:`TrainingLock`).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..errors import BusyError, ConfigError, DeepPuppetsError, InputError
from ..files import write_json
from ..workflow import attempt_header
from ..progress import report as report_progress
from . import losses as L
from .data import ClipDataset, batch_items, clip_ends, split_frames
from .networks import MultiscaleDiscriminator, UNetGenerator, count_parameters, receptive_fields

log = logging.getLogger("deep_puppets.gan")

GENERATOR_FORMAT = "deep_puppets.gan.generator/2"
CHECKPOINT_FORMAT = "deep_puppets.gan.checkpoint/2"
LOCK_NAME = ".train.lock"  # fcntl.flock-ed by the live trainer of a run folder (and of a target's gan folder)
DONE_NAME = "done.json"  # written (atomically) once a run folder's generator is written: the run is complete
LOG_NAME = "train.log"  # every attempt on a run folder, appended


@dataclass
class TrainSettings:
    """Settings of the GAN stage (config section ``gan``); :meth:`from_config` fills the defaults.

    The defaults are sized for CPUs: they train the demo (96 frames, 64 of them for training) at 128² in about
    5–8 minutes on 2 cores (≈ 1.2–2 iterations/s; see benchmarks/gan.py). Real videos on a CPU want
    ``iterations: 3000`` or more. On a GPU use e.g. ``size: 256`` (or 512 with ``di_layers: 4``), ``gen_base: 64``,
    ``gen_depth: 7``, ``gen_max_ch: 512``, ``d_base: 64``, ``d_max_ch: 512``, ``di_num_D: 3``, ``batch_size: 4``,
    ``iterations: 20000`` or more (mixed precision is automatic there).
    """

    # data
    size: tuple = (128, 128)  # training (height, width); an int means square. Divisible by 2**gen_depth
    streams: tuple = ("colour", "correspondence", "gaze")  # conditioning streams stacked into G's input
    window: int = 3  # L: conditioning frames t-L+1..t stacked (padding: the first frame repeated)
    prev_frames: int = 0  # previously generated frames fed back into G (0 = off)
    clip_len: int = 3  # K: consecutive frames per training sample, seen together by D_V
    held_out_fraction: float = 1 / 3  # the last part of the target, never trained on
    # generator (U-Net)
    gen_base: int = 32  # channels of the first layer, doubled per level up to gen_max_ch
    gen_depth: int = 5  # stride-2 levels
    gen_max_ch: int = 256
    gen_norm: str = "instance"  # instance, batch, none
    gen_out: str = "sigmoid"  # sigmoid or tanh (rescaled to [0, 1])
    # discriminators (multi-scale PatchGANs); patch side in pixels: networks.receptive_field
    d_base: int = 32
    d_max_ch: int = 256
    d_norm: str = "instance"
    di_layers: int = 3  # D_I: stride-2 layers per scale (3 → 70 px patches at scale 0)
    di_num_D: int = 2  # D_I: scales; scale i sees 2**i times larger patches (3 layers, 2 scales → 141 px)
    dv_layers: int = 3  # D_V likewise
    dv_num_D: int = 1
    # losses
    gan_mode: str = "lsgan"  # lsgan or hinge
    lambda_gan_image: float = 1.0
    lambda_gan_video: float = 1.0  # 0 switches D_V off
    lambda_fm: float = 10.0
    lambda_l1: float = 10.0
    lambda_warp: float = 1.0  # flow-warp temporal term (needs flow; 0 = off)
    warp_mask_threshold: float = 0.1  # pixels whose real frames the flow does not explain are left out (<= 0: none)
    # optimisation
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    iterations: int = 600
    seed: int = 0
    # run
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 25
    eval_frames: int = 8  # held-out frames whose E_col is logged at every checkpoint (0 = none)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads (0 = leave as set, e.g. by the rule's `threads`)
    flow_preset: str = "medium"  # DIS preset of the flow file (ultrafast, fast, medium)

    # keys a resumed run may change; any other change is refused (it would not be the same training)
    RUN_KEYS = ("iterations", "checkpoint_every", "keep_checkpoints", "log_every", "eval_frames", "device", "amp", "threads")

    def __post_init__(self):
        if isinstance(self.size, (int, np.integer)):
            self.size = (int(self.size), int(self.size))
        self.size = tuple(int(s) for s in self.size)
        self.streams = tuple(self.streams)
        check = {
            "size": len(self.size) == 2 and all(s % 2**self.gen_depth == 0 and s > 0 for s in self.size),
            "streams": len(self.streams) > 0 and len(set(self.streams)) == len(self.streams),
            "window": self.window >= 1,
            "prev_frames": self.prev_frames >= 0,
            "clip_len": self.clip_len >= 1 and (self.clip_len >= 2 or (self.lambda_gan_video == 0 and self.lambda_warp == 0)),
            "held_out_fraction": 0 <= self.held_out_fraction < 1,
            "gen_depth": self.gen_depth >= 1,
            "gen_norm": self.gen_norm in ("instance", "batch", "none"),
            "d_norm": self.d_norm in ("instance", "batch", "none"),
            "gen_out": self.gen_out in ("sigmoid", "tanh"),
            "gan_mode": self.gan_mode in L.GAN_MODES,
            "di_layers": self.di_layers >= 1,
            "dv_layers": self.dv_layers >= 1,
            "di_num_D": self.di_num_D >= 1 and min(self.size) >= min_input_size(self.di_layers, self.di_num_D),
            "dv_num_D": self.dv_num_D >= 1 and min(self.size) >= min_input_size(self.dv_layers, self.dv_num_D),
            "batch_size": self.batch_size >= 1,
            "iterations": self.iterations >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "log_every": self.log_every >= 1,
            "eval_frames": self.eval_frames >= 0,
            "flow_preset": self.flow_preset in ("ultrafast", "fast", "medium"),
        }
        for k in ("lambda_gan_image", "lambda_gan_video", "lambda_fm", "lambda_l1", "lambda_warp", "lr_g", "lr_d"):
            check[k] = getattr(self, k) >= 0
        bad = [k for k, ok in check.items() if not ok]
        if bad:
            k = bad[0]
            hint = {
                "size": f"two positive sides divisible by 2**gen_depth = {2**self.gen_depth}",
                "clip_len": ">= 2 while D_V or the warp term is on",
                "di_num_D": f"the coarsest scale needs >= {min_input_size(self.di_layers, self.di_num_D)} px",
                "dv_num_D": f"the coarsest scale needs >= {min_input_size(self.dv_layers, self.dv_num_D)} px",
            }.get(k, "see deep_puppets/gan/train.py TrainSettings")
            raise ConfigError(f"gan.{k} = {getattr(self, k)!r} is invalid ({hint})")

    @classmethod
    def from_config(cls, section: Mapping | None) -> "TrainSettings":
        """Settings from the config's ``gan`` section (missing keys take the defaults; unknown keys are errors)."""
        from ..config import settings_from_section

        return settings_from_section(cls, "gan", section)

    @classmethod
    def at_render_size(cls, gan_section: Mapping, render_section: Mapping) -> "TrainSettings":
        """Training settings: the config's ``gan`` section at the frame size of the conditioning renders."""
        return cls.from_config({**gan_section, "size": int(render_section["size"])})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"], d["streams"] = list(self.size), list(self.streams)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self, inputs: Mapping[str, str] | None = None) -> str:
        """Short hash of every setting a resumed run may not change (all but :attr:`RUN_KEYS`) and, when given, of
        the content hashes of the files it trains on (:func:`input_digests`): a run directory named by it never
        meets checkpoints of other settings or other data."""
        d = {k: v for k, v in self.to_dict().items() if k not in self.RUN_KEYS}
        if inputs:
            d = {"settings": d, "inputs": dict(inputs)}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def in_channels(self) -> int:
        """Generator input channels: 3 per stream per window frame, + 3 per fed-back frame."""
        return 3 * len(self.streams) * self.window + 3 * self.prev_frames

    @property
    def use_video_d(self) -> bool:
        return self.lambda_gan_video > 0 and self.clip_len >= 2


def min_input_size(n_layers: int, num_D: int) -> int:
    """Smallest image side a multi-scale PatchGAN takes: the coarsest scale must keep >= 3 px after the
    stride-2 layers (two stride-1 4×4 convolutions follow)."""
    return 3 * 2 ** (n_layers + num_D - 1)


# ---------------------------------------------------------------------------------------------- building


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"gan.device = {name!r} but no CUDA device is available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_generator(s: TrainSettings) -> UNetGenerator:
    return UNetGenerator(s.in_channels, 3, s.gen_base, s.gen_depth, s.gen_max_ch, s.gen_norm, s.gen_out)


def build_image_discriminator(s: TrainSettings) -> MultiscaleDiscriminator:
    return MultiscaleDiscriminator(3 * len(s.streams) + 3, s.d_base, s.di_layers, s.di_num_D, s.d_max_ch, s.d_norm)


def build_video_discriminator(s: TrainSettings) -> MultiscaleDiscriminator:
    in_ch = 3 * s.clip_len + 2 * max(s.clip_len - 1, 0)  # K frames + the K-1 flows between them
    return MultiscaleDiscriminator(in_ch, s.d_base, s.dv_layers, s.dv_num_D, s.d_max_ch, s.d_norm)


def flow_feature(flow: torch.Tensor) -> torch.Tensor:
    """Flow in pixels → D_V input scale (1 = a sixteenth of the frame's longer side)."""
    return flow * (16.0 / max(flow.shape[-2:]))


def _set_requires_grad(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def _split(preds: list[list[torch.Tensor]], n: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    return [[f[:n] for f in scale] for scale in preds], [[f[n:] for f in scale] for scale in preds]


# ---------------------------------------------------------------------------------------------- one step


class Trainer:
    """G, D_I, D_V, their optimisers and the gradient scaler; :meth:`step` runs one iteration."""

    def __init__(self, settings: TrainSettings, device: torch.device | str | None = None):
        self.s = settings
        self.device = resolve_device(settings.device) if device is None else torch.device(device)
        self.amp = bool(settings.amp and self.device.type == "cuda")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.G = build_generator(settings).to(self.device)
        self.D_I = build_image_discriminator(settings).to(self.device)
        self.D_V = build_video_discriminator(settings).to(self.device)
        betas = (settings.beta1, settings.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=settings.lr_g, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_I.parameters(), *self.D_V.parameters()], lr=settings.lr_d, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iteration = 0  # iterations completed

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    def generate_clip(self, cond: torch.Tensor) -> torch.Tensor:
        """Generate a clip ``(B, K, 3, H, W)`` from its conditioning ``(B, K, C, H, W)``, frame by frame."""
        fakes: list[torch.Tensor] = []
        b, k, _, h, w = cond.shape
        for i in range(k):
            x = cond[:, i]
            if self.s.prev_frames:
                prev = [fakes[i - j].detach() if i - j >= 0 else x.new_zeros(b, 3, h, w)
                        for j in range(self.s.prev_frames, 0, -1)]
                x = torch.cat([x, *prev], 1)
            fakes.append(self.G(x))
        return torch.stack(fakes, 1)

    def _image_input(self, cur: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """D_I input: current conditioning ⊕ frame, clip frames flattened into the batch."""
        return torch.cat([cur, frames.flatten(0, 1)], 1)

    @staticmethod
    def _video_input(frames: torch.Tensor, fv: torch.Tensor) -> torch.Tensor:
        """D_V input: the K frames of each clip ⊕ the real flows between them."""
        return torch.cat([frames.flatten(1, 2), fv], 1)

    def _generator_losses(self, cur, real, flow, fake, fv) -> dict[str, torch.Tensor]:
        s, k = self.s, real.shape[1]
        zero = torch.zeros((), device=self.device)
        pi_fake = self.D_I(self._image_input(cur, fake))
        with torch.no_grad():
            pi_real = self.D_I(self._image_input(cur, real))
        parts = {"g_gan_image": L.generator_gan_loss(pi_fake, s.gan_mode), "g_gan_video": zero,
                 "g_fm": L.feature_matching_loss(pi_real, pi_fake), "g_l1": L.l1_loss(fake, real), "g_warp": zero}
        if s.use_video_d:
            pv_fake = self.D_V(self._video_input(fake, fv))
            with torch.no_grad():
                pv_real = self.D_V(self._video_input(real, fv))
            parts["g_gan_video"] = L.generator_gan_loss(pv_fake, s.gan_mode)
            parts["g_fm"] = parts["g_fm"] + L.feature_matching_loss(pv_real, pv_fake)
        if s.lambda_warp > 0 and k >= 2:
            warp = [L.temporal_warp_loss(fake[:, i - 1], fake[:, i], flow[:, i],
                                         L.warp_mask(real[:, i - 1], real[:, i], flow[:, i], s.warp_mask_threshold))
                    for i in range(1, k)]
            parts["g_warp"] = sum(warp) / len(warp)
        parts["loss_g"] = (s.lambda_gan_image * parts["g_gan_image"] + s.lambda_gan_video * parts["g_gan_video"]
                           + s.lambda_fm * parts["g_fm"] + s.lambda_l1 * parts["g_l1"] + s.lambda_warp * parts["g_warp"])
        return parts

    def _discriminator_losses(self, cur, real, fake, fv) -> dict[str, torch.Tensor]:
        """Real and generated inputs go through each discriminator as one batch."""
        s, (b, k) = self.s, real.shape[:2]
        pi = self.D_I(torch.cat([self._image_input(cur, real), self._image_input(cur, fake)], 0))
        parts = {"d_image": L.discriminator_loss(*_split(pi, b * k), s.gan_mode),
                 "d_video": torch.zeros((), device=self.device)}
        if s.use_video_d:
            pv = self.D_V(torch.cat([self._video_input(real, fv), self._video_input(fake, fv)], 0))
            parts["d_video"] = L.discriminator_loss(*_split(pv, b), s.gan_mode)
        return parts

    def step(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """One G update, then one D_I + D_V update, on ``batch`` (from :meth:`ClipDataset.batch`); returns the
        losses (see :data:`LOSS_COLUMNS`)."""
        cond, real, flow = (self._tensor(batch[k]).float() for k in ("cond", "real", "flow"))
        cur = cond[:, :, -3 * len(self.s.streams):].flatten(0, 1)  # each clip frame's current conditioning
        fv = flow_feature(flow[:, 1:].flatten(1, 2))  # the K-1 flows inside each clip
        D = [self.D_I, self.D_V]

        _set_requires_grad(D, False)
        with self._autocast():
            fake = self.generate_clip(cond)
            g = self._generator_losses(cur, real, flow, fake, fv)
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(g["loss_g"]).backward()
        self.scaler.step(self.opt_G)

        _set_requires_grad(D, True)
        with self._autocast():
            d = self._discriminator_losses(cur, real, fake.detach(), fv)
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(d["d_image"] + d["d_video"]).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in {**g, **d}.items()}

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self, inputs: Mapping[str, str] | None = None) -> dict:
        """Everything a resumed run needs; ``inputs``: content hashes of the data trained on (recorded)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": int(self.iteration),
            "settings": self.s.to_json(),
            "inputs": json.dumps(dict(inputs or {}), sort_keys=True),
            "G": self.G.state_dict(),
            "D_I": self.D_I.state_dict(),
            "D_V": self.D_V.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.G.load_state_dict(state["G"])
        self.D_I.load_state_dict(state["D_I"])
        self.D_V.load_state_dict(state["D_V"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])


def rng_state() -> dict:
    """RNG states of python, numpy and torch as tensors and plain numbers (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python_version": int(version),
        "python": torch.tensor(mt, dtype=torch.int64),
        "python_gauss": float("nan") if gauss is None else float(gauss),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": float(cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()),
                     None if math.isnan(gauss) else gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- files


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_digests(conditioning_path, flow_path) -> dict[str, str]:
    """Content hashes of the files a run trains on: part of its identity (run folder name, checkpoints, done mark)."""
    return {"conditioning": file_sha256(conditioning_path), "flow": file_sha256(flow_path)}


def state_digest(state: Mapping) -> str:
    """sha256 over every entry of a saved dict but ``sha256`` itself: each tensor's dtype, shape and bytes, every
    other value's repr, in key order. Stored inside checkpoints and generators and verified on load."""
    h = hashlib.sha256()

    def walk(key: str, v) -> None:
        h.update(key.encode() + b"\0")
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(v.shape)}".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(v, Mapping):
            for k in sorted(v, key=str):
                walk(f"{key}/{k}", v[k])
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(f"{key}/{i}", x)
        else:
            h.update(repr(v).encode())

    for k in sorted(state):
        if k != "sha256":
            walk(k, state[k])
    return h.hexdigest()


def _seal(state: dict) -> dict:
    return {**state, "sha256": state_digest(state)}


def _nonfinite(state: Mapping) -> list[str]:
    """Networks (G, D_I, D_V) in ``state`` with a non-finite weight."""
    return [net for net in ("G", "D_I", "D_V") if net in state
            and not all(torch.isfinite(t).all() for t in state[net].values() if t.is_floating_point())]


def _load_verified(path, fmt: str, what: str) -> dict:
    """``torch.load`` (weights_only) of a file written by :func:`_seal`; every failure is one :class:`InputError`:
    unreadable or not a torch file, another format, a checksum mismatch (damaged), non-finite weights."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors of a damaged file, or refused (non-weights) content
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"is damaged or not a {what} ({type(e).__name__}: {first}); delete it and rerun") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputError(path, f"not a {what} ({fmt}; found {state.get('format') if isinstance(state, dict) else type(state).__name__})")
    if "sha256" not in state or state_digest(state) != state["sha256"]:
        raise InputError(path, "is damaged (checksum mismatch); delete it and rerun gan_train")
    bad = _nonfinite(state)
    if bad:
        raise InputError(path, f"has non-finite weights in {', '.join(bad)} (the training diverged)")
    return state


def checkpoint_path(out_dir, iteration: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"iter_{iteration:08d}.pt"


def remove_stale_temporaries(out_dir) -> None:
    """Delete half-written checkpoint temporaries a killed run left behind."""
    for tmp in (Path(out_dir) / "checkpoints").glob(".iter_*.pt.tmp*"):
        tmp.unlink(missing_ok=True)


def list_checkpoints(out_dir) -> list[Path]:
    """Checkpoints under ``out_dir``, oldest first."""
    d = Path(out_dir) / "checkpoints"
    return sorted(d.glob("iter_*.pt")) if d.is_dir() else []


def load_checkpoint(path) -> dict:
    """A checkpoint, verified (:func:`_load_verified`: checksum, finite weights)."""
    return _load_verified(path, CHECKPOINT_FORMAT, "GAN checkpoint")


def save_checkpoint(trainer: Trainer, out_dir, keep: int, inputs: Mapping[str, str] | None = None) -> Path:
    state = trainer.state_dict(inputs)
    _check_finite(state, trainer.iteration)
    path = checkpoint_path(out_dir, trainer.iteration)
    _atomic_save(_seal(state), path)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _check_finite(state: Mapping, iteration: int) -> None:
    bad = _nonfinite(state)
    if bad:
        raise DeepPuppetsError(f"GAN training diverged: non-finite weights in {', '.join(bad)} at iteration {iteration}; "
                               "lower gan.lr_g / gan.lr_d")


def latest_checkpoint(out_dir) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads and verifies (a damaged one is skipped with a warning), or None."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path)
        except InputError as e:  # a damaged file: fall back to the previous one
            log.warning("skipping checkpoint %s, trying the previous one", e)
    return None


def incompatible_settings(saved: dict, now: TrainSettings) -> list[str]:
    """Keys whose change makes a checkpoint unusable for ``now`` (all but :attr:`TrainSettings.RUN_KEYS`)."""
    cur = now.to_dict()
    return sorted(k for k in cur if k not in TrainSettings.RUN_KEYS and saved.get(k) != cur[k])


def check_same_training(path, record: Mapping, settings: TrainSettings, inputs: Mapping[str, str] | None) -> None:
    """Refuse a checkpoint or done mark (``record``: its ``settings`` and ``inputs``) of another training:
    other settings (:class:`ConfigError`) or other input content (:class:`InputError`)."""
    saved = record["settings"]
    bad = incompatible_settings(json.loads(saved) if isinstance(saved, str) else saved, settings)
    if bad:
        raise ConfigError(f"{path}: checkpoint was trained with other gan settings ({', '.join(bad)}); "
                          f"restore them or delete {Path(path).parent} to start afresh")
    was = record.get("inputs", {})
    was = json.loads(was) if isinstance(was, str) else dict(was)
    now = dict(inputs or {})
    if was != now:
        diff = ", ".join(f"{k} sha256 {str(was.get(k))[:12]} vs now {str(now.get(k))[:12]}" for k in sorted({*was, *now})
                         if was.get(k) != now.get(k))
        raise InputError(path, f"belongs to a training on other inputs ({diff}); it is never resumed: delete it to start afresh")


def save_generator(trainer: Trainer, path, inputs: Mapping[str, str] | None = None) -> Path:
    """The final generator: its weights, settings, inputs' hashes, iteration count and checksum; atomic."""
    path = Path(path)
    state = {"format": GENERATOR_FORMAT, "iteration": int(trainer.iteration), "settings": trainer.s.to_json(),
             "inputs": json.dumps(dict(inputs or {}), sort_keys=True),
             "G": {k: v.detach().cpu() for k, v in trainer.G.state_dict().items()}}
    _check_finite(state, trainer.iteration)
    _atomic_save(_seal(state), path)
    return path


def load_generator(path, device: str | torch.device = "cpu") -> tuple[UNetGenerator, TrainSettings]:
    """Load a generator written by :func:`save_generator` (weights_only, checksum and finiteness verified: a
    damaged file is one :class:`InputError`); returns ``(G in eval mode, settings)``."""
    state = _load_verified(path, GENERATOR_FORMAT, "generator file")
    settings = TrainSettings(**json.loads(state["settings"]))
    G = build_generator(settings)
    G.load_state_dict(state["G"])
    return G.to(device).eval(), settings


# ---------------------------------------------------------------------------------------------- run folders


class TrainingLock:
    """Exclusive ``fcntl.flock`` on ``path`` (holding pid, host, start time) for as long as the ``with`` block runs.

    A second trainer fails at once with a :class:`BusyError` naming the holder; the kernel releases the lock of a
    killed process. flock works across hosts on local file systems and NFSv4 (Linux maps it to POSIX locks)."""

    def __init__(self, path, what: str = "a training"):
        self.path, self.what, self.fd = Path(path), what, None

    def __enter__(self) -> "TrainingLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise BusyError(f"{self.path.parent}: {self.what} is already running ({holder}); wait for it to finish or "
                            "end that process, then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock; the file stays (removing it would race with the next locker)
        self.fd = None


def _lock_holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {h['pid']} on {h['host']} since {h['since']}"
    except (ValueError, KeyError, OSError):
        return "another process (it has not recorded itself yet)"


def remove_superseded_runs(parent, keep) -> list[Path]:
    """Delete the ``train-*`` run folders under ``parent`` but ``keep`` (runs of older settings or inputs of the
    same target), never one whose lock a live trainer holds. Returns the folders removed."""
    removed = []
    for d in sorted(Path(parent).glob("train-*")):
        if not d.is_dir() or d.resolve() == Path(keep).resolve():
            continue
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("keeping superseded run folder %s: %s trains there", d, _lock_holder(fd))
            os.close(fd)
            continue
        try:
            shutil.rmtree(d)
            removed.append(d)
            log.info("removed superseded run folder %s", d)
        finally:
            os.close(fd)
    return removed


def read_done_mark(out_dir) -> dict | None:
    """The done mark of a completed run folder (:data:`DONE_NAME`), or None."""
    p = Path(out_dir) / DONE_NAME
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        raise InputError(p, "is damaged (not JSON); delete its run folder to start afresh") from None


def clear_run(out_dir) -> None:
    """Forget a completed run: its checkpoints, losses and done mark (the log keeps the history)."""
    out_dir = Path(out_dir)
    for p in [*list_checkpoints(out_dir), out_dir / "losses.csv", out_dir / "losses.png", out_dir / DONE_NAME]:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- logs

LOSS_COLUMNS = ("loss_g", "g_gan_image", "g_gan_video", "g_fm", "g_l1", "g_warp", "d_image", "d_video")
CSV_COLUMNS = ("iteration", "elapsed_s", "it_per_s") + LOSS_COLUMNS + ("heldout_ecol",)


def trim_csv(path: Path, last_iteration: int) -> None:
    """Keep the header and the rows up to ``last_iteration`` (rows a killed run logged after its checkpoint go)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= last_iteration]
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves (G terms, D terms, held-out E_col) from the CSV into a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    if df.empty:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 5))
    for col in ("loss_g", "g_gan_image", "g_gan_video", "g_fm", "g_l1", "g_warp"):
        axes[0].plot(df["iteration"], df[col], label=col)
    axes[0].set_yscale("symlog", linthresh=1e-2)
    for col in ("d_image", "d_video"):
        axes[1].plot(df["iteration"], df[col], label=col)
    ev = df.dropna(subset=["heldout_ecol"])
    axes[2].plot(ev["iteration"], ev["heldout_ecol"], "o-", label="held-out E_col")
    for ax, title in zip(axes, ("generator", "discriminators", "held-out photometric error")):
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("iteration", fontsize=10)
        ax.legend(fontsize=9.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)  # below: never over the lines
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    iterations: int
    resumed_from: int  # iteration of the checkpoint the run resumed from (0 = fresh)
    final_path: Path | None
    seconds: float
    last_losses: dict = field(default_factory=dict)


def _load_batch(dataset: ClipDataset, iteration: int, s: TrainSettings) -> dict:
    return dataset.batch(batch_items(iteration, s.batch_size, len(dataset), s.seed))


def held_out_error(trainer: Trainer, dataset: ClipDataset, frames: np.ndarray) -> float:
    """Mean E_col of the generator on the (contiguous) held-out ``frames`` (evaluation only, no training)."""
    from .baselines import photometric_error
    from .synthesize import generate

    fake = np.stack(list(generate(trainer.G, dataset.conditioning, frames, trainer.s, trainer.device)))
    real = np.stack([dataset.frames_at(t) for t in frames])
    return float(np.mean(photometric_error(fake, real)))


def resume(trainer: Trainer, out_dir: Path, inputs: Mapping[str, str] | None = None) -> int:
    """Load the newest usable checkpoint under ``out_dir`` into ``trainer``; returns its iteration (0: none).

    Only the same training resumes: a checkpoint (or done mark) of other settings than :attr:`TrainSettings.RUN_KEYS`
    is refused (:class:`ConfigError`), one of other ``inputs`` (content hashes) too (:class:`InputError`). A
    completed run (done mark with at least ``iterations``) is cleared and trains afresh: running the job again
    (Snakemake deleted its output: ``--forcerun``) means training again, not returning the old weights.
    """
    remove_stale_temporaries(out_dir)
    done = read_done_mark(out_dir)
    if done is not None:
        check_same_training(out_dir / DONE_NAME, done, trainer.s, inputs)
        if int(done["iteration"]) >= trainer.s.iterations:
            log.info("%s completed before (iteration %d): training afresh", out_dir, int(done["iteration"]))
            clear_run(out_dir)
            return 0
    found = latest_checkpoint(out_dir)
    if found is None:
        return 0
    path, state = found
    check_same_training(path, state, trainer.s, inputs)
    trainer.load_state_dict(state)
    log.info("resuming from %s (iteration %d)", path, trainer.iteration)
    return trainer.iteration


class _Progress:
    """Mean losses and training rate since the previous log line; one CSV row and one log line per report."""

    def __init__(self, s: TrainSettings, csv_path: Path, iteration: int):
        self.s, self.csv_path = s, csv_path
        self.t0 = self.t_last = time.perf_counter()
        self.it_last = iteration
        self.sums: dict[str, float] = {}

    def add(self, losses: dict) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def report(self, it: int, heldout_ecol: float | None = None) -> dict:
        now = time.perf_counter()
        n = max(it - self.it_last, 1)
        rate = (it - self.it_last) / max(now - self.t_last, 1e-9)
        row = {"iteration": it, "elapsed_s": round(now - self.t0, 3), "it_per_s": round(rate, 4)}
        row.update({k: v / n for k, v in self.sums.items()})
        if heldout_ecol is not None:
            row["heldout_ecol"] = heldout_ecol
        append_csv(self.csv_path, row)
        log.info("iter %d/%d  G %.4f (gan_i %.3f gan_v %.3f fm %.3f l1 %.4f warp %.4f)  D_I %.3f D_V %.3f  %.2f it/s  ETA %s%s",
                 it, self.s.iterations, *(row.get(k, float("nan")) for k in LOSS_COLUMNS), rate,
                 _fmt_eta((self.s.iterations - it) / max(rate, 1e-9)),
                 "" if heldout_ecol is None else f"  held-out E_col {heldout_ecol:.4f}")
        return row

    def restart(self, it: int) -> None:
        """Start the next interval (called after evaluation and checkpointing, which the rate leaves out)."""
        self.sums, self.t_last, self.it_last = {}, time.perf_counter(), it


def train(conditioning: Mapping[str, object], frames, flow, settings: TrainSettings, out_dir, final_path=None,
          *, valid=None, boxes=None, stop_after: int | None = None, inputs: Mapping[str, str] | None = None) -> TrainResult:
    """Train (or resume) on one target; writes checkpoints/logs under ``out_dir`` and the generator to ``final_path``.

    ``conditioning``: stream -> (T, H, W, 3) uint8 array-likes; ``frames``: real frames (T, H', W', 3);
    ``flow``: (T, H, W, 2) at the training size, or None (then D_V sees zero flow and the warp term is off);
    ``valid``: (T,) bool, frames whose conditioning was rendered (clips with an invalid frame are not trained
    on; None: all); ``boxes``: (T, 4) crop boxes of the conditioning, applied to ``frames`` (None: frames are
    resized whole, e.g. the already-cropped frames of a flow file). The split is :func:`~.data.split_frames`
    of T. ``stop_after``: stop (without the final file) once that many iterations are done — to simulate a
    killed run, or to train in pieces. ``inputs``: content hashes of the data (:func:`input_digests`), recorded in
    checkpoints, generator and done mark; a checkpoint of other inputs is never resumed. The run holds
    :class:`TrainingLock` on ``out_dir`` throughout and appends its log to ``out_dir/train.log``.
    """
    out_dir = Path(out_dir)
    with TrainingLock(out_dir / LOCK_NAME):
        handler = logging.FileHandler(out_dir / LOG_NAME, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        with open(out_dir / LOG_NAME, "a") as f:
            f.write(attempt_header())
        log.addHandler(handler)
        try:
            return _train_locked(conditioning, frames, flow, settings, out_dir, final_path, valid, boxes, stop_after, inputs)
        finally:
            log.removeHandler(handler)
            handler.close()


def _train_locked(conditioning, frames, flow, settings, out_dir: Path, final_path, valid, boxes, stop_after, inputs) -> TrainResult:
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    if inputs:
        log.info("inputs: %s", ", ".join(f"{k} sha256 {v}" for k, v in sorted(inputs.items())))
    if flow is None and (s.lambda_warp > 0 or s.use_video_d):
        log.warning("no optical flow given: D_V is conditioned on zero flow and the warp term is off")
        s = TrainSettings(**{**s.to_dict(), "lambda_warp": 0.0})
    train_idx, held_idx = split_frames(len(frames), s.held_out_fraction)
    usable = train_idx if valid is None else train_idx[np.asarray(valid, bool)[train_idx]]
    if not len(clip_ends(usable, s.clip_len)):
        raise ConfigError(f"'gan.clip_len' {s.clip_len}: no run of {s.clip_len} consecutive training frames with a rendered face "
                          f"({len(usable)} of the {len(train_idx)} training frames have one); lower gan.clip_len")
    dataset = ClipDataset(conditioning, frames, flow, usable, s.streams, s.size, s.window, s.clip_len, boxes)
    seed_everything(s.seed)
    trainer = Trainer(s)
    csv_path, png_path = out_dir / "losses.csv", out_dir / "losses.png"
    start = resume(trainer, out_dir, inputs)
    if start:
        trim_csv(csv_path, start)
    else:
        csv_path.unlink(missing_ok=True)

    rf_i, rf_v = receptive_fields(s.di_layers, s.di_num_D), receptive_fields(s.dv_layers, s.dv_num_D)
    log.info("GAN on %s%s: %d frames, %d for training (%d usable, %d clips of %d), last %d held out; size %dx%d; "
             "G %d params; D_I patches %s px, D_V patches %s px", trainer.device, " (mixed precision)" if trainer.amp else "",
             len(frames), len(train_idx), len(usable), len(dataset), s.clip_len, len(held_idx), s.size[0], s.size[1],
             count_parameters(trainer.G), rf_i, rf_v)
    if max(rf_i) < 0.75 * max(s.size):
        log.warning("D_I's largest patch (%d px) covers less than 3/4 of the frame (%d px): the report saw heads "
                    "detach from bodies with too small patches; raise gan.di_num_D or gan.di_layers", max(rf_i), max(s.size))
    eval_idx = held_idx[: s.eval_frames]
    end = s.iterations if stop_after is None else min(s.iterations, stop_after)
    progress = _Progress(s, csv_path, start)
    losses: dict[str, float] = {}
    with ThreadPoolExecutor(1) as prefetch:  # the next batch is assembled while this one trains
        nxt = prefetch.submit(_load_batch, dataset, start, s)
        while trainer.iteration < end:
            batch = nxt.result()
            if trainer.iteration + 1 < end:
                nxt = prefetch.submit(_load_batch, dataset, trainer.iteration + 1, s)
            losses = trainer.step(batch)
            progress.add(losses)
            it = trainer.iteration
            checkpoint = it % s.checkpoint_every == 0 or it == s.iterations
            ecol = None
            if it % s.log_every == 0 or checkpoint or it == end:
                ecol = held_out_error(trainer, dataset, eval_idx) if checkpoint and len(eval_idx) else None
                progress.report(it, ecol)
                if checkpoint:
                    log.info("checkpoint %s", save_checkpoint(trainer, out_dir, s.keep_checkpoints, inputs))
                    plot_losses(csv_path, png_path)
                progress.restart(it)
            report_progress("GAN training", it, s.iterations, "iterations", **{"held-out E_col": ecol})
    done = None
    if trainer.iteration >= s.iterations and final_path is not None:
        done = save_generator(trainer, final_path, inputs)
        if csv_path.exists():
            plot_losses(csv_path, png_path)
        write_json(out_dir / DONE_NAME, {"iteration": int(trainer.iteration), "settings": trainer.s.to_dict(),
                                         "inputs": dict(inputs or {}), "generator": str(final_path),
                                         "generator_sha256": file_sha256(final_path)})
        log.info("final generator %s (iteration %d)", final_path, trainer.iteration)
    return TrainResult(trainer.iteration, start, done, time.perf_counter() - progress.t0, losses)


def train_from_files(conditioning_path, flow_path, settings: TrainSettings, out_dir, final_path,
                     *, stop_after=None, inputs: Mapping[str, str] | None = None) -> TrainResult:
    """:func:`train` on a conditioning HDF5 file (datasets named like ``settings.streams``, (T, H, W, 3) uint8;
    ``valid`` (T,) and ``box`` (T, 4) used when present) and a ``flow`` file (:mod:`.flow`, which holds the real
    frames already cropped by those boxes and resized to the training size). ``inputs``: their
    :func:`input_digests` (computed when None)."""
    from .. import h5io
    from .flow import open_flow_file

    inputs = input_digests(conditioning_path, flow_path) if inputs is None else inputs
    with h5io.open_file(conditioning_path) as fc:  # a corrupted chunk read during training names the file
        missing = [n for n in settings.streams if n not in fc]
        if missing:
            raise InputError(conditioning_path, f"lacks conditioning stream(s) {missing}")
        valid = fc["valid"][()] if "valid" in fc else None
        boxes = fc["box"][()] if "box" in fc else None
        ff, flow, frames = open_flow_file(flow_path, settings.size, boxes)
        try:
            if len(frames) != len(fc[settings.streams[0]]):
                raise InputError(flow_path, f"has {len(frames)} frames, the conditioning {len(fc[settings.streams[0]])}")
            return train({n: fc[n] for n in settings.streams}, frames, flow, settings, out_dir, final_path,
                         valid=valid, stop_after=stop_after, inputs=inputs)
        finally:
            ff.close()
