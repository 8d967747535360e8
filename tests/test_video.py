"""Video probing and reading: real frame counts, several containers/codecs, frame-exact segment reads,
and clear errors for bad files."""

from fractions import Fraction

import av
import numpy as np
import pytest

from deep_puppets.errors import InputError
from deep_puppets.ingest import probe_to_json, read_probe
from deep_puppets.video import iter_frames, probe, read_frames, write_mp4


def numbered_frames(n, h=48, w=64):
    """Frames whose mean brightness encodes their index (robust to lossy codecs)."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:] = (i * 7) % 256
        f[: h // 4, : (i % w) + 1] = 255
        out.append(f)
    return out


def frame_id(frame):
    return int(round(frame[frame.shape[0] // 2 :].mean() / 7)) % (256 // 7 + 1)


def write_with(path, codec, pix_fmt, frames, fps=25, **opts):
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        s.options = opts
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize(
    "suffix,codec,pix_fmt",
    [(".mp4", "libx264", "yuv420p"), (".mov", "libx264", "yuv420p"), (".avi", "mjpeg", "yuvj420p"), (".mkv", "ffv1", "yuv420p")],
)
def test_probe_counts_decoded_frames(tmp_path, suffix, codec, pix_fmt):
    frames = numbered_frames(37)
    path = tmp_path / f"clip{suffix}"
    write_with(path, codec, pix_fmt, frames, fps=30)
    info = probe(path)
    assert info.n_frames == 37
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(30, rel=1e-3)
    got = read_frames(path)
    assert got.shape == (37, 48, 64, 3)
    assert [frame_id(f) for f in got] == [frame_id(f) for f in frames]


def test_segment_reads_are_frame_exact_with_seeking(tmp_path):
    frames = numbered_frames(120)
    path = tmp_path / "gop.mp4"
    write_with(path, "libx264", "yuv420p", frames, g="10")  # a key frame every 10 frames
    info = probe(path)
    assert info.seekable
    want = [frame_id(f) for f in frames]
    for start, stop in [(0, 5), (13, 40), (50, 51), (99, 120), (115, None)]:
        got = [frame_id(f) for f in iter_frames(path, start, stop, info)]
        assert got == want[start:stop], (start, stop)


def test_write_mp4_is_h264_and_roundtrips(tmp_path):
    frames = numbered_frames(20, 33, 47)  # odd sizes get padded
    path = tmp_path / "out.mp4"
    assert write_mp4(path, frames, fps=25) == 20
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    info = probe(path)
    assert (info.n_frames, info.width, info.height) == (20, 48, 34)
    assert [frame_id(f[:33, :47]) for f in read_frames(path)] == [frame_id(f) for f in frames]
    assert not list(tmp_path.glob(".*tmp*"))


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty.mp4.*empty"):
        probe(p)


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 100)
    with pytest.raises(InputError, match="notes.mp4.*not a readable video"):
        probe(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.mp4.*does not exist"):
        probe(tmp_path / "nope.mp4")


def test_corrupt_file(tmp_path):
    frames = numbered_frames(30)
    good = tmp_path / "good.mp4"
    write_with(good, "libx264", "yuv420p", frames)
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    # garble everything after the first kilobyte: the header survives, no frame does
    data[1024:] = rng.integers(0, 256, len(data) - 1024, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt.mp4"):
        probe(bad)


def test_truncated_file_counts_only_decodable_frames(tmp_path):
    frames = numbered_frames(60)
    good = tmp_path / "full.mkv"
    write_with(good, "ffv1", "yuv420p", frames)
    data = good.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    info = probe(cut)
    assert 0 < info.n_frames < 60
    assert len(read_frames(cut, 0, None, info)) == info.n_frames
    head = tmp_path / "head.mp4"
    head.write_bytes((tmp_path / "full.mkv").read_bytes()[:200])
    with pytest.raises(InputError, match="head.mp4"):
        probe(head)


def test_probe_json_roundtrip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_mp4(path, numbered_frames(12), fps=24)
    info = probe_to_json(path, tmp_path / "probe.json", "clip")
    assert read_probe(tmp_path / "probe.json") == info
