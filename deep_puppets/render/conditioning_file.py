"""The ``conditioning`` HDF5 file of one video: its image ``STREAMS`` and one frame's images (:class:`Frame`),
the layout, the deflate encoders, :class:`ConditioningWriter` (streams frames to disk, compressed in worker
threads), the readers (:func:`iter_stream`, :func:`open_conditioning`) and the H.264 previews."""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import h5io
from ..errors import InputError
from ..mp4_writer import write_mp4

STREAMS = ("colour", "correspondence", "gaze")


@dataclass
class Frame:
    """The conditioning images of one frame, uint8 (H, W, 3) each."""

    colour: np.ndarray
    correspondence: np.ndarray
    gaze: np.ndarray
    valid: bool = True


CONDITIONING = h5io.Layout(
    name="conditioning",
    version=2,
    doc=(
        "Conditioning images of one video, rendered from the fitted face (deep_puppets.render): colour "
        "(albedo × SH shading), correspondence (mean-shape position as RGB) and eye gaze (eye openings and "
        "irises), uint8 RGB, row 0 at the top, black background. Frames whose fit is invalid are black "
        "with `valid = false`."
    ),
    datasets={
        "frame_index": h5io.Dataset("int64", ("T",), "absolute frame index in the video"),
        "valid": h5io.Dataset("bool", ("T",), "the frame was rendered (finite fit and crop box)"),
        "box": h5io.Dataset(
            "float32", ("T", 4), "crop box x0, y0, x1, y1 in frame pixels mapped onto the image (attr framing)"
        ),
        "colour": h5io.Dataset("uint8", ("T", "H", "W", 3), "albedo × SH shading", chunk_per="T", compress=True),
        "correspondence": h5io.Dataset(
            "uint8",
            ("T", "H", "W", 3),
            "mean-shape position (normalised x, y, z) as RGB",
            chunk_per="T",
            compress=True,
        ),
        "gaze": h5io.Dataset(
            "uint8",
            ("T", "H", "W", 3),
            "eye openings and irises on black (colours in attr settings)",
            chunk_per="T",
            compress=True,
        ),
    },
    attrs={
        "renderer": "OpenGL renderer string (llvmpipe on CPUs)",
        "settings": "JSON of the render settings (size, subdivisions, nearer_z, samples, colours)",
        "source": "what was rendered (e.g. the fit file)",
        "framing": "JSON of the framing settings the boxes follow (deep_puppets.framing; null: boxes given by the caller)",
    },
)


COMPRESSIONS = ("gzip", "lzf")
_ZLIB_STRATEGY = {"colour": zlib.Z_DEFAULT_STRATEGY, "correspondence": zlib.Z_RLE, "gaze": zlib.Z_RLE}

try:  # Intel ISA-L's deflate (python-isal, in requirements.txt): same zlib streams, ≈ 6× faster at level 1
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - a platform without isal wheels falls back on zlib
    _isal_zlib = None

DEFLATE_ENCODERS = ("isal", "zlib")
DEFAULT_ENCODER = "isal" if _isal_zlib is not None else "zlib"
# Defaults per encoder. ISA-L's level 0 (its fastest) because its levels ≥ 1 are not reproducible: the
# same frames gave different (equally valid) streams in 6 of 56 processes at level 1, with one compression
# thread or two, and none in 48 at level 0 (benchmarks/render_reproducibility.py). One ISA-L thread keeps
# up (≈ 0.3 ms per 256² frame, all three images); zlib needs two (≈ 2.8 ms).
DEFAULT_LEVELS = {"isal": 0, "zlib": 1}
_DEFAULT_THREADS = {"isal": 1, "zlib": 2}


