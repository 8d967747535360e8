"""Reading videos with PyAV (FFmpeg): probing, frame-exact segment reads, frames turned upright.

* :func:`probe_video` decodes the whole stream once and returns the *real* decoded frame count and each frame's
  presentation time stamp, so later segment reads can seek straight to a frame. It compares that count with
  what the container declares (frame count or duration): a file that decodes fewer frames, or whose decoder
  fails part-way, looks truncated and is an error (or, with ``on_truncated="warn"``, a loud warning).
* :func:`iter_frames` yields RGB ``uint8`` frames ``[start, stop)``, seeking to the nearest key frame before
  ``start`` when the probe's time stamps allow it.
* Frames are turned upright as players show them: a display matrix (phone clips' rotation, flips) is applied
  on read, by :func:`iter_frames` and in :func:`probe_video`'s width and height.

Writing mp4 files is :mod:`deep_puppets.mp4_writer`.

Every failure of a user file raises :class:`~deep_puppets.errors.InputError` naming the file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
ON_TRUNCATED = ("error", "warn")
TRUNCATION_TOLERANCE = 2  # frames: containers' declared counts are often off by a frame or two


@dataclass
class VideoInfo:
    """What :func:`probe_video` measured. ``n_frames`` is the number of frames that really decode."""

    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    codec: str
    duration_s: float
    pts: list[int] = field(default_factory=list, repr=False)
    seekable: bool = True
    declared_frames: int | None = None  # what the container declares (frame count, or duration x rate)
    orientation: str = ""  # display matrix applied on read ("" = none), e.g. "rotate 90° clockwise"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoInfo":
        return cls(**d)


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def path_problem(path) -> str | None:
    """Why ``path`` cannot be an input file, as words that follow its name ("does not exist", "is a symbolic
    link loop", "is not a regular file (a FIFO)", ...), or None for an existing regular file (maybe empty).

    Shared by the config step (before any job) and :func:`open_video`; nothing is opened (a FIFO would block)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (it never reaches a file)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            if p.is_symlink():
                return f"is a broken symbolic link (to {os.readlink(p)!r}, which does not exist)"
            return "does not exist"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a file")
        return f"is not a regular file ({kind})"
    return None


def open_video(path):
    """The PyAV container and first video stream of a user file; :class:`InputError` naming it when it cannot be."""
    import av

    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise InputError(path, problem if problem != "does not exist" else "file does not exist")
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


# -------------------------------------------------------------------------------------- display matrix

# FFmpeg's autorotation (fftools/ffmpeg_filter.c), the way players show a clip with a display matrix: each
# operation, what it does to an (H, W, 3) array, and whether it swaps width and height.
_ORIENT_OPS = {
    "clock": (lambda a: np.rot90(a, -1), "rotate 90° clockwise", True),
    "cclock": (lambda a: np.rot90(a, 1), "rotate 90° counter-clockwise", True),
    "cclock_flip": (lambda a: a.transpose(1, 0, 2), "transpose", True),
    "clock_flip": (lambda a: np.rot90(a, -1)[::-1], "rotate 90° clockwise and flip vertically", True),
    "hflip": (lambda a: a[:, ::-1], "flip horizontally", False),
    "vflip": (lambda a: a[::-1], "flip vertically", False),
}


def orientation_ops(matrix) -> tuple[str, ...]:
    """The operations (keys of ``_ORIENT_OPS``) a player applies for a display matrix (9 int32, 16.16 fixed
    point), as FFmpeg's ``autorotate`` does; ``()`` for none. Angles that are not multiples of 90° raise
    ValueError."""
    import math

    if matrix is None:
        return ()
    m = [int(v) for v in matrix]
    a, b, c, d = (v / 65536 for v in (m[0], m[1], m[3], m[4]))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0 or s1 == 0:
        return ()
    theta = float(round(math.degrees(math.atan2(b / s1, a / s0))))  # clockwise degrees (-av_display_rotation_get)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("cclock_flip",) if m[3] > 0 else ("clock",)
    if abs(theta - 180) < 1:
        return (("hflip",) if m[0] < 0 else ()) + (("vflip",) if m[4] < 0 else ())
    if abs(theta - 270) < 1:
        return ("clock_flip",) if m[3] < 0 else ("cclock",)
    if abs(theta) > 1:
        raise ValueError(f"its display matrix rotates the picture by {(360 - theta) % 360:.0f}° counter-clockwise; only multiples of 90° are supported")
    return ("vflip",) if m[4] < 0 else ()


def _frame_ops(frame, path) -> tuple[str, ...]:
    from av.sidedata.sidedata import Type

    sd = frame.side_data.get(Type.DISPLAYMATRIX)
    if sd is None:
        return ()
    try:
        return _ops_of(bytes(sd))
    except ValueError as e:
        raise InputError(path, str(e)) from None


_OPS_CACHE: dict[bytes, tuple[str, ...]] = {}


def _ops_of(raw: bytes) -> tuple[str, ...]:
    if raw not in _OPS_CACHE:
        _OPS_CACHE[raw] = orientation_ops(np.frombuffer(raw[:36], np.int32)) if len(raw) >= 36 else ()
    return _OPS_CACHE[raw]


def upright(array: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """``array`` (H, W, C) as a player shows it after ``ops`` (see :func:`orientation_ops`)."""
    for op in ops:
        array = _ORIENT_OPS[op][0](array)
    return np.ascontiguousarray(array) if ops else array


def describe_orientation(ops: tuple[str, ...]) -> str:
    return ", then ".join(_ORIENT_OPS[op][1] for op in ops)


# ------------------------------------------------------------------------------------------------- probe


def _declared_frames(container, stream, fps: float) -> tuple[int | None, int]:
    """The frame count the container declares (its frame count, else the stream's duration x rate, else the
    container's) and the tolerance in frames; ``(None, 0)`` when it declares nothing."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), TRUNCATION_TOLERANCE
    if stream.duration and stream.time_base:
        return int(round(float(stream.duration * stream.time_base) * fps)), TRUNCATION_TOLERANCE
    tag = stream.metadata.get("DURATION")  # Matroska/WebM per-stream tag, "HH:MM:SS.fffffffff"
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(round((int(h) * 3600 + int(m) * 60 + float(sec)) * fps)), TRUNCATION_TOLERANCE
        except ValueError:
            pass
    if container.duration and container.duration > 0:
        # The container's duration covers every stream: an audio track may run on for a moment.
        extra = int(np.ceil(fps / 2)) if len(container.streams) > 1 else 0
        return int(round(container.duration / 1e6 * fps)), TRUNCATION_TOLERANCE + extra
    return None, 0


def probe_video(path, on_truncated: str = "error") -> VideoInfo:
    """Decode every frame of ``path`` once; return its real frame count, upright size, rate and time stamps.

    Raises :class:`InputError` for a missing, empty, non-video or undecodable file, and for a truncated one:
    fewer frames decode than the container declares (beyond a tolerance of a frame or two), or the decoder
    fails part-way through a file that declares nothing. With ``on_truncated="warn"`` a truncated file logs
    a warning instead and the frames that decode are used.
    """
    import av

    if on_truncated not in ON_TRUNCATED:
        raise ValueError(f"on_truncated must be one of {ON_TRUNCATED}, not {on_truncated!r}")
    container, stream = open_video(path)
    pts: list[int] = []
    width = height = 0
    ops: tuple[str, ...] = ()
    decode_error = None
    try:
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts if frame.pts is not None else -1)
                ops = _frame_ops(frame, path)
                swap = sum(_ORIENT_OPS[op][2] for op in ops) % 2 == 1
                width, height = (frame.height, frame.width) if swap else (frame.width, frame.height)
        except av.error.FFmpegError as e:
            if not pts:
                raise InputError(path, f"no frame could be decoded ({e})") from None
            decode_error = e
        codec = stream.codec_context.name
        fps = _frame_rate(stream)
        declared, tolerance = _declared_frames(container, stream, fps) if fps > 0 else (None, 0)
    finally:
        container.close()
    if not pts:
        raise InputError(path, "video stream holds no decodable frame")
    if fps <= 0:
        raise InputError(path, "video has no usable frame rate")
    n = len(pts)
    if declared is not None and n < declared - tolerance:
        problem = f"decoded {n} of {declared} declared frames: the file looks truncated"
    elif declared is None and decode_error is not None:
        problem = f"decoding failed after {n} frames ({decode_error}) and the container declares no length: the file looks truncated"
    else:
        problem = None
        if decode_error is not None:
            log.warning("%s: decoding stopped with an error after %d frames (%s); the container declares %d", path, n, decode_error, declared)
    if problem:
        if on_truncated == "error":
            raise InputError(path, f"{problem} (input.on_truncated: warn uses the {n} frames that decode)")
        log.warning("%s: %s; continuing with the %d frames that decode (input.on_truncated: warn)", path, problem, n)
    if ops:
        log.info("%s: display matrix applied on read: %s", path, describe_orientation(ops))
    seekable = all(p >= 0 for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    return VideoInfo(
        path=str(path),
        n_frames=n,
        fps=fps,
        width=int(width),
        height=int(height),
        codec=codec,
        duration_s=n / fps,
        pts=[int(p) for p in pts],
        seekable=seekable,
        declared_frames=declared,
        orientation=describe_orientation(ops),
    )


def frame_time(path, info: VideoInfo, index: int) -> float:
    """Seconds from the first video frame of ``path`` (probed as ``info``) to frame ``index``: its recorded time
    stamp when the probe holds increasing ones (variable frame rates, gaps), else ``index / fps``. The origin is
    the video stream's start time, as :func:`deep_puppets.mp4_writer.write_mp4`'s ``audio_start`` counts."""
    if not 0 <= index < max(info.n_frames, 1):
        raise ValueError(f"{path}: frame {index} is outside its {info.n_frames} frames")
    if info.seekable and index < len(info.pts):
        container, stream = open_video(path)
        try:
            tb, start = stream.time_base, stream.start_time
        finally:
            container.close()
        if tb:
            return float((info.pts[index] - (info.pts[0] if start is None else start)) * tb)
    return index / info.fps


def iter_frames(path, start: int = 0, stop: int | None = None, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield upright RGB uint8 frames with indices in ``[start, stop)`` (frame index = decode order).

    With ``info`` from :func:`probe_video` (and monotonic time stamps) the read seeks to the key frame before
    ``start`` instead of decoding from the beginning, which keeps per-segment jobs linear in segment length;
    ``stop`` is then at most the probed frame count (a truncated file accepted with a warning is read up to the
    frames that decode, never into its decoder error).
    """
    import av

    if start < 0:
        raise ValueError("start must be >= 0")
    if info is not None:
        stop = info.n_frames if stop is None else min(stop, info.n_frames)
    if stop is not None and start >= stop:
        return
    container, stream = open_video(path)
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
                    yield upright(frame.to_ndarray(format="rgb24"), _frame_ops(frame, path))
                index += 1
                if stop is not None and index >= stop:
                    break  # before asking the decoder for a frame past the end
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
