"""Video probing and reading: real frame counts, several containers/codecs, frame-exact segment reads,
and clear errors for bad files."""

import logging
import os
import re
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from deep_puppets import config as dp_config
from deep_puppets.errors import ConfigError, InputError
from deep_puppets.ingest import probe_to_json, read_probe
from deep_puppets.mp4_writer import write_mp4
from deep_puppets.video import iter_frames, probe_video, read_frames

from .conftest import shared_file


def numbered_frames(n, h=48, w=64):
    """Frames whose mean brightness encodes their index (robust to lossy codecs)."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:] = (i * 7) % 256
        f[: h // 4, : (i % w) + 1] = 255
        out.append(f)
    return out


def noisy_frames(n, h=48, w=64):
    """:func:`numbered_frames` with noise above the coded half, so that every frame takes a similar number of
    bytes (a cut at 60% of the file then falls in the middle of the frames)."""
    rng = np.random.default_rng(0)
    frames = numbered_frames(n, h, w)
    for f in frames:
        f[h // 4 : h // 2] = rng.integers(0, 256, f[h // 4 : h // 2].shape, dtype=np.uint8)
    return frames


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
    info = probe_video(path)
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
    info = probe_video(path)
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
    info = probe_video(path)
    assert (info.n_frames, info.width, info.height) == (20, 48, 34)
    assert [frame_id(f[:33, :47]) for f in read_frames(path)] == [frame_id(f) for f in frames]
    assert not list(tmp_path.glob(".*tmp*"))


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty.mp4.*empty"):
        probe_video(p)


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 100)
    with pytest.raises(InputError, match="notes.mp4.*not a readable video"):
        probe_video(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.mp4.*does not exist"):
        probe_video(tmp_path / "nope.mp4")


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
        probe_video(bad)


TRUNCATABLE = [  # suffix, codec, pix_fmt, container options; each declares its length in a different way
    (".mp4", "libx264", "yuv420p", {"movflags": "faststart"}),  # frame count in the moov before the data
    (".mov", "libx264", "yuv420p", {"movflags": "faststart"}),
    # fragmented: the duration of the fragments that are there (a cut between fragments goes unnoticed)
    (".mp4", "libx264", "yuv420p", {"movflags": "frag_keyframe+empty_moov"}),
    (".avi", "mjpeg", "yuvj420p", {}),  # frame count in the header
    (".mkv", "ffv1", "yuv420p", {}),  # a per-stream DURATION tag only
]


def write_truncatable(path, frames, codec, pix_fmt, container_options):
    with av.open(str(path), "w", options=container_options) as out:
        s = out.add_stream(codec, rate=Fraction(25))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize("suffix,codec,pix_fmt,options", TRUNCATABLE)
def test_truncated_video_fails_naming_both_counts(tmp_path, suffix, codec, pix_fmt, options):
    """A file cut to 60% of its bytes decodes fewer frames than its container declares: an error naming the
    file and both counts (it used to be probed as the shorter video, silently)."""
    frames = noisy_frames(40)
    full = tmp_path / f"full{suffix}"
    write_truncatable(full, frames, codec, pix_fmt, options)
    info = probe_video(full)  # the whole file: no false alarm
    assert (info.n_frames, info.declared_frames) == (40, 40)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    declared = r"\d+" if "frag" in options.get("movflags", "") else "40"
    with pytest.raises(InputError, match=rf"cut{re.escape(suffix)}: decoded \d+ of {declared} declared frames: the file looks truncated") as e:
        probe_video(cut)
    decoded, declared = map(int, re.search(r"decoded (\d+) of (\d+)", str(e.value)).groups())
    assert 0 < decoded < 30 and decoded < declared - 2
    assert "\n" not in str(e.value)


def test_truncated_video_with_warn_uses_the_frames_that_decode(tmp_path, caplog):
    frames = noisy_frames(40)
    full = tmp_path / "full.mp4"
    write_truncatable(full, frames, "libx264", "yuv420p", {"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level(logging.WARNING, logger="deep_puppets.video"):
        info = probe_video(cut, on_truncated="warn")
    assert 0 < info.n_frames < 30 and info.declared_frames == 40
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"cut.mp4: decoded {info.n_frames} of 40 declared frames: the file looks truncated" in warnings[0].getMessage()
    # every later read stops at the frames that decode, never running into the decoder error
    got = read_frames(cut, 0, None, info)
    assert [frame_id(f) for f in got] == [frame_id(f) for f in frames[: info.n_frames]]
    assert len(list(iter_frames(cut, info.n_frames - 3, info.n_frames + 5, info))) == 3
    assert len(list(iter_frames(cut, 0, info.n_frames))) == info.n_frames  # without the probe too
    # the workflow's probe step takes the switch from the config
    out = probe_to_json(cut, tmp_path / "probe.json", "cut", on_truncated="warn")
    assert read_probe(tmp_path / "probe.json") == out
    with pytest.raises(InputError, match="cut.mp4: decoded"):
        probe_to_json(cut, tmp_path / "probe2.json", "cut")
    assert not (tmp_path / "probe2.json").exists()


def test_on_truncated_is_a_config_switch_defaulting_to_error():
    assert dp_config.prepare({})["input"] == {"on_truncated": "error"}
    assert dp_config.prepare({"input": {"on_truncated": "warn"}})["input"]["on_truncated"] == "warn"
    with pytest.raises(ConfigError, match="'input.on_truncated': 'ignore' is not one of"):
        dp_config.prepare({"input": {"on_truncated": "ignore"}})


def test_cut_inside_the_header_is_unreadable(tmp_path):
    write_with(tmp_path / "full.mkv", "ffv1", "yuv420p", numbered_frames(60))
    head = tmp_path / "head.mp4"
    head.write_bytes((tmp_path / "full.mkv").read_bytes()[:200])
    with pytest.raises(InputError, match="head.mp4"):
        probe_video(head)


@pytest.mark.parametrize("shared_clip", ["LivePortrait__d13.mp4", "LivePortrait__d6.mp4"])
def test_real_clips_are_not_flagged(shared_clip):
    """The phone clip (720x1280) carries no display matrix: it is portrait in its pixels; neither it nor a clip
    with an audio track longer than the video is flagged as truncated."""
    info = probe_video(shared_file(f"data/videos/{shared_clip}"))
    assert info.n_frames == info.declared_frames
    assert info.orientation == ""
    if shared_clip == "LivePortrait__d13.mp4":
        assert (info.width, info.height, info.n_frames) == (720, 1280, 352)


# ---------------------------------------------------------------------------------------------- rotation


def oriented_source(h=48, w=64):
    """An asymmetric frame: every rotation and flip of it is distinguishable."""
    f = np.full((h, w, 3), 40, np.uint8)
    f[: h // 3, : w // 4] = 250  # bright top-left block
    f[:, -w // 8 :, 0] = 200  # red right band
    f[-h // 6 :, w // 3 : w // 2, 2] = 220  # blue bottom patch
    return f


def write_rotated(path, frame, n, degrees, hflip=False, vflip=False):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        s.options = {"qp": "0", "g": "4"}
        s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for i in range(n):
            f = frame.copy()
            f[h_mid(f)] = (i * 9) % 256  # a frame number in the middle row
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def h_mid(f):
    return (slice(f.shape[0] // 2, f.shape[0] // 2 + 2), slice(f.shape[1] // 2, f.shape[1] // 2 + 2))


def close(a, b):
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 6


@pytest.mark.parametrize(
    "degrees,hflip,vflip,shown",
    [
        # what a player shows (PyAV/FFmpeg: degrees counter-clockwise, then the mirrors)
        (90, False, False, lambda a: np.rot90(a, 1)),
        (-90, False, False, lambda a: np.rot90(a, -1)),  # a phone's "rotate=90" (turn clockwise to view)
        (180, False, False, lambda a: np.rot90(a, 2)),
        (90, True, False, lambda a: np.rot90(a, 1)[:, ::-1]),
        (0, False, True, lambda a: a[::-1]),
    ],
)
def test_display_matrix_is_applied_on_read(tmp_path, degrees, hflip, vflip, shown):
    src = oriented_source()
    path = tmp_path / "phone.mp4"
    write_rotated(path, src, 12, degrees, hflip, vflip)
    want = shown(src)
    info = probe_video(path)
    assert (info.height, info.width) == want.shape[:2]
    assert info.orientation
    frames = read_frames(path, 0, None, info)
    assert frames.shape == (12, *want.shape)
    mask = np.ones(src.shape[:2], bool)
    mask[h_mid(src)] = False  # the frame number pixels
    keep = shown(mask[..., None])[..., 0]
    for f in frames:
        assert close(f[keep], want[keep])
        assert f.flags.c_contiguous
    # frame order and seeking survive the rotation
    seek = list(iter_frames(path, 7, 9, info))
    assert [np.array_equal(a, b) for a, b in zip(seek, frames[7:9])] == [True, True]
    if not (hflip or vflip):  # OpenCV's FFmpeg backend with its autorotation: an independent player
        cap = cv2.VideoCapture(str(path))
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        ok, bgr = cap.read()
        cap.release()
        assert ok and close(frames[0], bgr[..., ::-1].copy())


def test_orientation_ops_follow_ffmpeg_autorotate():
    from deep_puppets.video import orientation_ops

    fp = 65536
    # display matrices as FFmpeg writes them (av_display_rotation_set, av_display_matrix_flip)
    assert orientation_ops(None) == ()
    assert orientation_ops([fp, 0, 0, 0, fp, 0, 0, 0, 1 << 30]) == ()
    assert orientation_ops([0, -fp, 0, fp, 0, 0, 0, 0, 1 << 30]) == ("cclock",)  # rotation 90 (ccw)
    assert orientation_ops([0, fp, 0, -fp, 0, 0, 0, 0, 1 << 30]) == ("clock",)  # rotate=90 tag of phones
    assert orientation_ops([-fp, 0, 0, 0, -fp, 0, 0, 0, 1 << 30]) == ("hflip", "vflip")
    with pytest.raises(ValueError, match="45°"):
        orientation_ops([46341, -46341, 0, 46341, 46341, 0, 0, 0, 1 << 30])


# ------------------------------------------------------------------------------- files that are no video


@pytest.fixture
def odd_files(tmp_path):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(tmp_path / "loop2.mp4")
    (tmp_path / "loop2.mp4").symlink_to(loop)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "gone.mp4")
    return {"loop": (loop, "is a symbolic link loop"), "fifo": (fifo, r"is not a regular file \(a FIFO\)"),
            "dangling": (dangling, "is a broken symbolic link")}


@pytest.mark.parametrize("kind", ["loop", "fifo", "dangling"])
def test_symlink_loop_and_fifo_get_precise_errors(odd_files, kind, tmp_path):
    path, problem = odd_files[kind]
    with pytest.raises(InputError, match=f"{re.escape(path.name)}: {problem}"):
        probe_video(path)  # a FIFO is never opened (it would block)
    with pytest.raises(InputError, match=problem):
        list(iter_frames(path))
    with pytest.raises(ConfigError, match=rf"^'videos.x': file '{re.escape(path.name)}' {problem}"):
        dp_config.prepare({"videos": {"x": path.name}}, tmp_path)


# ---------------------------------------------------------------------------------------------- tiny face


def face_points(n, top, height, width=200, cols=20):
    """Per-frame points spanning ``height`` video pixels from ``top`` (a face's landmarks, coarsely)."""
    y = np.linspace(top, top + height, cols)
    return [np.stack([np.linspace(100, 100 + width, cols), y + 0.5 * t, np.zeros(cols)], axis=1) for t in range(n)]


def test_tiny_face_in_conditioning_images_warns_once(caplog):
    from deep_puppets.framing import frame_box
    from deep_puppets.jobs.render import face_height_px, warn_if_face_small

    box = frame_box(720, 1280)  # a portrait phone frame padded to 1280x1280
    small = face_points(30, 600, 100)  # 100 px of 1280 -> 20 px at 256
    assert face_height_px(small, box, 256) == pytest.approx(20, abs=0.01)
    with caplog.at_level(logging.WARNING, logger="deep_puppets.jobs"):
        warn_if_face_small(small, box, 256, "track.h5")
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1
    assert "track.h5: face only ~20 px tall in the conditioning images (render.size 256)" in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deep_puppets.jobs"):
        warn_if_face_small(small, box, 1024, "track.h5")  # 80 px at 1024: fine
        warn_if_face_small(face_points(30, 300, 600), box, 256, "track.h5")  # 120 px: fine
        bad = face_points(30, 600, 100)
        for t in range(0, 30, 2):
            bad[t] = bad[t] * np.nan  # frames without finite points are left out, not counted as 0 px
        assert face_height_px(bad, box, 256) == pytest.approx(20, abs=0.01)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_probe_json_roundtrip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_mp4(path, numbered_frames(12), fps=24)
    info = probe_to_json(path, tmp_path / "probe.json", "clip")
    assert read_probe(tmp_path / "probe.json") == info
