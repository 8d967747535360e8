"""Losses: adversarial (least squares or hinge), discriminator feature matching, L1, flow-warp temporal term, and
the neural texture's own colour term.

Discriminator outputs are what :class:`~deep_puppets.gan.networks.MultiscaleDiscriminator` returns: per scale a
list of block features whose last entry is the logits map. Losses average over scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .settings import GAN_MODES


def _logits(preds: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [scale[-1].float() for scale in preds]


def discriminator_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], mode: str = "lsgan") -> torch.Tensor:
    """D's loss: real patches towards "real", generated ones towards "fake".

    lsgan: ``½·mean((D(real) − 1)²) + ½·mean(D(fake)²)``; hinge: ``mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))``.
    """
    total = 0.0
    for r, f in zip(_logits(real), _logits(fake)):
        if mode == "lsgan":
            total = total + 0.5 * (F.mse_loss(r, torch.ones_like(r)) + F.mse_loss(f, torch.zeros_like(f)))
        elif mode == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            raise ValueError(f"unknown gan mode {mode!r}; known: {GAN_MODES}")
    return total / len(real)


def generator_gan_loss(fake: list[list[torch.Tensor]], mode: str = "lsgan") -> torch.Tensor:
    """G's adversarial loss. lsgan: ``mean((D(fake) − 1)²)``; hinge: ``−mean(D(fake))``."""
    total = 0.0
    for f in _logits(fake):
        if mode == "lsgan":
            total = total + F.mse_loss(f, torch.ones_like(f))
        elif mode == "hinge":
            total = total - f.mean()
        else:
            raise ValueError(f"unknown gan mode {mode!r}; known: {GAN_MODES}")
    return total / len(fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """pix2pixHD feature matching: L1 between D's intermediate features of real and generated inputs
    (the logits excluded; real features detached), averaged over layers and scales."""
    total, n = 0.0, 0
    for r_scale, f_scale in zip(real, fake):
        for r, f in zip(r_scale[:-1], f_scale[:-1]):
            total = total + F.l1_loss(f.float(), r.detach().float())
            n += 1
    return total / max(n, 1)


def flow_grid(flow: torch.Tensor) -> torch.Tensor:
    """Sampling grid for :func:`torch.nn.functional.grid_sample` from a flow ``(B, 2, H, W)`` in pixels."""
    b, _, h, w = flow.shape
    kw = dict(device=flow.device, dtype=flow.dtype)
    ys, xs = torch.meshgrid(torch.arange(h, **kw), torch.arange(w, **kw), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    gx = 2 * x / max(w - 1, 1) - 1
    gy = 2 * y / max(h - 1, 1) - 1
    return torch.stack([gx, gy], dim=-1)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(p) = img(p + flow(p))`` (bilinear, border pixels repeated).

    With the flow convention of :mod:`deep_puppets.gan.flow`, warping frame t-1 with ``flow[t]`` predicts frame t.
    """
    return F.grid_sample(img.float(), flow_grid(flow.float()), mode="bilinear", padding_mode="border", align_corners=True)


def warp_mask(prev_real: torch.Tensor, cur_real: torch.Tensor, flow: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B, 1, H, W)`` 1 where the flow explains the real frames (warped previous within ``threshold`` of the
    current, mean absolute RGB difference), 0 at occlusions and flow failures. ``threshold <= 0``: all ones."""
    if threshold <= 0:
        return torch.ones_like(cur_real[:, :1])
    err = (warp(prev_real, flow) - cur_real.float()).abs().mean(1, keepdim=True)
    return (err < threshold).float()


def temporal_warp_loss(prev_fake: torch.Tensor, cur_fake: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 between the previous generated frame warped with the real flow and the current one."""
    diff = (warp(prev_fake, flow) - cur_fake.float()).abs() * mask
    return diff.sum() / (mask.sum() * cur_fake.shape[1]).clamp_min(1.0)


def l1_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(fake.float(), real.float())


def eye_region(gaze: torch.Tensor, widen: int) -> torch.Tensor:
    """(N, 1, H, W) the eyes of gaze images ``gaze`` (N, 3, H, W; eye openings and irises on black): their drawn
    pixels widened by ``widen`` pixels each way, so a closed eye (its opening a line) still covers its lids."""
    drawn = (gaze.float().amax(1, keepdim=True) > 0.1).float()
    return F.max_pool2d(drawn, 2 * widen + 1, stride=1, padding=widen) if widen > 0 else drawn


def region_l1_loss(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over the pixels of ``region`` (N, 1, H, W); 0 where it is empty."""
    m = region.float()
    return ((fake.float() - real.float()).abs() * m).sum() / (fake.shape[1] * m.sum()).clamp_min(1)


def texture_colour_loss(features: torch.Tensor, on_surface: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between a neural texture's first three sampled channels and the real frame,
    over the pixels the texture was sampled on (``on_surface``, (B, 1, H, W)); 0 where none was."""
    m = on_surface.float()
    return ((features[:, :3].float() - real.float()).abs() * m).sum() / (3 * m.sum()).clamp_min(1)