def deflate_chunk(
    image: np.ndarray, level: int | None = None, encoder: str = DEFAULT_ENCODER, stream: str = "colour"
) -> bytes:
    """A zlib stream of ``image``'s bytes, as HDF5's deflate filter stores a chunk (GIL released inside).

    ``encoder`` ``"isal"`` (ISA-L, levels 0–3, default 0; ``level`` is capped at 3; levels ≥ 1 compress
    ≈ 20% smaller but not reproducibly, see ``DEFAULT_LEVELS``) or ``"zlib"`` (levels 0–9, default 1;
    run-length strategy for the correspondence and gaze ``stream`` s, where it is faster at the same size).
    Both write standard zlib streams that any HDF5 reader inflates.
    """
    if encoder not in DEFLATE_ENCODERS:
        raise ValueError(f"encoder must be one of {DEFLATE_ENCODERS}, got {encoder!r}")
    level = DEFAULT_LEVELS[encoder] if level is None else int(level)
    data = np.ascontiguousarray(image)
    if encoder == "isal":
        if _isal_zlib is None:
            raise ValueError("encoder 'isal' needs the isal package (pip install isal); use encoder='zlib'")
        return _isal_zlib.compress(data, min(level, 3))
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, _ZLIB_STRATEGY.get(stream, zlib.Z_DEFAULT_STRATEGY))
    return c.compress(data) + c.flush()


class ConditioningWriter:
    """Streams frames into a ``conditioning`` HDF5 file without holding the sequence in memory.

    Written to a temporary file beside ``path`` and renamed on a clean :meth:`close` (atomic like
    :func:`deep_puppets.h5io.write`); an exception inside the ``with`` block removes the temporary file.
    Images are chunked one frame per chunk. ``compression``:

    * ``"gzip"`` (default): HDF5's deflate filter, readable by every HDF5 tool. The chunks are compressed by
      :func:`deflate_chunk` (``encoder``: ISA-L where installed, else :mod:`zlib`; ``level``: the encoder's
      default unless given) in ``threads`` worker threads (default 1 for ISA-L, 2 for zlib), which release
      the GIL and so overlap with the rendering, and stored with ``write_direct_chunk``; at most
      ``2 × threads`` frames wait in memory.
    * ``"lzf"``: h5py's bundled LZF filter, compressed in the calling thread (h5py readers only).
    """

    def __init__(
        self,
        path,
        n_frames: int,
        size: tuple[int, int],
        attrs: dict,
        compression: str = "gzip",
        level: int | None = None,
        threads: int | None = None,
        encoder: str = DEFAULT_ENCODER,
    ):
        missing = set(CONDITIONING.attrs) - set(attrs)
        if missing:
            raise ValueError(f"{path}: attributes {sorted(missing)} required by layout conditioning")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if encoder not in DEFLATE_ENCODERS:
            raise ValueError(f"encoder must be one of {DEFLATE_ENCODERS}, got {encoder!r}")
        self._encoder = encoder
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.n_frames, self._next = n_frames, 0
        self._level, self._pending, self._pool = level, deque(), None
        self._file = h5py.File(self._tmp, "w")
        try:
            # the filter's level is metadata here (chunks arrive compressed); ISA-L 0 is like zlib 1
            gzip_level = level if encoder == "zlib" and level is not None else 1
            self._images = self._create(self._file, attrs, compression, gzip_level, n_frames, size)
        except BaseException:
            self.abort()
            raise
        threads = _DEFAULT_THREADS[encoder] if threads is None else threads
        if compression == "gzip" and n_frames:
            self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="conditioning-deflate")
            self._max_pending = 2 * max(1, threads)
        self._frame_index = np.zeros(n_frames, np.int64)
        self._valid = np.zeros(n_frames, bool)
        self._box = np.full((n_frames, 4), np.nan, np.float32)

    @staticmethod
    def _create(f, attrs: dict, compression: str, level: int, n_frames: int, size: tuple[int, int]) -> dict:
        """Write the attributes and create the image datasets (one frame per chunk); returns the datasets."""
        f.attrs["layout"] = CONDITIONING.name
        f.attrs["layout_version"] = CONDITIONING.version
        for k, v in attrs.items():
            f.attrs[k] = h5io._attr_value(v)
        w, h = size
        kw = {}  # (h5py stores no timestamps by default: reruns give identical bytes)
        if n_frames:  # (HDF5 cannot chunk an empty fixed-size dataset)
            kw = {"chunks": (1, h, w, 3), "compression": compression}
            if compression == "gzip":  # chunks arrive deflated: the zlib stream's Adler-32 is their checksum
                kw["compression_opts"] = level
            else:
                kw["fletcher32"] = True
        return {s: f.create_dataset(s, (n_frames, h, w, 3), np.uint8, **kw) for s in STREAMS}

    def append(self, frame: Frame, frame_index: int, box) -> None:
        """Add the next frame (its arrays must not change afterwards: they may be compressed later)."""
        i = self._next
        if i >= self.n_frames:
            raise ValueError(f"{self.path}: more than the announced {self.n_frames} frames")
        if self._pool is None:
            for s in STREAMS:
                self._images[s][i] = getattr(frame, s)
        else:
            futures = [
                self._pool.submit(deflate_chunk, getattr(frame, s), self._level, self._encoder, s) for s in STREAMS
            ]
            self._pending.append((i, futures))
            self._flush(self._max_pending)
        self._frame_index[i], self._valid[i], self._box[i] = frame_index, frame.valid, box
        self._next += 1

    def _flush(self, keep: int = 0) -> None:
        """Store compressed chunks, oldest first, until at most ``keep`` frames are pending."""
        while len(self._pending) > keep:
            i, futures = self._pending.popleft()
            for s, fut in zip(STREAMS, futures):
                self._images[s].id.write_direct_chunk((i, 0, 0, 0), fut.result())

    def close(self) -> Path:
        if self._next != self.n_frames:
            raise ValueError(f"{self.path}: {self._next} frames written, {self.n_frames} announced")
        self._flush()
        self._shutdown()
        f = self._file
        kw = {"fletcher32": True} if self.n_frames else {}
        f.create_dataset("frame_index", data=self._frame_index, **kw)
        f.create_dataset("valid", data=self._valid, **kw)
        f.create_dataset("box", data=self._box, **kw)
        f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def abort(self) -> None:
        """Discard everything (the temporary file included); a no-op after a successful :meth:`close`."""
        self._shutdown()
        try:
            self._file.close()
        finally:
            if self._tmp.exists():
                self._tmp.unlink()

    def __enter__(self) -> "ConditioningWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()



