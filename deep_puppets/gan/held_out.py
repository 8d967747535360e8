"""Held-out self-reenactment at full resolution: the generator and the baselines pasted over the real frames.

For a held-out frame ``t`` of the target (never trained on), the generator is given only the conditioning of
``t`` (its window of conditioning frames, as in training); its crop is pasted with the face mask
:func:`~deep_puppets.composite.face_alpha` of ``t``'s rendered colour conditioning over the REAL frame ``t`` at
full resolution (the plate), at ``t``'s crop box. The pixels inside the mask, where it is scored, are never
given to it. The baselines are pasted with the same mask over the same plate:

* ``nearest`` — the real crop (at its own box, at the crop size) of the training frame whose fitted expression
  and pose are closest (:func:`~.baselines.nearest_neighbours`);
* ``alpha`` — the original proposal's alpha compositing: ``t``'s rendered colour conditioning over that
  retrieved crop with the render's silhouette (:func:`alpha_composite`);
* ``mean`` — the per-pixel mean training crop.

Outside the mask every method's frame is the real frame bit for bit (:func:`~deep_puppets.composite.paste`),
so differences over the whole frame come only from inside the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..composite import face_alpha, frame_alpha, paste, silhouette
from ..evaluation import METHODS
from .baselines import mean_frame, nearest_neighbours
from .data import resize
from .inference import generate


@dataclass
class Composites:
    """One scored held-out frame: the plate (the real frame), the crop box, the blend mask in frame coordinates
    and each method's full-resolution frame."""

    frame: int
    real: np.ndarray  # (H, W, 3) uint8
    box: np.ndarray  # (4,) x0, y0, x1, y1
    alpha: np.ndarray  # (H, W) float32 in [0, 1]
    methods: dict  # name -> (H, W, 3) uint8
    nearest: int  # the retrieved training frame


def alpha_composite(crop: np.ndarray, colour_crop: np.ndarray) -> np.ndarray:
    """The rendered colour conditioning over ``crop`` where it shows the face (its silhouette), ``crop``
    elsewhere (both (S, S, 3) uint8)."""
    return np.where(silhouette(colour_crop)[..., None], colour_crop, crop)


def held_out_composites(G, settings, conditioning: Mapping[str, object], boxes: np.ndarray, crops, features: np.ndarray,
                        train: Sequence[int], held: Sequence[int], scored: np.ndarray, plates: Iterable[np.ndarray],
                        grow: float, feather: float, device="cpu") -> Iterator[Composites]:
    """Yield :class:`Composites` for each held-out frame with ``scored`` True, in order, one frame at a time.

    ``conditioning``: the target's own streams (``colour`` among them); ``boxes`` (T, 4) its crop boxes;
    ``crops``: the real crops (T, S, S, 3) at the training size (a flow file's ``frames``); ``features`` (T, D)
    fitted expression and pose; ``train`` / ``held``: the generator's split; ``scored`` (len(held),) bool;
    ``plates``: the real frames ``held[0] … held[-1]`` at full resolution, in order.
    """
    size = tuple(settings.size)
    held = np.asarray(held, np.int64)
    return composites(G, settings, conditioning, boxes, held, scored, plates, grow, feather, crops,
                      nearest_neighbours(features, train, held), mean_frame(crops, train, size), device)


def composites(G, settings, conditioning: Mapping[str, object], boxes: np.ndarray, frames: Sequence[int], scored: np.ndarray,
               plates: Iterable[np.ndarray], grow: float, feather: float, crops, retrieved: Sequence[int], mean: np.ndarray,
               device="cpu") -> Iterator[Composites]:
    """:func:`held_out_composites` with the baselines' material given: for each of ``frames`` (consecutive, of the
    recording whose ``conditioning``, ``boxes`` and ``plates`` these are) the index into ``crops`` (real crops of
    the generator's training recording, at the training size) that retrieval picked, and the mean training crop.
    The training recording may be another one (:mod:`deep_puppets.cross_recording`)."""
    size = tuple(settings.size)
    frames = np.asarray(frames, np.int64)
    scored = np.asarray(scored, bool)
    plates = iter(plates)
    # every frame is generated, in order, as in synthesis (prev_frames feeds back the previous output)
    for i, (t, crop) in enumerate(zip(frames, generate(G, conditioning, frames, settings, device))):
        real = next(plates, None)
        if real is None:
            raise ValueError(f"the video ended before frame {int(t)}")
        if not scored[i]:
            continue
        box = np.asarray(boxes[t], np.float64)
        colour = resize(np.asarray(conditioning["colour"][t]), size)
        alpha = face_alpha(colour, grow, feather)
        retrieved_crop = resize(np.asarray(crops[int(retrieved[i])]), size)
        layers = {"gan": crop, "nearest": retrieved_crop, "alpha": alpha_composite(retrieved_crop, colour), "mean": mean}
        yield Composites(
            frame=int(t),
            real=real,
            box=box,
            alpha=frame_alpha(alpha, box, real.shape[:2]),
            methods={m: paste(real, layers[m], alpha, box) for m in METHODS},
            nearest=int(retrieved[i]),
        )
