"""One GAN training iteration: G, D_I, D_V, their optimisers and the gradient scaler (:class:`Trainer`), and the
state a resumed run needs (weights, optimisers, iteration counter, RNG states).

One iteration takes a batch of clips of ``clip_len`` consecutive training frames (:mod:`.data`), generates the
clip frame by frame (feeding back the previous outputs when ``prev_frames > 0``; detached, zeros before the
clip's first frame — the same as at the start of a synthesised sequence), then

* updates G on ``λ_gan_image·GAN(D_I) + λ_gan_video·GAN(D_V) + λ_fm·(FM(D_I) + FM(D_V)) + λ_l1·L1
  + λ_warp·warp`` (warp: the previous generated frame warped with the real flow vs the current one, masked
  where the flow does not explain the real frames) ``+ λ_l1·texture`` with a neural texture (its first three
  channels against the real frame on the face, L1: as in deferred neural rendering, the texture learns the
  face's colours by itself, which gives its features a meaning early on; learning rate ``lr_texture``);
* updates D_I (current conditioning image ⊕ real/generated frame: every frame of the clip, or its last only with
  ``di_frames: last``) and D_V (K frames ⊕ real flow).

Device: ``device="auto"`` picks CUDA when present, with mixed precision (``torch.autocast`` float16 +
``GradScaler``) when ``amp``. On CPU everything is float32, unless ``cpu_bfloat16`` and the CPU has bfloat16
units (:func:`cpu_has_bfloat16`: AVX512-BF16 or AMX): then G and the discriminators run under ``torch.autocast``
bfloat16 (weights, optimiser state and losses stay float32; G's output layer too), ~1.4× faster at 256² on 2
cores; synthesis and evaluation stay float32. On a CPU without them bfloat16 is emulated and ~100× slower, so the
setting is ignored there (logged).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Mapping

import numpy as np
import torch

from . import losses as L
from .checkpoints import CHECKPOINT_FORMAT
from .inference import build_generator, resolve_device
from .networks import MultiscaleDiscriminator
from .settings import TrainSettings

log = logging.getLogger("deep_puppets.gan")
EYE_WIDEN_DIVISOR = 16  # lambda_eyes: the eye openings are widened by the crop side / this (16 px at 256²: the lids)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as oneDNN sees it."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: assume not
        return False


def autocast_dtype(settings: TrainSettings, device: torch.device) -> torch.dtype | None:
    """The autocast precision of training on ``device``: float16 on CUDA with ``amp``, bfloat16 on a CPU with
    bfloat16 units when ``cpu_bfloat16``, else None (float32)."""
    if device.type == "cuda":
        return torch.float16 if settings.amp else None
    if device.type == "cpu" and settings.cpu_bfloat16 and cpu_has_bfloat16():
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self.amp_dtype = autocast_dtype(settings, self.device)
        self.amp = self.amp_dtype is not None
        if settings.cpu_bfloat16 and self.device.type == "cpu" and not self.amp:
            log.info("gan.cpu_bfloat16: this CPU has no bfloat16 units (AVX512-BF16 or AMX); training in float32")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.G = build_generator(settings).to(self.device)
        # the weights' exponential moving average (gan.ema_decay): what is saved, evaluated and synthesised
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if settings.ema_decay > 0 else None
        self.D_I = build_image_discriminator(settings).to(self.device)
        self.D_V = build_video_discriminator(settings).to(self.device)
        betas = (settings.beta1, settings.beta2)
        groups = ([{"params": self.G.unet.parameters()}, {"params": self.G.texture.parameters(), "lr": settings.lr_texture}]
                  if settings.neural_texture else [{"params": self.G.parameters()}])
        self.opt_G = torch.optim.Adam(groups, lr=settings.lr_g, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_I.parameters(), *self.D_V.parameters()], lr=settings.lr_d, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.iteration = 0  # iterations completed

    @property
    def generator(self) -> torch.nn.Module:
        """The generator that is saved and evaluated: the moving average when ``ema_decay`` > 0, else G."""
        return self.G if self.G_ema is None else self.G_ema

    @torch.no_grad()
    def _update_ema(self) -> None:
        """G_ema ← d·G_ema + (1 − d)·G after each G update; d = min(ema_decay, (1 + i) / (10 + i)) at iteration i
        (0-based), so that the average forgets the random initial weights quickly (as in common GAN practice)."""
        d = min(self.s.ema_decay, (1 + self.iteration) / (10 + self.iteration))
        for avg, cur in zip(self.G_ema.parameters(), self.G.parameters()):
            avg.lerp_(cur.detach(), 1.0 - d)
        for avg, cur in zip(self.G_ema.buffers(), self.G.buffers()):
            avg.copy_(cur)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp)

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
        """D_I input: current conditioning ⊕ frame, for every clip frame (flattened into the batch), or with
        ``di_frames: last`` for each clip's last frame only."""
        if self.s.di_frames == "last":
            return torch.cat([cur.unflatten(0, frames.shape[:2])[:, -1], frames[:, -1]], 1)
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
                 "g_fm": L.feature_matching_loss(pi_real, pi_fake), "g_l1": L.l1_loss(fake, real), "g_warp": zero,
                 "g_texture": zero, "g_eyes": zero}
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
        if s.lambda_eyes > 0:  # the eyes of every clip frame, where its conditioning (``cur``: streams in order) draws them
            c = 3 * s.streams.index("gaze")
            eyes = L.eye_region(cur[:, c : c + 3], max(1, round(min(s.size) / EYE_WIDEN_DIVISOR)))
            parts["g_eyes"] = L.region_l1_loss(fake.flatten(0, 1), real.flatten(0, 1), eyes)
        if s.neural_texture:  # the clip's last frame was generated last: its sampled features
            parts["g_texture"] = L.texture_colour_loss(self.G.sampled, self.G.on_surface, real[:, -1])
        parts["loss_g"] = (s.lambda_gan_image * parts["g_gan_image"] + s.lambda_gan_video * parts["g_gan_video"]
                           + s.lambda_fm * parts["g_fm"] + s.lambda_l1 * (parts["g_l1"] + parts["g_texture"]) + s.lambda_warp * parts["g_warp"]
                           + s.lambda_eyes * parts["g_eyes"])
        return parts

    def _discriminator_losses(self, cur, real, fake, fv) -> dict[str, torch.Tensor]:
        """Real and generated inputs go through each discriminator as one batch."""
        s, b = self.s, real.shape[0]
        real_in = self._image_input(cur, real)
        pi = self.D_I(torch.cat([real_in, self._image_input(cur, fake)], 0))
        parts = {"d_image": L.discriminator_loss(*_split(pi, len(real_in)), s.gan_mode),
                 "d_video": torch.zeros((), device=self.device)}
        if s.use_video_d:
            pv = self.D_V(torch.cat([self._video_input(real, fv), self._video_input(fake, fv)], 0))
            parts["d_video"] = L.discriminator_loss(*_split(pv, b), s.gan_mode)
        return parts

    def step(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """One G update, then one D_I + D_V update, on ``batch`` (from :meth:`ClipDataset.batch`); returns the
        losses (see :data:`~.training_log.LOSS_COLUMNS`)."""
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
        if self.G_ema is not None:
            self._update_ema()

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
            **({} if self.G_ema is None else {"G_ema": self.G_ema.state_dict()}),
            "D_I": self.D_I.state_dict(),
            "D_V": self.D_V.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.G.load_state_dict(state["G"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        self.D_I.load_state_dict(state["D_I"])
        self.D_V.load_state_dict(state["D_V"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.scaler.is_enabled() and state["scaler"]:
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

