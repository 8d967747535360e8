"""Honest baselines for the held-out frames, and the photometric error the report uses.

A GAN result means something only next to what trivial methods achieve on the *same* held-out frames at the
*same* size:

* **nearest-neighbour retrieval** — for each held-out frame, the training frame whose fitted expression and
  pose parameters are closest (Euclidean distance after standardising every parameter with the *training*
  frames' mean and standard deviation, so no unit dominates);
* **mean frame** — the per-pixel mean of the training frames.

``E_col`` (seed report, "Quantitative Evaluation"): ``E_col(C_s, C_i) = 1/|C_i| Σ_p ‖C_s(p) − C_i(p)‖₂``, the mean
over pixels of the RGB Euclidean distance with colours in [0, 1] (0 … √3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..evaluation import e_col, error_map
from .data import resize


def photometric_error_map(synth, real) -> np.ndarray:
    """Per-pixel RGB L2 distance ``(…, H, W)`` (:func:`deep_puppets.evaluation.error_map`)."""
    return error_map(synth, real)


def photometric_error(synth, real) -> np.ndarray | float:
    """E_col of one frame ``(H, W, 3)`` (a float) or per frame of ``(T, H, W, 3)`` (a ``(T,)`` array)."""
    e = e_col(synth, real)
    return float(e) if np.ndim(e) == 0 else e


def standardise(features: np.ndarray, train: Sequence[int]) -> np.ndarray:
    """Features ``(T, D)`` with each column standardised by the training rows' mean and std (std 0 → 1).

    Non-finite values (frames without a fit) become the training mean (0 after standardising).
    """
    f = np.asarray(features, dtype=np.float64)
    ref = f[np.asarray(train)]
    mean = np.nanmean(np.where(np.isfinite(ref), ref, np.nan), axis=0)
    std = np.nanstd(np.where(np.isfinite(ref), ref, np.nan), axis=0)
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    z = (f - mean) / std
    return np.where(np.isfinite(z), z, 0.0)


def nearest_neighbours(features: np.ndarray, train: Sequence[int], query: Sequence[int]) -> np.ndarray:
    """For each ``query`` frame, the ``train`` frame with the closest standardised features (frame indices).

    Ties go to the first of them in ``train``'s order.
    """
    train = np.asarray(train, dtype=np.int64)
    query = np.asarray(query, dtype=np.int64)
    z = standardise(features, train)
    b = z[train]
    picks = np.empty(len(query), dtype=np.int64)
    for i in range(0, len(query), 16):  # exact differences (identical rows give exactly 0), bounded memory
        a = z[query[i:i + 16]]
        picks[i:i + 16] = np.argmin(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), axis=1)
    return train[picks]


def retrieval_baseline(frames, features: np.ndarray, train: Sequence[int], query: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour baseline: ``(len(query), H, W, 3)`` uint8, the retrieved training frames at ``size``."""
    picks = nearest_neighbours(features, train, query)
    return np.stack([resize(np.asarray(frames[int(t)]), tuple(size)) for t in picks])


def mean_frame(frames, train: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Per-pixel mean of the training frames at ``size``, ``(H, W, 3)`` uint8 (frames read one at a time)."""
    acc = None
    for t in train:
        img = resize(np.asarray(frames[int(t)]), tuple(size)).astype(np.float64)
        acc = img if acc is None else acc + img
    if acc is None:
        raise ValueError("no training frames")
    return np.clip(acc / len(train) + 0.5, 0, 255).astype(np.uint8)
