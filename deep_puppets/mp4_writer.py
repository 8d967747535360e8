"""Writing H.264 mp4 files with PyAV (FFmpeg).

:func:`write_mp4` writes RGB frames as an H.264 mp4 atomically (temporary file, then rename), with its index
first (``+faststart``) and, if asked, another file's audio track (from a given time on, cut sample-exactly);
:class:`Mp4Feed` writes one from another thread while the frames are still being made. Reading videos is :mod:`deep_puppets.video`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError
from .video import open_video

MP4_AUDIO_CODECS = ("aac", "mp3", "ac3", "eac3", "alac")  # copied into an mp4 as they are; others become AAC


def audio_codec(path) -> str | None:
    """The codec name of ``path``'s first audio stream, or None when it has none."""
    container, _ = open_video(path)
    try:
        return container.streams.audio[0].codec_context.name if container.streams.audio else None
    finally:
        container.close()


class _AudioTrack:
    """The first audio track of ``path`` on its way into an mp4 being written. Times are relative to the source's
    first video frame plus ``start`` seconds (what output time 0 shows). :meth:`mux_until` writes what starts
    before a time (called after each video frame, so the file is interleaved); :meth:`finish` ends the track at
    the video's end.

    * Copy (the codec fits mp4, :data:`MP4_AUDIO_CODECS`, and ``start`` is 0: the re-enactment's case): packets
      copied as they are; a packet goes in at the end when its middle lies before it, so the audio ends within
      half a packet (≈ 12 ms of AAC at 44.1 kHz) of the video.
    * Otherwise (another codec, or a clip from inside the source, where a copied packet cannot be cut): decoded,
      resampled and encoded as AAC, cut sample-exactly (:meth:`_cut`): the samples before ``start`` are dropped,
      the frame that straddles the video's end is trimmed. Output sample ``k`` is the source's sample at
      ``start + k / rate``; the encoder's priming is written as the mp4's edit list, so decoders show it from
      time 0 (without time stamps on the encoded frames the priming delayed the sound by 23 ms).
    """

    def __init__(self, path, out, start: float = 0.0):
        import av

        self.path = path
        self.src, _ = open_video(path)
        try:
            video = self.src.streams.video[0]
            self.ain = self.src.streams.audio[0]
            self.t0 = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
            self.start = float(start)
            if self.start < 0:
                raise ValueError(f"audio_start must be >= 0, not {start}")
            self.copy = self.ain.codec_context.name in MP4_AUDIO_CODECS and self.start == 0
            if self.copy:
                self.aout = out.add_stream_from_template(self.ain)
            else:
                cc = self.ain.codec_context
                self.aout = out.add_stream("aac", rate=cc.sample_rate or 48000)
                self.aout.layout = "mono" if cc.layout and cc.layout.nb_channels == 1 else "stereo"  # more channels: downmixed
                self.resampler = av.AudioResampler(format="fltp", layout=self.aout.layout, rate=self.aout.rate)
            self.items = self._items()
            self.pending = None
            self.out = out
            self.done = False
        except Exception:
            self.src.close()
            raise

    def _items(self):
        """(start s, end s, thing to mux or encode) in order: packets (copy) or resampled frames (transcode)."""
        import av

        try:
            if self.copy:
                for pkt in self.src.demux(self.ain):
                    if pkt.pts is None or pkt.size == 0:
                        continue
                    start = float(pkt.pts * pkt.time_base) - self.t0
                    yield start, start + float((pkt.duration or 0) * pkt.time_base), pkt
            else:
                yield from self._cut()
        except av.error.FFmpegError as e:
            raise InputError(self.path, f"its audio track could not be read ({e})") from None

    def _cut(self):
        """The transcoded items: decoded, resampled frames as arrays, the samples before
        output time 0 dropped; each frame numbered by output sample (``pts`` in 1/rate, contiguous: the source's
        first sample after ``start`` fixes the offset, gaps later in the source are closed up)."""
        rate = self.aout.rate
        at = None  # output sample index of the next sample
        for frame in self.src.decode(self.ain):
            if frame.pts is None:
                continue
            for f in self.resampler.resample(frame):
                x = f.to_ndarray()  # (channels, samples) float32 (fltp)
                if at is None:
                    at = int(round((float(frame.pts * frame.time_base) - self.t0 - self.start) * rate))
                if at + x.shape[1] <= 0:
                    at += x.shape[1]
                    continue
                if at < 0:
                    x, at = x[:, -at:], 0
                yield at / rate, (at + x.shape[1]) / rate, x, at
                at += x.shape[1]

    def _array_frame(self, x, at: int, end: float | None = None):
        """An encoder frame of the samples ``x`` starting at output sample ``at``; with ``end``, cut there."""
        import av

        if end is not None:
            x = x[:, :max(0, int(round(end * self.aout.rate)) - at)]
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=self.aout.layout.name)
        f.sample_rate, f.pts, f.time_base = self.aout.rate, at, Fraction(1, self.aout.rate)
        return f

    def _write(self, item, end: float | None = None) -> None:
        if len(item) == 4:  # a cut array (transcoding)
            frame = self._array_frame(item[2], item[3], end)
            for p in self.aout.encode(frame) if frame.samples else ():
                self.out.mux(p)
            return
        start, stop, thing = item
        if stop < 0:
            return  # wholly before the first video frame (one ending at it, e.g. AAC's priming packet, stays)
        thing.stream = self.aout
        shift = int(round(self.t0 / thing.time_base)) if self.t0 else 0
        thing.pts -= shift
        if thing.dts is not None:
            thing.dts -= shift
        self.out.mux(thing)

    def mux_until(self, t: float) -> None:
        while not self.done:
            if self.pending is None:
                self.pending = next(self.items, None)
                if self.pending is None:
                    self.done = True
                    return
            if self.pending[0] >= t or (len(self.pending) == 4 and self.pending[1] > t):  # a cut frame may straddle the end: finish() trims it
                return
            self._write(self.pending)
            self.pending = None

    def finish(self, end: float) -> None:
        while not self.done:
            if self.pending is None:
                self.pending = next(self.items, None)
                if self.pending is None:
                    break
            start, stop = self.pending[:2]
            if len(self.pending) == 4:  # transcoded arrays: up to the video's end, the straddling frame trimmed
                if start >= end:
                    break
                self._write(self.pending, end)
                self.pending = None
                continue
            if (start + max(stop, start)) / 2 >= end:
                break
            self._write(self.pending)
            self.pending = None
        if not self.copy:
            for p in self.aout.encode(None):
                self.out.mux(p)
        self.src.close()


