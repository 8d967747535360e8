"""Checkpoints of a GAN training run: written every ``checkpoint_every`` iterations, the newest usable one resumed.

``checkpoints/iter_XXXXXXXX.pt`` under a run folder (the last ``keep_checkpoints`` kept) holds G, D_I, D_V, both
optimisers, the gradient scaler, the iteration counter and the RNG states as tensors
(:meth:`~.trainer.Trainer.state_dict`), the settings and the content hashes of the inputs, sealed with a sha256
(:mod:`.torch_files`). A damaged checkpoint is skipped for the previous one; one of another training (other
settings than :attr:`~.settings.TrainSettings.RUN_KEYS`, other inputs) is refused (:func:`check_same_training`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, InputError
from .settings import TrainSettings
from .torch_files import atomic_save, check_finite, load_verified, seal

log = logging.getLogger("deep_puppets.gan")

CHECKPOINT_FORMAT = "deep_puppets.gan.checkpoint/2"


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
    """A checkpoint, verified (:func:`~.torch_files.load_verified`: checksum, finite weights)."""
    return load_verified(path, CHECKPOINT_FORMAT, "GAN checkpoint")


def save_checkpoint(trainer, out_dir, keep: int, inputs: Mapping[str, str] | None = None) -> Path:
    """Write ``trainer``'s :meth:`~.trainer.Trainer.state_dict` as the checkpoint of its iteration (sealed, atomic;
    refused when a weight is not finite) and delete all but the newest ``keep``."""
    state = trainer.state_dict(inputs)
    check_finite(state, trainer.iteration)
    path = checkpoint_path(out_dir, trainer.iteration)
    atomic_save(seal(state), path)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


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
    saved = {**TrainSettings.NEUTRAL_KEYS, **saved}  # a record from before a key was added had it at its neutral value
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

