"""The re-enactment video: generated head crops composited into the target's own full-resolution frames.

Output frame ``k`` (at the TARGET's frame rate, as long as the source): the generated crop of pair frame
``j = round(k · fps_source / fps_target)`` (:func:`pair_frames_for_output`), pasted at that frame's conditioning
box over a *plate*, a frame of the target video read at full resolution (:func:`plate_frames`):

* ``expression`` mode: the plate is the target frame whose head pose the pair frame kept (the transfer's
  ``target_pose_frame``: ping-pong over the target), and the crop is pasted with
  :func:`~deep_puppets.composite.face_alpha` of the pair's colour conditioning (``composite.grow``,
  ``composite.feather``): only the face changes, hair, ears, neck and background stay the target's pixels.
* ``pose+expression`` mode: the head moves where the source's head went, so the plate's own head (frame
  ``ping_pong(k, n_target)``) must go first. Its region — the target's own colour conditioning at that frame,
  at its own box, grown by ``composite.pose_grow`` face heights to take in hair, ears and the top of the neck —
  is filled from a *background plate* (:func:`background_plate`): the per-pixel median over up to
  ``composite.background_frames`` target frames spread over the video of the pixels outside those frames' head
  regions; pixels that no sampled frame shows are inpainted (``cv2.inpaint``, Telea). Then the generated crop
  is pasted with the same, larger mask of the pair's colour conditioning, times the generator's
  :func:`~deep_puppets.composite.trained_region`: the crop moves with the new head, and where the target's own
  crops always reached past the frame's edge the generator learned to paint the black padding, which would
  otherwise land inside the frame as a dark bar (the plate shows there instead). In ``expression`` mode the crop
  is pasted at the box it was trained at, so every pixel of it inside the frame is one the generator learned.

  Where it fails: a head that never moves off part of its background leaves that part inpainted (a smooth
  smear; the log gives the inpainted fraction of the frame); the neck and body below the grown region stay the
  plate's, so a head that moves far sits on a body that does not follow it; the background plate is static (a
  moving camera or changing light shows as a stale patch where the old head was).

Everywhere outside those masks the output is the plate, bit for bit (:func:`deep_puppets.composite.blend`).
The plates come from the target decoded once into a temporary ``np.memmap`` beside the output (removed
afterwards), so memory stays bounded whatever the video's length and size.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .composite import blend, face_alpha, frame_alpha, paste, trained_region, uncrop
from .config import PAIR_MODES
from .progress import ProgressLog

log = logging.getLogger(__name__)

# The preview video: its three panels, labelled, at least this many pixels high (small crops are enlarged so
# the labels stay readable).
PREVIEW_LABELS = ("source", "conditioning", "output")
PREVIEW_HEIGHT = 256


@dataclass(frozen=True)
class CompositeSettings:
    """The ``composite:`` config section (see the schema for each key)."""

    grow: float = 0.12
    feather: float = 0.08
    pose_grow: float = 0.45
    background_frames: int = 60
    audio: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> "CompositeSettings":
        return cls(**{k: v for k, v in dict(cfg or {}).items() if k in cls.__dataclass_fields__})

    def grow_for(self, mode: str) -> float:
        return self.pose_grow if mode == "pose+expression" else self.grow


def pair_frames_for_output(n_source: int, fps_source: float, fps_target: float) -> np.ndarray:
    """The pair (source) frame shown by each output frame at the target's rate: ``round(k · fps_s / fps_t)``,
    for as many output frames as last as long as the source (to within half a frame)."""
    if n_source < 1:
        return np.zeros(0, np.int64)
    n_out = max(1, int(round(n_source * fps_target / fps_source)))
    return np.minimum(np.rint(np.arange(n_out) * (fps_source / fps_target)).astype(np.int64), n_source - 1)


def plate_frames(pair_frames: np.ndarray, n_target: int, mode: str, target_pose_frame: np.ndarray | None = None) -> np.ndarray:
    """The target frame under each output frame. expression: the frame whose pose the pair frame kept (the
    transfer's ``target_pose_frame``, else ``ping_pong(j)``); pose+expression: ``ping_pong(k)``, the target's body
    and background playing at its own rate."""
    from .transfer import ping_pong

    pair_frames = np.asarray(pair_frames, np.int64)
    if mode == "pose+expression":
        return ping_pong(len(pair_frames), n_target)
    fallback = ping_pong(int(pair_frames.max(initial=0)) + 1, n_target)[pair_frames]
    if target_pose_frame is None:
        return fallback
    out = np.asarray(target_pose_frame, np.int64)[pair_frames]
    return np.where((out >= 0) & (out < n_target), out, fallback)


class DecodedFrames:
    """A video decoded once into a temporary uint8 ``np.memmap`` ``(T, H, W, 3)`` beside ``near`` (removed on
    close): random access to full-resolution frames with bounded memory."""

    def __init__(self, video, info, near):
        from .video import iter_frames

        near = Path(near)
        near.parent.mkdir(parents=True, exist_ok=True)
        self.path = near.with_name(f".{near.name}.frames.tmp{os.getpid()}")
        self.frames = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(info.n_frames, info.height, info.width, 3))
        try:
            progress = ProgressLog(f"decode {video}", info.n_frames, every=100, logger=log)
            n = 0
            for n, frame in enumerate(iter_frames(video, 0, None, info), 1):
                if frame.shape != self.frames.shape[1:]:
                    from .errors import InputError

                    raise InputError(video, f"frame {n - 1} is {frame.shape[1]}x{frame.shape[0]}, the probe said {info.width}x{info.height}")
                self.frames[n - 1] = frame
                progress(n)
            if n != info.n_frames:
                from .errors import InputError

                raise InputError(video, f"decoded {n} frames, the probe counted {info.n_frames}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.frames = None
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def head_region(colour, box, frame_hw: tuple[int, int], grow: float, feather: float) -> np.ndarray:
    """(H, W) float32 soft mask of a head in the frame: :func:`face_alpha` of its colour conditioning, placed at
    its box; zeros when the box is not finite (no fit)."""
    if box is None or not np.all(np.isfinite(box)):
        return np.zeros(frame_hw, np.float32)
    return frame_alpha(face_alpha(np.asarray(colour), grow, feather), box, frame_hw)


def sample_frames(valid: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` frames with ``valid`` evenly spread over the video."""
    idx = np.flatnonzero(valid)
    if len(idx) <= n:
        return idx
    return idx[np.unique(np.rint(np.linspace(0, len(idx) - 1, n)).astype(np.int64))]


def background_plate(frames, colour, boxes, valid, grow: float, feather: float, n_samples: int = 60, rows: int = 64):
    """The target's background without its head: per pixel, the median over up to ``n_samples`` frames (spread
    over the video, among ``valid`` ones) of the frames in which that pixel lies outside the head region
    (:func:`head_region`); pixels no sampled frame shows are inpainted. Returns ``(image (H, W, 3) uint8,
    never_seen (H, W) bool)``. Memory: the sampled frames' masks and one band of ``rows`` rows at a time."""
    import cv2

    sample = sample_frames(np.asarray(valid, bool) & np.all(np.isfinite(boxes), axis=1), n_samples)
    h, w = frames.shape[1:3]
    if not len(sample):
        raise ValueError("no target frame with a head region to build the background from")
    outside = np.stack([head_region(colour[int(t)], boxes[int(t)], (h, w), grow, feather) == 0 for t in sample])
    out = np.zeros((h, w, 3), np.uint8)
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        band = np.stack([frames[int(t)][r0:r1] for t in sample]).astype(np.float32)
        band[~outside[:, r0:r1]] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: pixels never seen, inpainted below
            med = np.nanmedian(band, axis=0)
        out[r0:r1] = np.clip(np.rint(np.nan_to_num(med)), 0, 255).astype(np.uint8)
    never = ~outside.any(axis=0)
    if never.any():
        radius = max(3, int(round(0.01 * max(h, w))))
        out = cv2.inpaint(out, never.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return out, never


@dataclass
class Composited:
    """One output frame, the plate it was made from (target frame index) and the pixels that may differ from
    that plate (the new head's mask and, in pose+expression mode, the removed head's)."""

    frame: np.ndarray
    plate_index: int
    changed: np.ndarray


def composite_frames(
    crops: Iterable[np.ndarray],
    pair_frames: Sequence[int],
    plate_index: Sequence[int],
    plates,
    pair_colour,
    pair_box: np.ndarray,
    pair_valid: np.ndarray,
    mode: str,
    settings: CompositeSettings,
    target_colour=None,
    target_box: np.ndarray | None = None,
    target_valid: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> Iterator[Composited]:
    """Paste each generated crop (of pair frame ``pair_frames[k]``) over its plate ``plates[plate_index[k]]``.

    ``plates``: (T_target, H, W, 3) uint8 array-like; ``pair_colour``/``target_colour``: the colour conditioning
    streams (array-likes); pose+expression needs the target's colour, boxes, valid flags and ``background``.
    A pair frame without a valid render leaves the plate as it is (its own head included).
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"mode must be one of {PAIR_MODES}, not {mode!r}")
    pose = mode == "pose+expression"
    if pose and (target_colour is None or target_box is None or background is None):
        raise ValueError("pose+expression compositing needs the target's colour conditioning, boxes and background")
    grow = settings.grow_for(mode)
    trusted = None
    for crop, j, p in zip(crops, pair_frames, plate_index):
        j, p = int(j), int(p)
        plate = np.asarray(plates[p])
        hw = plate.shape[:2]
        box = pair_box[j]
        if not (pair_valid[j] and np.all(np.isfinite(box))):
            yield Composited(plate.copy(), p, np.zeros(hw, bool))
            continue
        changed = np.zeros(hw, bool)
        if pose and (target_valid is None or target_valid[p]) and np.all(np.isfinite(target_box[p])):
            removed, roi = uncrop(face_alpha(np.asarray(target_colour[p]), grow, settings.feather), target_box[p], hw)
            if roi is not None:  # blended inside the box only: the rest of the frame is never touched
                r0, r1, c0, c1 = roi
                removed = np.clip(removed[..., 0] if removed.ndim == 3 else removed, 0, 1)
                plate = plate.copy()
                plate[r0:r1, c0:c1] = blend(plate[r0:r1, c0:c1], background[r0:r1, c0:c1], removed)
                changed[r0:r1, c0:c1] |= removed > 0
        alpha = face_alpha(np.asarray(pair_colour[j]), grow, settings.feather)
        if pose:
            if trusted is None:
                own = np.asarray(target_box) if target_valid is None else np.asarray(target_box)[np.asarray(target_valid, bool)]
                trusted = trained_region(own, hw, alpha.shape[0])
            alpha = alpha * trusted
        changed |= frame_alpha(alpha, box, hw) > 0
        yield Composited(paste(plate, crop, alpha, box), p, changed)


def resample_stream(frames: Iterable[np.ndarray], indices: Iterable[int]) -> Iterator[np.ndarray]:
    """Frames of a stream read once in order, at non-decreasing ``indices`` (repeats and skips allowed)."""
    it = iter(frames)
    pos, cur = -1, None
    for i in indices:
        while pos < int(i):
            nxt = next(it, None)
            if nxt is None:
                break
            cur, pos = nxt, pos + 1
        yield cur


def write_reenactment(generator, conditioning_file, target_conditioning, source_video, source_info, target_video, target_info,
                      out_mp4, side_mp4, mode: str, target_pose_frame=None, settings: CompositeSettings = CompositeSettings(),
                      source_box=None, device: str = "auto") -> dict:
    """Generate the pair's crops, composite them into the target's frames and write ``out_mp4`` (the target's
    size and rate, H.264 yuv420p, faststart, the source's audio when ``settings.audio``) and the preview
    ``side_mp4`` (source | colour conditioning | output cropped at the pair's box; ``source_box``: the crop of
    the source frames shown, default the whole frame). ``source_info``/``target_info``: their probes. Returns
    the frame counts."""
    from .errors import InputError
    from .gan.data import crop_resize
    from .gan.inference import generate, load_generator, resolve_device
    from .gan.synthesize import write_side_by_side
    from .mp4_writer import write_mp4
    from .render.conditioning_file import open_conditioning
    from .video import iter_frames

    src, tgt, cs = source_info, target_info, settings
    dev = resolve_device(device)
    G, gs = load_generator(generator, dev)
    fp, p_valid, p_box = open_conditioning(conditioning_file, gs.streams)
    try:
        ft, t_valid, t_box = open_conditioning(target_conditioning, ("colour",))
    except BaseException:
        fp.close()
        raise
    with fp, ft:
        if len(t_valid) != tgt.n_frames:
            raise InputError(target_conditioning, f"has {len(t_valid)} frames, the target video {target_video} {tgt.n_frames}")
        pair_idx = pair_frames_for_output(len(p_valid), src.fps, tgt.fps)
        plate_idx = plate_frames(pair_idx, tgt.n_frames, mode, target_pose_frame)
        log.info("%s: %d pair frames at %.3f fps -> %d output frames at %.3f fps, %dx%d, %s mode", conditioning_file,
                 len(p_valid), src.fps, len(pair_idx), tgt.fps, tgt.width, tgt.height, mode)
        with DecodedFrames(target_video, tgt, near=out_mp4) as plates:
            background = None
            if mode == "pose+expression":
                background, never = background_plate(plates.frames, ft["colour"], t_box, t_valid, cs.pose_grow, cs.feather, cs.background_frames)
                log.info("background plate from up to %d target frames: %.2f%% of the frame never seen (inpainted)",
                         cs.background_frames, 100 * never.mean())
            crops = generate(G, {k: fp[k] for k in gs.streams}, pair_idx, gs, dev)
            out = composite_frames(crops, pair_idx, plate_idx, plates.frames, fp["colour"], p_box, p_valid, mode, cs,
                                   ft["colour"], t_box, t_valid, background)
            progress = ProgressLog(f"re-enact {out_mp4}", len(pair_idx), every=100, logger=log)

            def frames():
                for k, c in enumerate(out, 1):
                    yield c.frame
                    progress(k)

            n = write_mp4(out_mp4, frames(), tgt.fps, audio_from=source_video if cs.audio else None)
        size = fp["colour"].shape[1:3]
        whole = np.array([0, 0, src.width, src.height], float) if source_box is None else source_box
        source = (crop_resize(f, whole, size) for f in resample_stream(iter_frames(source_video, 0, None, src), pair_idx))
        colour = (fp["colour"][int(j)] for j in pair_idx)
        tgt_whole = np.array([0, 0, tgt.width, tgt.height], float)
        boxes = (p_box[int(j)] if np.all(np.isfinite(p_box[int(j)])) else tgt_whole for j in pair_idx)
        crop = (crop_resize(f, b, size) for f, b in zip(iter_frames(out_mp4), boxes))
        write_side_by_side(side_mp4, [source, colour, crop], tgt.fps, height=max(PREVIEW_HEIGHT, size[0]), labels=PREVIEW_LABELS)
    log.info("re-enactment written to %s (%d frames)", out_mp4, n)
    return {"frames": n, "pair_frames": len(p_valid)}