def write_mp4(path, frames: Iterable[np.ndarray], fps: float, crf: int = 18, preset: str = "medium", audio_from=None,
              faststart: bool = True, audio_start: float = 0.0) -> int:
    """Write RGB uint8 frames as an H.264 (yuv420p) mp4, atomically; returns the number of frames.

    Odd widths/heights are padded by one pixel (yuv420p needs even sizes). ``audio_from``: a video file whose
    first audio track (if any) is muxed in, from its first video frame on, ending with the written frames
    (see :class:`_AudioTrack`); ``audio_start``: output time 0 shows that audio at this many seconds after
    its first video frame (a clip from inside it: the audio before is dropped sample-exactly and the track is
    encoded as AAC; 0: packets copied as they are when the codec fits mp4, as before). ``faststart``: the index
    ('moov') is moved before the data, so players and browsers start playing before the whole file has arrived. No rotation metadata is written: frames are
    upright (:func:`deep_puppets.video.iter_frames` applies a source's display matrix on read).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    n = 0
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w", container_options={"movflags": "+faststart"} if faststart else {}) as out:
            stream = audio = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.ndim == 2:
                    frame = np.repeat(frame[:, :, None], 3, axis=2)
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset}
                    if audio_from is not None and audio_codec(audio_from) is not None:
                        audio = _AudioTrack(audio_from, out, audio_start)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
                n += 1
                if audio is not None:
                    audio.mux_until(n / float(rate))
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                out.mux(packet)
            if audio is not None:
                audio.finish(n / float(rate))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


class Mp4Feed:
    """:func:`write_mp4` in a background thread fed one frame at a time, so that one pass over frames writes
    several videos with bounded memory. ``put(frame)`` each frame, then ``close()`` (returns the frame count).
    Used as a context manager, an exception inside the block aborts the video: nothing is written (the file is
    written atomically). An error of the writer itself is raised by the next ``put`` or by ``close``."""

    _END, _ABORT = object(), object()

    class _Aborted(Exception):
        pass

    def __init__(self, path, fps: float, queue_size: int = 8, **kw):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self._queue = queue.Queue(maxsize=queue_size)
        self._pool = ThreadPoolExecutor(1)
        self._future = self._pool.submit(write_mp4, path, self._frames(), fps, **kw)

    def _frames(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if item is self._ABORT:
                raise self._Aborted
            yield item

    def _send(self, item) -> None:
        import queue

        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full as e:
                if self._future.done():  # the writer stopped: its error, or a writer that no longer reads
                    self._future.result()
                    raise RuntimeError("the video writer stopped reading frames") from e

    def put(self, frame: np.ndarray) -> None:
        if self._future.done():
            self._future.result()
            raise RuntimeError("the video writer stopped reading frames")
        self._send(frame)

    def close(self) -> int:
        try:
            self._send(self._END)
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        try:
            if not self._future.done():
                self._send(self._ABORT)
            self._future.exception()  # wait; the writer's own error is superseded by the caller's
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "Mp4Feed":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
