"""Training pairs for the rendering-to-video GAN, assembled on the fly from per-frame arrays.

Inputs are per-frame arrays indexed by frame number ``t`` (numpy arrays or h5py datasets, read one frame at a
time, so a long video never has to fit in memory):

* conditioning streams, name -> ``(T, H, W, 3)`` uint8 (``colour``, ``correspondence``, ``gaze``, ...);
* the real target frames ``(T, H', W', 3)`` uint8 (any size: they are resized to the training size);
* optionally the optical flow of the real frames ``(T, h, w, 2)`` (see :mod:`deep_puppets.gan.flow`).

**Split by time.** :func:`split_frames` holds out the *last* ``held_out_fraction`` of the target; training uses
only the frames before it. Every window and clip is built from frames *at or before* its last frame, so nothing
built for a training frame reaches into the held-out frames (the tests check this for every clip).

**Conditioning window.** The generator's input for frame ``t`` stacks the conditioning images of the last ``L``
frames ``t-L+1 … t`` (:func:`window_indices`). Channel order: frames oldest → newest, and within a frame the
streams in the order given, 3 RGB channels each; so the current frame's conditioning is the *last*
``3 * n_streams`` channels. Before the first frame of a sequence the window is **padded by repeating the first
frame** (frame 0's window for L=3 is ``[0, 0, 0]``), the same in training and in synthesis. Windows are
assembled when a sample is read; nothing is duplicated on disk.

**Clips.** A training sample is a clip of ``K`` consecutive frames ``t-K+1 … t`` (all training frames), since the
video discriminator judges ``K`` consecutive frames and the generator may feed back its previous outputs.

Images are float32 in [0, 1], channels first. Flow is in pixels of the training size (see :mod:`.flow`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def split_frames(n_frames: int, held_out_fraction: float = 1 / 3) -> tuple[np.ndarray, np.ndarray]:
    """Split frames ``0 … n_frames-1`` by time: ``(train, held_out)`` index arrays.

    The held-out part is the last ``round(n_frames * held_out_fraction)`` frames; training gets everything
    before it (at least one frame). ``held_out_fraction = 0`` holds nothing out.
    """
    if n_frames < 1:
        raise ValueError(f"need at least one frame, got {n_frames}")
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    n_held = min(int(round(n_frames * held_out_fraction)), n_frames - 1)
    n_train = n_frames - n_held
    return np.arange(n_train), np.arange(n_train, n_frames)


def window_indices(t: int, length: int, first: int = 0) -> np.ndarray:
    """Frames ``t-length+1 … t`` (oldest first), indices before ``first`` replaced by ``first`` (padding)."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    if t < first:
        raise ValueError(f"frame {t} is before the first frame {first}")
    return np.maximum(np.arange(t - length + 1, t + 1), first)


def clip_ends(frames: np.ndarray, clip_len: int) -> np.ndarray:
    """Last frames ``t`` of every clip ``t-clip_len+1 … t`` lying wholly inside ``frames`` (sorted indices)."""
    frames = np.asarray(frames, dtype=np.int64)
    members = set(frames.tolist())
    return np.array([t for t in frames if all((t - k) in members for k in range(clip_len))], dtype=np.int64)


def sample_order(n_items: int, seed: int, epoch: int) -> np.ndarray:
    """Deterministic permutation of ``range(n_items)`` for one epoch (depends on seed and epoch only)."""
    return np.random.default_rng([seed, epoch]).permutation(n_items)


