"""The trained generator: built from its settings, its file (written once training ends, read for synthesis and
evaluation) and run over a sequence of conditioning frames.

Inference imports no training code (nothing of :mod:`.train`, :mod:`.trainer`, :mod:`.losses`,
:mod:`.checkpoints`): a generator file is read here, with :func:`~.torch_files.load_verified` (weights_only,
checksum and finiteness verified).

The conditioning window of frame ``t`` is assembled exactly as in training (:func:`~.data.window_indices`,
padded by repeating the sequence's first frame). With ``prev_frames > 0`` the frames are generated in order and
the previous outputs are fed back, zeros before the first one — as at the start of a training clip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .data import stack_window, window_indices
from .networks import NeuralTexture, TexturedGenerator, UNetGenerator
from .settings import TrainSettings
from .torch_files import atomic_save, check_finite, load_verified, seal

GENERATOR_FORMAT = "deep_puppets.gan.generator/2"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; a named CUDA device that is absent is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"gan.device = {name!r} but no CUDA device is available")
    return dev


def build_generator(s: TrainSettings) -> UNetGenerator | TexturedGenerator:
    """G of these settings: the U-Net, behind a neural texture when ``neural_texture`` > 0 (same input either way)."""
    unet = UNetGenerator(s.in_channels + s.neural_texture, 3, s.gen_base, s.gen_depth, s.gen_max_ch, s.gen_norm, s.gen_out)
    if not s.neural_texture:
        return unet
    return TexturedGenerator(unet, NeuralTexture(s.neural_texture), s.correspondence_channel)


def save_generator(trainer, path, inputs: Mapping[str, str] | None = None) -> Path:
    """The final generator of ``trainer`` (a :class:`~.trainer.Trainer`, or anything with ``generator``, ``s`` and
    ``iteration``): its weights (the moving average when ``gan.ema_decay`` > 0), settings, inputs' hashes,
    iteration count and checksum; atomic."""
    path = Path(path)
    state = {"format": GENERATOR_FORMAT, "iteration": int(trainer.iteration), "settings": trainer.s.to_json(),
             "inputs": json.dumps(dict(inputs or {}), sort_keys=True),
             "G": {k: v.detach().cpu() for k, v in trainer.generator.state_dict().items()}}
    check_finite(state, trainer.iteration)
    atomic_save(seal(state), path)
    return path


def load_generator(path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainSettings]:
    """Load a generator written by :func:`save_generator` (weights_only, checksum and finiteness verified: a
    damaged file is one :class:`InputError`); returns ``(G in eval mode, settings)``."""
    state = load_verified(path, GENERATOR_FORMAT, "generator file")
    settings = TrainSettings(**json.loads(state["settings"]))
    G = build_generator(settings)
    G.load_state_dict(state["G"])
    return G.to(device).eval(), settings

def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] → ``(H, W, 3)`` uint8."""
    return (img.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def generate(G: torch.nn.Module, conditioning: Mapping[str, object], frames: Sequence[int], settings: TrainSettings,
             device: str | torch.device = "cpu", first: int = 0, batch_size: int = 8) -> Iterator[np.ndarray]:
    """Yield the generated frame ``(H, W, 3)`` uint8 at the training size for each index in ``frames`` (in order).

    ``conditioning``: stream -> (T, H', W', 3) uint8 array-likes (any size: resized to ``settings.size``);
    ``first``: the sequence's first frame (window padding repeats it).
    """
    device = torch.device(device)
    s = settings
    was_training = G.training
    G.eval()
    try:
        def cond(t):
            return stack_window(conditioning, s.streams, window_indices(int(t), s.window, first), s.size)

        if s.prev_frames == 0:
            for i in range(0, len(frames), batch_size):
                x = torch.from_numpy(np.stack([cond(t) for t in frames[i:i + batch_size]])).to(device)
                for y in G(x):
                    yield to_uint8(y)
        else:
            prev = [torch.zeros((1, 3) + tuple(s.size), device=device)] * s.prev_frames
            for t in frames:
                x = torch.from_numpy(cond(t)[None]).to(device)
                y = G(torch.cat([x, *prev], 1))
                prev = prev[1:] + [y]
                yield to_uint8(y[0])
    finally:
        G.train(was_training)

