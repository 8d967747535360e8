"""The GAN's torch files written and read safely: atomic save, a sha256 seal over their contents, verified load.

Checkpoints (:mod:`.checkpoints`) and the generator file (:mod:`.inference`) are dicts saved with ``torch.save``
and sealed (:func:`seal`: a sha256 over all their tensors and values, :func:`state_digest`); :func:`load_verified`
loads one with ``torch.load(..., weights_only=True)`` and checks its format, the seal and the weights'
finiteness, every failure one :class:`~deep_puppets.errors.InputError`. Neither training nor inference: both use it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import DeepPuppetsError, InputError


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary beside ``path``, then renamed over it (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def seal(state: dict) -> dict:
    """``state`` with its :func:`state_digest` added as ``sha256`` (the last key)."""
    return {**state, "sha256": state_digest(state)}


def nonfinite_networks(state: Mapping) -> list[str]:
    """Networks (G, D_I, D_V) in ``state`` with a non-finite weight."""
    return [net for net in ("G", "D_I", "D_V") if net in state
            and not all(torch.isfinite(t).all() for t in state[net].values() if t.is_floating_point())]


def load_verified(path, fmt: str, what: str) -> dict:
    """``torch.load`` (weights_only) of a file written by :func:`seal`; every failure is one :class:`InputError`:
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
    bad = nonfinite_networks(state)
    if bad:
        raise InputError(path, f"has non-finite weights in {', '.join(bad)} (the training diverged)")
    return state


def check_finite(state: Mapping, iteration: int) -> None:
    """Refuse to save a ``state`` with a non-finite weight: the training diverged (:class:`DeepPuppetsError`)."""
    bad = nonfinite_networks(state)
    if bad:
        raise DeepPuppetsError(f"GAN training diverged: non-finite weights in {', '.join(bad)} at iteration {iteration}; "
                               "lower gan.lr_g / gan.lr_d")