def batch_items(iteration: int, batch_size: int, n_items: int, seed: int) -> np.ndarray:
    """Item numbers of the batch of ``iteration`` (0-based): walks epoch permutations in order.

    A pure function of its arguments, so a resumed run reads exactly the batches an uninterrupted run reads.
    """
    out = []
    for j in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, pos = divmod(j, n_items)
        out.append(sample_order(n_items, seed, epoch)[pos])
    return np.array(out, dtype=np.int64)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, C)`` image to ``size = (height, width)`` (area filter down, linear up)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    import cv2

    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def crop_resize(img: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """The crop ``box = (x0, y0, x1, y1)`` (frame pixels, floats) of ``img`` resampled to ``size = (H, W)``.

    Same convention as the conditioning renderer (:mod:`deep_puppets.render`): output pixel ``(u, v)`` covers
    ``x0 + [u, u+1) (x1 - x0) / W`` (likewise y), frame pixel ``c`` covers ``[c, c+1)``. Outside the frame is
    black. Large reductions are pre-filtered (halving with ``pyrDown`` while the scale is >= 2), then bilinear.
    """
    import cv2

    h, w = size
    x0, y0, x1, y1 = (float(b) for b in box)
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        raise ValueError(f"invalid crop box {box}")
    img = np.ascontiguousarray(img)
    while (x1 - x0) / w >= 2 and (y1 - y0) / h >= 2 and min(img.shape[:2]) >= 2:
        img = cv2.pyrDown(img)
        x0, y0, x1, y1 = x0 / 2, y0 / 2, x1 / 2, y1 / 2
    sx, sy = (x1 - x0) / w, (y1 - y0) / h
    # output pixel index u (centre u + 0.5) → source pixel index (centre c + 0.5)
    m = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out[:, :, None] if out.ndim == 2 else out


def fill_boxes(boxes: np.ndarray) -> np.ndarray:
    """Per-frame boxes ``(T, 4)`` with non-finite rows (no fit) replaced by the nearest valid frame's box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ok = np.isfinite(boxes).all(1)
    if not ok.any():
        raise ValueError("no frame has a valid crop box")
    idx = np.flatnonzero(ok)
    nearest = idx[np.abs(np.arange(len(boxes))[:, None] - idx[None, :]).argmin(1)]
    return boxes[nearest]


def to_chw(img: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 → ``(C, H, W)`` float32 in [0, 1]."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def stack_window(streams: Mapping[str, object], names: Sequence[str], frames: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """Conditioning input ``(3 * len(names) * len(frames), H, W)`` float32 for the frame indices ``frames``.

    Channel order: ``frames`` in the order given (oldest first), then ``names`` in the order given, RGB.
    """
    parts = [to_chw(resize(np.asarray(streams[name][int(t)]), size)) for t in frames for name in names]
    return np.concatenate(parts, axis=0)


def conditioning_channels(n_streams: int, window: int) -> int:
    return 3 * n_streams * window


@dataclass
class ClipDataset:
    """Training clips read on demand.

    ``conditioning``: stream name -> (T, H, W, 3) uint8 array-like; ``frames``: real frames (T, H', W', 3);
    ``flow``: (T, h, w, 2) flow with ``flow[t]`` the backward flow from frame t to frame t-1 at the training
    size (or None); ``train_frames``: the frame indices training may use (see :func:`split_frames`; frames
    without a valid conditioning render left out); ``boxes``: when the conditioning images are crops, the
    per-frame crop boxes, applied to the real frames so both show the same region (not needed for the frames
    of a ``flow`` file, which are cropped already).
    """

    conditioning: Mapping[str, object]
    frames: object
    flow: object | None
    train_frames: np.ndarray
    streams: tuple[str, ...]
    size: tuple[int, int]
    window: int
    clip_len: int
    boxes: np.ndarray | None = None  # (T, 4) crop boxes of the real frames (those of the conditioning), or None
    first: int = 0  # the sequence's first frame: windows are padded by repeating it

    def __post_init__(self):
        missing = [s for s in self.streams if s not in self.conditioning]
        if missing:
            raise ValueError(f"conditioning lacks stream(s) {missing}; has {sorted(self.conditioning)}")
        n = len(self.frames)
        for s in self.streams:
            if len(self.conditioning[s]) != n:
                raise ValueError(f"stream '{s}' has {len(self.conditioning[s])} frames, the real video {n}")
        if self.flow is not None:
            if len(self.flow) != n:
                raise ValueError(f"flow has {len(self.flow)} frames, the real video {n}")
            if tuple(self.flow.shape[1:3]) != tuple(self.size):
                raise ValueError(f"flow was computed at {tuple(self.flow.shape[1:3])}, training size is {tuple(self.size)}")
        self.train_frames = np.asarray(self.train_frames, dtype=np.int64)
        if self.train_frames.size and (self.train_frames.min() < self.first or self.train_frames.max() >= n):
            raise ValueError("train_frames out of range")
        self.ends = clip_ends(self.train_frames, self.clip_len)
        if len(self.ends) == 0:
            raise ValueError(f"no run of {self.clip_len} consecutive training frames ({len(self.train_frames)} training frames)")
        if self.boxes is not None:
            self.boxes = fill_boxes(self.boxes)
            if len(self.boxes) != n:
                raise ValueError(f"{len(self.boxes)} crop boxes for {n} frames")

    @property
    def in_channels(self) -> int:
        return conditioning_channels(len(self.streams), self.window)

    def __len__(self) -> int:
        return len(self.ends)

    def clip_frames(self, item: int) -> np.ndarray:
        t = int(self.ends[item])
        return np.arange(t - self.clip_len + 1, t + 1)

    def frames_at(self, t: int) -> np.ndarray:
        """Real frame ``t`` (cropped by its box when there are boxes) at the training size, ``(H, W, 3)`` uint8."""
        img = np.asarray(self.frames[int(t)])
        return resize(img, self.size) if self.boxes is None else crop_resize(img, self.boxes[int(t)], self.size)

    def clip(self, item: int) -> dict[str, np.ndarray]:
        """One clip: ``cond`` (K, C, H, W), ``real`` (K, 3, H, W), ``flow`` (K, 2, H, W) (zeros without flow;
        ``flow[0]`` is the flow into the clip's first frame and is not used), ``frames`` (K,) indices."""
        idx = self.clip_frames(item)
        cond = np.stack([stack_window(self.conditioning, self.streams, window_indices(t, self.window, self.first), self.size) for t in idx])
        real = np.stack([to_chw(self.frames_at(t)) for t in idx])
        if self.flow is not None:
            flow = np.stack([np.asarray(self.flow[int(t)], dtype=np.float32).transpose(2, 0, 1) for t in idx])
        else:
            flow = np.zeros((len(idx), 2) + tuple(self.size), np.float32)
        return {"cond": cond, "real": real, "flow": flow, "frames": idx}

    def batch(self, items: Sequence[int]) -> dict[str, np.ndarray]:
        clips = [self.clip(int(i)) for i in items]
        return {k: np.stack([c[k] for c in clips]) for k in clips[0]}