def iter_stream(path, stream: str) -> Iterator[np.ndarray]:
    """Frames of one stream (``colour``, ``correspondence``, ``gaze``) of a conditioning file, one at a time
    (a corrupted chunk: :class:`~deep_puppets.errors.InputError` naming the file and the stream)."""
    h5io.read(path, CONDITIONING, load=False)  # checks the layout, names the file on a mismatch
    with h5io.open_file(path) as f:
        d = f[stream]
        for i in range(d.shape[0]):
            yield d[i]


def open_conditioning(path, streams=()):
    """Open a conditioning file for lazy reading (the caller closes it): the layout is checked, ``valid`` and
    ``box`` are read and checked (finite boxes of positive size where valid), and every later read of an
    image names the file and the stream when its chunk is corrupted (:func:`deep_puppets.h5io.open_file`).
    ``streams``: image datasets that must be present. Returns ``(file, valid, box)``."""
    h5io.read(path, CONDITIONING, load=False)
    f = h5io.open_file(path)
    try:
        missing = [s for s in streams if s not in f]
        if missing:
            raise InputError(path, f"lacks conditioning stream(s) {missing}")
        valid, box = f["valid"][()], f["box"][()]
        problem = h5io.first_problem(
            h5io.nonfinite("box", box, valid),
            h5io.out_of_range("box", box[:, 2:] - box[:, :2], 1e-6, np.inf, valid, "box sizes"),
        )
        if problem:
            raise h5io.implausible(path, problem)
    except BaseException:
        f.close()
        raise
    return f, valid, box


PREVIEW_PRESET = "veryfast"  # x264 preset of the previews: 1.4× faster than "medium" at crf 18, same size


def write_previews(path, out_paths: dict[str, str | Path], fps: float) -> dict[str, int]:
    """H.264 preview mp4s of a conditioning file: ``out_paths`` maps stream name → mp4 path.

    The streams are encoded concurrently (one thread each; PyAV and x264 release the GIL), ≈ 2.4× faster
    than one after the other on 2 cores. Returns the frames written per stream.
    """

    def one(item):
        stream, mp4 = item
        return stream, write_mp4(mp4, iter_stream(path, stream), fps, preset=PREVIEW_PRESET)

    if not out_paths:
        return {}
    with ThreadPoolExecutor(len(out_paths), thread_name_prefix="conditioning-preview") as pool:
        return dict(pool.map(one, out_paths.items()))
