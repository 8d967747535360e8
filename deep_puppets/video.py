"""Reading and writing videos with PyAV (FFmpeg): probing, frame-exact segment reads, H.264 output.

* :func:`probe` decodes the whole stream once and returns the *real* decoded frame count and each frame's
  presentation time stamp, so later segment reads can seek straight to a frame (containers often lie about
  their frame count, and a truncated file decodes fewer frames than its header claims).
* :func:`iter_frames` yields RGB ``uint8`` frames ``[start, stop)``, seeking to the nearest key frame before
  ``start`` when the probe's time stamps allow it.
* :func:`write_mp4` writes an H.264 mp4 atomically (temporary file, then rename).

Every failure of a user file raises :class:`~deep_puppets.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")


@dataclass
class VideoInfo:
    """What :func:`probe` measured. ``n_frames`` is the number of frames that really decode."""

    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    codec: str
    duration_s: float
    pts: list[int] = field(default_factory=list, repr=False)
    seekable: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoInfo":
        return cls(**d)


def _open(path):
    import av

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.* and OSError: not a container FFmpeg knows
        raise InputError(path, f"not a readable video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise InputError(path, "contains no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _frame_rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(path) -> VideoInfo:
    """Decode every frame of ``path`` once; return its real frame count, size, rate and time stamps.

    Raises :class:`InputError` for a missing, empty, non-video, undecodable or truncated-to-nothing file.
    """
    import av

    container, stream = _open(path)
    pts: list[int] = []
    width = height = 0
    try:
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts if frame.pts is not None else -1)
                width, height = frame.width, frame.height
        except av.error.FFmpegError as e:
            if not pts:
                raise InputError(path, f"no frame could be decoded ({e})") from None
            # A truncated file: keep the frames that decoded (the count is what really decodes).
        codec = stream.codec_context.name
        fps = _frame_rate(stream)
    finally:
        container.close()
    if not pts:
        raise InputError(path, "video stream holds no decodable frame")
    if fps <= 0:
        raise InputError(path, "video has no usable frame rate")
    seekable = all(p >= 0 for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    return VideoInfo(
        path=str(path),
        n_frames=len(pts),
        fps=fps,
        width=int(width),
        height=int(height),
        codec=codec,
        duration_s=len(pts) / fps,
        pts=[int(p) for p in pts],
        seekable=seekable,
    )


def iter_frames(path, start: int = 0, stop: int | None = None, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames with indices in ``[start, stop)`` (frame index = decode order).

    With ``info`` from :func:`probe` (and monotonic time stamps) the read seeks to the key frame before
    ``start`` instead of decoding from the beginning, which keeps per-segment jobs linear in segment length.
    """
    import av

    if start < 0:
        raise ValueError("start must be >= 0")
    container, stream = _open(path)
    try:
        index = 0
        use_pts = info is not None and info.seekable and start > 0 and start < len(info.pts)
        if use_pts:
            target_pts = info.pts[start]
            pts_to_index = {p: i for i, p in enumerate(info.pts)}
            container.seek(target_pts, stream=stream, backward=True, any_frame=False)
            index = None
        try:
            for frame in container.decode(stream):
                if index is None:
                    index = pts_to_index.get(frame.pts)
                    if index is None:  # time stamp not in the probe: fall back to a full decode
                        container.close()
                        yield from iter_frames(path, start, stop, info=None)
                        return
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.error.FFmpegError as e:
            raise InputError(path, f"decoding failed at frame {index} ({e})") from None
    finally:
        container.close()


def read_frames(path, start: int = 0, stop: int | None = None, info: VideoInfo | None = None) -> np.ndarray:
    """All frames of ``[start, stop)`` as one ``(T, H, W, 3)`` uint8 array."""
    frames = list(iter_frames(path, start, stop, info))
    if not frames:
        raise InputError(path, f"no frames in range [{start}, {stop})")
    return np.stack(frames)


def write_mp4(path, frames: Iterable[np.ndarray], fps: float, crf: int = 18, preset: str = "medium") -> int:
    """Write RGB uint8 frames as an H.264 (yuv420p) mp4, atomically; returns the number of frames.

    Odd widths/heights are padded by one pixel (yuv420p needs even sizes).
    """
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    n = 0
    try:
        with av.open(str(tmp), mode="w") as out:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.ndim == 2:
                    frame = np.repeat(frame[:, :, None], 3, axis=2)
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
                n += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
