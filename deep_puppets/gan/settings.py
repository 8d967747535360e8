"""Settings of the GAN stage (config section ``gan``): :class:`TrainSettings`, validated on construction.

Light on purpose (no torch): the workflow checks every stage's settings before any job starts, and both
training and inference build their networks from these settings (a generator file records them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..config import settings_from_section
from ..errors import ConfigError
from .flow import DIS_PRESETS

GAN_MODES = ("lsgan", "hinge")  # adversarial losses (deep_puppets.gan.losses)


@dataclass
class TrainSettings:
    """Settings of the GAN stage (config section ``gan``); :meth:`from_config` fills the defaults.

    The defaults are sized for CPUs (128², small networks); the README's benchmark table gives the training rate
    that benchmarks/gan.py measured there (≈ 3.6 iterations/s at 128² on 2 cores). Real videos on a CPU want
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
    neural_texture: int = 0  # channels of a learned texture sampled through the correspondence image (0 = off)
    # discriminators (multi-scale PatchGANs); patch side in pixels: networks.receptive_field
    d_base: int = 32
    d_max_ch: int = 256
    d_norm: str = "instance"
    di_layers: int = 3  # D_I: stride-2 layers per scale (3 → 70 px patches at scale 0)
    di_num_D: int = 2  # D_I: scales; scale i sees 2**i times larger patches (3 layers, 2 scales → 141 px)
    di_frames: str = "all"  # D_I judges every frame of a training clip (all) or its last frame only (last)
    dv_layers: int = 3  # D_V likewise
    dv_num_D: int = 1
    # losses
    gan_mode: str = "lsgan"  # lsgan or hinge
    lambda_gan_image: float = 1.0
    lambda_gan_video: float = 1.0  # 0 switches D_V off
    lambda_fm: float = 10.0
    lambda_l1: float = 10.0
    lambda_warp: float = 1.0  # flow-warp temporal term (needs flow; 0 = off)
    lambda_eyes: float = 0.0  # L1 over the eyes (the gaze stream's eye openings, widened), as a mean over those pixels (0 = off)
    warp_mask_threshold: float = 0.1  # pixels whose real frames the flow does not explain are left out (<= 0: none)
    # optimisation
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_texture: float = 2e-3  # learning rate of the neural texture
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.0  # the saved generator is an exponential moving average of G's weights with this decay (0 = G itself)
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
    cpu_bfloat16: bool = False  # train on CPU in bfloat16 autocast where the CPU has bfloat16 units (else float32)
    threads: int = 0  # torch CPU threads (0 = leave as set, e.g. by the rule's `threads`)
    flow_preset: str = "medium"  # DIS preset of the flow file (ultrafast, fast, medium)

    # keys a resumed run may change; any other change is refused (it would not be the same training)
    RUN_KEYS = ("iterations", "checkpoint_every", "keep_checkpoints", "log_every", "eval_frames", "device", "amp", "threads")
    # keys added after generators had been trained without them, at the value that trains exactly as before: left out
    # of the fingerprint while they hold it, and a saved record without them had them at it
    NEUTRAL_KEYS = {"lambda_eyes": 0.0}

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
            "di_frames": self.di_frames in ("all", "last"),
            "gan_mode": self.gan_mode in GAN_MODES,
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
            "flow_preset": self.flow_preset in DIS_PRESETS,
            "ema_decay": 0 <= self.ema_decay < 1,
            "neural_texture": self.neural_texture >= 0 and (self.neural_texture == 0 or "correspondence" in self.streams),
            "lambda_eyes": self.lambda_eyes >= 0 and (self.lambda_eyes == 0 or "gaze" in self.streams),
        }
        for k in ("lambda_gan_image", "lambda_gan_video", "lambda_fm", "lambda_l1", "lambda_warp", "lr_g", "lr_d", "lr_texture"):
            check[k] = getattr(self, k) >= 0
        bad = [k for k, ok in check.items() if not ok]
        if bad:
            k = bad[0]
            hint = {
                "size": f"two positive sides divisible by 2**gen_depth = {2**self.gen_depth}",
                "clip_len": ">= 2 while D_V or the warp term is on",
                "di_num_D": f"the coarsest scale needs >= {min_input_size(self.di_layers, self.di_num_D)} px",
                "dv_num_D": f"the coarsest scale needs >= {min_input_size(self.dv_layers, self.dv_num_D)} px",
                "ema_decay": "0 (off) <= ema_decay < 1",
                "neural_texture": "0 (off), or channels >= 1 with 'correspondence' among gan.streams (the texture is sampled through it)",
                "lambda_eyes": "0 (off), or > 0 with 'gaze' among gan.streams (its eye openings place the eyes)",
            }.get(k, "see deep_puppets/gan/settings.py TrainSettings")
            raise ConfigError(f"gan.{k} = {getattr(self, k)!r} is invalid ({hint})")

    @classmethod
    def from_config(cls, section: Mapping | None) -> "TrainSettings":
        """Settings from the config's ``gan`` section (missing keys take the defaults; unknown keys are errors)."""
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
        d = {k: v for k, v in self.to_dict().items() if k not in self.RUN_KEYS and not (k in self.NEUTRAL_KEYS and v == self.NEUTRAL_KEYS[k])}
        if inputs:
            d = {"settings": d, "inputs": dict(inputs)}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def in_channels(self) -> int:
        """Generator input channels: 3 per stream per window frame, + 3 per fed-back frame."""
        return 3 * len(self.streams) * self.window + 3 * self.prev_frames

    @property
    def correspondence_channel(self) -> int:
        """First of the 3 input channels holding the current frame's correspondence image (the window's newest
        frame comes last, its streams in order; fed-back frames follow the window)."""
        n = 3 * len(self.streams)
        return n * (self.window - 1) + 3 * self.streams.index("correspondence")

    @property
    def use_video_d(self) -> bool:
        return self.lambda_gan_video > 0 and self.clip_len >= 2


def min_input_size(n_layers: int, num_D: int) -> int:
    """Smallest image side a multi-scale PatchGAN takes: the coarsest scale must keep >= 3 px after the
    stride-2 layers (two stride-1 4×4 convolutions follow)."""
    return 3 * 2 ** (n_layers + num_D - 1)

