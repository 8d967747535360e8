"""Generator and discriminators of the rendering-to-video GAN (vid2vid / pix2pixHD style, small and plain).

* :class:`UNetGenerator` — space-time encoder-decoder: the conditioning images of the last ``L`` frames (and
  optionally the previously generated frames) are stacked along channels; the U-Net outputs the whole frame
  (face, hair, body, background) in [0, 1] (sigmoid, or tanh rescaled).
* :class:`NeuralTexture` / :class:`TexturedGenerator` (``gan.neural_texture``) — deferred neural rendering (Thies et
  al. 2019): a learned multi-resolution feature texture, sampled per pixel through the current frame's
  correspondence image and given to the U-Net as extra input channels.
* :class:`PatchDiscriminator` — PatchGAN: ``n_layers`` stride-2 4×4 convolutions, then two stride-1 4×4
  convolutions; every output pixel judges one input patch (its *receptive field*).
* :class:`MultiscaleDiscriminator` — ``num_D`` PatchGANs, scale ``i`` sees the input average-pooled ``i`` times
  (3×3, stride 2), i.e. patches ``≈ 2^i`` times larger. Used for the image discriminator D_I (conditioned on the
  current conditioning image) and the video discriminator D_V (K consecutive frames + the real flow).

**Receptive field (patch size).** :func:`receptive_field` gives, in input pixels, the side of the patch one output
pixel of a scale sees; the coarsest scale sees the largest patch, :func:`receptive_fields` lists all scales.
With the defaults (n_layers=3): 70 px at scale 0, 141 px with num_D=2, 283 px with num_D=3, 567 with num_D=4;
n_layers=4 gives 142 / 285 / 571. The seed report found that with too small a patch the discriminator cannot
see head and shoulders together and the generated head *detaches from the body* when it turns; make the
coarsest patch cover head and shoulders (about the frame height for a portrait crop): at 256² use num_D=3
(or n_layers=4, num_D=2), at 128² num_D=2, at 512² num_D=3 with n_layers=4. Larger patches cost little
(each scale is a quarter of the previous one's work). The count is for the convolutions alone: instance
normalisation adds whole-image statistics but no spatial detail, and zero padding lets border pixels see less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 4  # PatchGAN convolutions
POOL = (3, 2)  # kernel, stride of the downsampling between scales


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (instance, batch, none)")


def layer_stack(n_layers: int, scale: int = 0) -> list[tuple[int, int]]:
    """(kernel, stride) of every layer from the input to one output pixel of scale ``scale``."""
    pools = [POOL] * scale
    convs = [(KERNEL, 2)] * n_layers + [(KERNEL, 1), (KERNEL, 1)]
    return pools + convs


def receptive_field(n_layers: int, scale: int = 0) -> int:
    """Side in input pixels of the patch seen by one output pixel of PatchGAN scale ``scale``.

    Backwards from one output pixel: a layer with kernel k and stride s turns a span of r pixels into
    ``(r - 1) * s + k``. Scale ``scale`` adds ``scale`` 3×3 stride-2 average pools in front.
    """
    r = 1
    for k, s in reversed(layer_stack(n_layers, scale)):
        r = (r - 1) * s + k
    return r


def receptive_fields(n_layers: int, num_D: int) -> list[int]:
    """Receptive field of every scale of a :class:`MultiscaleDiscriminator` (finest first)."""
    return [receptive_field(n_layers, i) for i in range(num_D)]


class UNetGenerator(nn.Module):
    """U-Net: ``depth`` stride-2 4×4 conv downsamplings, nearest-upsample + 3×3 conv upsamplings, skips.

    Input ``(B, in_ch, H, W)`` in [0, 1] with H and W divisible by ``2**depth``; output ``(B, 3, H, W)`` in [0, 1].
    """

    def __init__(self, in_ch: int, out_ch: int = 3, base: int = 64, depth: int = 6, max_ch: int = 512,
                 norm: str = "instance", out: str = "sigmoid"):
        super().__init__()
        if out not in ("sigmoid", "tanh"):
            raise ValueError(f"unknown output {out!r} (sigmoid, tanh)")
        self.depth, self.out = depth, out
        chs = [min(base * 2**i, max_ch) for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_ch
        for i, ch in enumerate(chs):
            layers = [nn.Conv2d(prev, ch, KERNEL, 2, 1)]
            if 0 < i < depth - 1:  # no norm on the input layer (pix2pix) or the 1-pixel-small innermost one
                layers.append(_norm(norm, ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*layers))
            prev = ch
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            skip = chs[i - 1] if i > 0 else 0
            out_c = chs[i - 1] if i > 0 else base
            in_c = prev
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_c, out_c, 3, 1, 1),
                                         _norm(norm, out_c), nn.ReLU(inplace=True)))
            prev = out_c + skip
        self.head = nn.Conv2d(prev, out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.depth
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input {tuple(x.shape[-2:])} must be divisible by {m} (2**depth)")
        h = x * 2 - 1
        skips = []
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        skips.pop()  # the innermost output is h itself
        for layer in self.up:
            h = layer(h)
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        with torch.autocast(h.device.type, enabled=False):  # the output layer in float32 under mixed precision
            y = self.head(h.float())
        return torch.sigmoid(y) if self.out == "sigmoid" else (torch.tanh(y) + 1) / 2


TEXTURE_LEVELS = (256, 128, 64, 32)  # sides of the neural texture's pyramid levels


class NeuralTexture(nn.Module):
    """A learned ``channels``-channel texture, a pyramid of :data:`TEXTURE_LEVELS` square levels summed after
    bilinear sampling (coarse levels learn fast, fine ones add detail, as in deferred neural rendering).

    Texture coordinates are the correspondence image's first two channels (the surface point's x and y on the
    model's mean shape, in [0, 1]): a frontal projection of the face, one texel per surface point whatever the
    pose or expression. Zero-initialised, so an untrained texture adds nothing.
    """

    def __init__(self, channels: int, levels: tuple[int, ...] = TEXTURE_LEVELS):
        super().__init__()
        self.levels = nn.ParameterList(nn.Parameter(torch.zeros(1, channels, n, n)) for n in levels)

    def forward(self, uv: torch.Tensor, on_surface: torch.Tensor) -> torch.Tensor:
        """``uv`` (B, 2, H, W) in [0, 1], ``on_surface`` (B, 1, H, W) in {0, 1} → features (B, C, H, W), zero off the surface."""
        grid = (uv * 2 - 1).permute(0, 2, 3, 1)
        out = sum(F.grid_sample(t.expand(uv.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                                align_corners=False) for t in self.levels)
        return out * on_surface


class TexturedGenerator(nn.Module):
    """:class:`NeuralTexture` in front of a U-Net: the texture is sampled through the current frame's
    correspondence image (input channels ``corr`` … ``corr + 3``; the background is black there) and its features go
    in front of the input. Same input and output as the U-Net alone; :attr:`sampled` and :attr:`on_surface` keep
    the last call's features and where they were sampled (for the texture's own colour loss in training)."""

    def __init__(self, unet: UNetGenerator, texture: NeuralTexture, corr: int):
        super().__init__()
        self.unet, self.texture, self.corr = unet, texture, int(corr)
        self.sampled: torch.Tensor | None = None
        self.on_surface: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corr = x[:, self.corr:self.corr + 3]
        self.on_surface = (corr.sum(1, keepdim=True) > 0).to(x.dtype)
        self.sampled = self.texture(corr[:, :2], self.on_surface)
        return self.unet(torch.cat([self.sampled.to(x.dtype), x], 1))


class PatchDiscriminator(nn.Module):
    """PatchGAN; :meth:`forward` returns the list of every block's features, the last being the logits map."""

    def __init__(self, in_ch: int, base: int = 64, n_layers: int = 3, max_ch: int = 512, norm: str = "instance"):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_ch, base, KERNEL, 2, 1), nn.LeakyReLU(0.2, inplace=True))]
        ch = base
        for i in range(1, n_layers):
            nxt = min(base * 2**i, max_ch)
            blocks.append(nn.Sequential(nn.Conv2d(ch, nxt, KERNEL, 2, 1), _norm(norm, nxt), nn.LeakyReLU(0.2, inplace=True)))
            ch = nxt
        nxt = min(base * 2**n_layers, max_ch)
        blocks.append(nn.Sequential(nn.Conv2d(ch, nxt, KERNEL, 1, 1), _norm(norm, nxt), nn.LeakyReLU(0.2, inplace=True)))
        blocks.append(nn.Sequential(nn.Conv2d(nxt, 1, KERNEL, 1, 1)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on the input downsampled 2**i times; returns per scale the list of features."""

    def __init__(self, in_ch: int, base: int = 64, n_layers: int = 3, num_D: int = 2, max_ch: int = 512, norm: str = "instance"):
        super().__init__()
        self.n_layers, self.num_D = n_layers, num_D
        self.scales = nn.ModuleList(PatchDiscriminator(in_ch, base, n_layers, max_ch, norm) for _ in range(num_D))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, POOL[0], POOL[1], padding=1, count_include_pad=False)
            out.append(d(x))
        return out

    @property
    def receptive_fields(self) -> list[int]:
        return receptive_fields(self.n_layers, self.num_D)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
