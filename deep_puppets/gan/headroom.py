"""What limits a target's held-out score: the generator's own fit, or held-out faces unlike any training frame.

The evaluation says how far the generator is from the real held-out frames; it does not say why. Two measures
made beside it tell the cases apart, all in the head crop at the training size and over the face region (the
blend mask :func:`~deep_puppets.composite.face_alpha` of the frame's colour conditioning at least
:data:`~deep_puppets.evaluation.FACE_LEVEL`, the evaluation's face region), as PSNR over the region's pixels:

* **fit** — the generator on a sample of its own *training* frames against a sample of the held-out frames. Both
  low: it is under-trained (more iterations or a faster generator help); training high and held-out low: the
  held-out frames ask for what it did not learn.
* **oracle retrieval** — for each sampled frame, the single training crop closest to it *by the true pixels* of
  its face region: for held-out frames among all training frames, for training frames among those at least
  ``gap`` frames away (its own neighbours would be near copies). It uses the answer, so it is not a method but a
  bound on what retrieval could give; a held-out oracle well below the training one says the held-out part of the
  video shows faces (expressions, poses, lighting) unlike anything in the training part, which no per-target
  generator can know.

Frames are sampled evenly (at most ``n`` of each part, only frames whose face was detected and rendered); the
generator runs on contiguous runs of ``run`` frames, windows assembled as in training; fed-back outputs
(``prev_frames``) start from zeros at each run, as at the start of a training clip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..composite import face_alpha
from ..evaluation import FACE_LEVEL
from .data import resize
from .inference import generate

ORACLE_CHUNK = 32  # training crops compared at once (bounded memory)
MIN_MSE = 1e-10  # PSNR is capped at 100 dB (identical pixels)


def sample_runs(frames: Sequence[int], n: int, run: int = 1) -> np.ndarray:
    """At most ``n`` of ``frames`` (sorted indices), evenly spread, in runs of ``run`` consecutive entries."""
    frames = np.asarray(frames, np.int64)
    if len(frames) <= n:
        return frames
    starts = np.linspace(0, len(frames) - run, max(1, n // run)).round().astype(np.int64)
    picked = np.unique(np.concatenate([np.arange(s, s + run) for s in starts]))
    return frames[picked[picked < len(frames)]]


def face_mask(colour, size: tuple[int, int], grow: float, feather: float) -> np.ndarray:
    """The evaluation's face region (its blend mask, ``composite.grow`` / ``feather``) in a colour conditioning image
    resized to ``size``, (H, W) bool."""
    return face_alpha(resize(np.asarray(colour), size), grow, feather) >= FACE_LEVEL


def region_psnr(a, b, mask) -> float:
    """PSNR (dB, colours in [0, 1], at most 100) of ``a`` against ``b`` (uint8) over ``mask``'s pixels; NaN for an
    empty mask."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    d = np.asarray(a, np.float32)[mask] / 255.0 - np.asarray(b, np.float32)[mask] / 255.0
    return -10.0 * np.log10(max(float(np.mean(d * d)), MIN_MSE))


def oracle_retrieval(crops, masks: Mapping[int, np.ndarray], train: Sequence[int], query: Sequence[int], gap=0) -> np.ndarray:
    """Per ``query`` frame, the PSNR over its mask of the best single ``train`` crop (its own ``crops``; candidates
    at least ``gap`` frames away when ``gap`` > 0; ``gap`` is one number or one per query). ``crops``: (T, H, W, 3)
    uint8 at the mask size. Every training crop is read once."""
    train = np.asarray(train, np.int64)
    query = np.asarray(query, np.int64)
    gaps = np.broadcast_to(np.asarray(gap, np.int64), query.shape)
    real = {int(t): np.asarray(crops[int(t)], np.float32)[masks[int(t)]] / 255.0 for t in query}  # each read once
    best = np.full(len(query), np.inf)
    for i0 in range(0, len(train), ORACLE_CHUNK):
        chunk = train[i0:i0 + ORACLE_CHUNK]
        cand = np.stack([np.asarray(crops[int(t)]) for t in chunk]).astype(np.float32) / 255.0
        for j, t in enumerate(query):
            m = masks[int(t)]
            if not m.any():
                continue
            err = ((cand[:, m] - real[int(t)]) ** 2).mean(axis=(1, 2))
            if gaps[j] > 0:
                err[np.abs(chunk - t) < gaps[j]] = np.inf
            best[j] = min(best[j], float(err.min()))
    return np.where(np.isfinite(best), -10.0 * np.log10(np.maximum(best, MIN_MSE)), np.nan)


def headroom(G, settings, conditioning: Mapping[str, object], crops, train: Sequence[int], held: Sequence[int],
             *, grow: float, feather: float, device="cpu", n: int = 64, gap: int = 15, run: int = 8) -> dict:
    """The fit and oracle-retrieval measures (module docstring) of generator ``G`` on its target.

    ``conditioning``: the target's streams (``colour`` among them); ``crops``: the real crops (T, S, S, 3) at the
    training size (a flow file's ``frames``); ``train`` / ``held``: the frames to use (detected and rendered) of
    the generator's split; ``grow`` / ``feather``: the evaluation's blend mask (``composite`` settings)."""
    size = tuple(settings.size)
    parts = {"training": sample_runs(train, n, run), "held_out": sample_runs(held, n, run)}
    masks = {int(t): face_mask(conditioning["colour"][int(t)], size, grow, feather) for p in parts.values() for t in p}
    out: dict = {"measure": f"PSNR (dB) over the face region (blend mask >= {FACE_LEVEL:g}) of the head crop at the training size, "
                            "means over evenly sampled frames: 'gan' the generator, 'oracle_retrieval' the single training "
                            "crop closest by the true pixels (an upper bound of retrieval, not a method; for training frames "
                            f"among training frames at least {gap} frames away)",
                 "frames": {p: len(f) for p, f in parts.items()}, "gap_frames": gap, "gan": {}, "oracle_retrieval": {}}
    # one pass over the training crops for both parts: training frames skip their neighbours, held-out ones do not
    sizes = [len(f) for f in parts.values()]
    oracle = oracle_retrieval(crops, masks, train, np.concatenate(list(parts.values())), np.repeat([gap, 0], sizes))
    for part, frames, part_oracle in zip(parts, parts.values(), np.split(oracle, sizes[:1])):
        gan = []
        for k in range(0, len(frames), run):
            block = frames[k:k + run]
            fake = generate(G, conditioning, block, settings, device)
            gan += [region_psnr(f, resize(np.asarray(crops[int(t)]), size), masks[int(t)]) for t, f in zip(block, fake)]
        out["gan"][part] = _mean(gan)
        out["oracle_retrieval"][part] = _mean(part_oracle)
    out["gan_fit_gap_db"] = out["gan"]["training"] - out["gan"]["held_out"]
    out["oracle_gap_db"] = out["oracle_retrieval"]["training"] - out["oracle_retrieval"]["held_out"]
    return out


def _mean(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")
