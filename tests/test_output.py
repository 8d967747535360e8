"""The re-enactment video: generated crops composited into the target's full-resolution frames, its size, rate,
length, audio and faststart, exactness outside the masks, and the removal of the plate's own head; the mp4
writer's audio cut at a start time (a clip from inside a video).

Tiny synthetic clips: a portrait (non-square) target whose "head" is a magenta disc moving over a static textured
background, its conditioning a disc at the centre of a per-frame head box (not the whole frame), and a tiny
untrained generator (geometry, not looks, is under test).
"""

from __future__ import annotations

import types
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from deep_puppets.gan.inference import build_generator, save_generator
from deep_puppets.gan.settings import TrainSettings
from deep_puppets.mp4_writer import write_mp4
from deep_puppets.reenactment import (
    PREVIEW_HEIGHT,
    CompositeSettings,
    background_plate,
    composite_frames,
    head_region,
    pair_frames_for_output,
    plate_frames,
    write_reenactment,
)
from deep_puppets.render.conditioning_file import ConditioningWriter, Frame
from deep_puppets.video import iter_frames, probe_video

W, H = 96, 160  # portrait target, as a phone films
S = 32  # conditioning / generator size
SIDE = 48  # head box side in frame pixels
RADIUS = 12  # the target's head (a disc) in frame pixels
HEAD = np.array([230, 20, 230], np.uint8)


def background() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.stack([120 + 50 * np.sin(xx / 9.0), 120 + 50 * np.cos(yy / 13.0), 110 + 40 * np.sin((xx + yy) / 17.0)], -1).astype(np.uint8)


def target_centre(t: int, n: int) -> tuple[float, float]:
    """The target's head goes from the top left to the bottom right and back: far enough that every background
    pixel shows in some frame."""
    a = 0.5 - 0.5 * np.cos(2 * np.pi * t / n)
    return 28 + 40 * a, 30 + 100 * a


def box_at(cx, cy) -> np.ndarray:
    return np.array([cx - SIDE / 2, cy - SIDE / 2, cx + SIDE / 2, cy + SIDE / 2], np.float32)


def disc_conditioning(valid: bool = True) -> Frame:
    """A rendered 'face' at the centre of its head box: a disc of the head's radius, eyes as holes."""
    import cv2

    col = np.zeros((S, S, 3), np.uint8)
    if valid:
        r = int(round(RADIUS * S / SIDE))
        cv2.circle(col, (S // 2, S // 2), r, (200, 120, 90), -1)
        cv2.circle(col, (S // 2 - 3, S // 2 - 2), 1, (0, 0, 0), -1)
    corr = col[..., ::-1].copy()
    return Frame(col, corr, (col > 150).astype(np.uint8) * 255, valid=valid)


def write_conditioning_file(path, boxes, valid=None):
    n = len(boxes)
    valid = np.ones(n, bool) if valid is None else valid
    with ConditioningWriter(path, n, (S, S), {"renderer": "test", "settings": "{}", "source": "test", "framing": "null"}, compression="lzf") as w:
        for i in range(n):
            w.append(disc_conditioning(bool(valid[i])), i, boxes[i] if valid[i] else np.full(4, np.nan))
    return path


def make_target(tmp_path, n=30, fps=25.0):
    bg = background()
    frames, boxes = [], []
    for t in range(n):
        cx, cy = target_centre(t, n)
        img = bg.copy()
        yy, xx = np.mgrid[0:H, 0:W]
        img[np.hypot(xx - cx, yy - cy) < RADIUS] = HEAD
        frames.append(img)
        boxes.append(box_at(cx, cy))
    video = tmp_path / "target.mp4"
    write_mp4(video, frames, fps, crf=4)
    cond = write_conditioning_file(tmp_path / "target_cond.h5", np.stack(boxes))
    return video, cond, bg, np.stack(frames), np.stack(boxes)


def make_source(tmp_path, n=20, fps=20.0, audio=True, suffix=".mp4", audio_codec="aac"):
    """A small source clip (64x48) with a 440 Hz sine tone as its audio track."""
    path = tmp_path / f"source{suffix}"
    rate = 44100
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = None
        if audio:
            a = out.add_stream(audio_codec, rate=rate)
            a.layout = "mono"
        samples = int(round(n / fps * rate))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
        for k in range(n):
            img = np.full((48, 64, 3), 40 + 8 * k, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            mux_mono_audio(out, a, tone, rate)
    return path


def mux_mono_audio(out, stream, x: np.ndarray, rate: int) -> None:
    """Encode mono samples ``x`` (float, ±1) into ``stream`` of container ``out`` in frames of 1024, time stamped
    by sample (float planar for AAC, 16-bit integers for PCM), and flush it."""
    pcm = stream.codec_context.name != "aac"
    for i in range(0, len(x), 1024):
        c = x[i:i + 1024][None].astype(np.float32)
        frame = av.AudioFrame.from_ndarray((c * 32767).astype(np.int16) if pcm else c, format="s16" if pcm else "fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, i
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


def pair_boxes(n, far: bool):
    """The pair's head: expression mode near the target's own place; pose mode far away (top when the target's is
    at the bottom, and back)."""
    out = []
    for j in range(n):
        cx, cy = target_centre(j, n)
        out.append(box_at(W - cx, H - cy) if far else box_at(cx, cy))
    return np.stack(out)


def tiny_generator(path):
    torch.manual_seed(0)
    s = TrainSettings(size=S, gen_base=8, gen_depth=3, gen_max_ch=16, window=2, di_layers=2, di_num_D=1, dv_layers=2, threads=1)
    save_generator(types.SimpleNamespace(s=s, generator=build_generator(s), iteration=0), path)
    return path


def atoms(path) -> list[str]:
    """Top-level MP4 boxes in file order."""
    data, i, out = path.read_bytes(), 0, []
    while i + 8 <= len(data):
        n, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8].decode("latin1")
        out.append(kind)
        if n == 1:
            n = int.from_bytes(data[i + 8:i + 16], "big")
        if n < 8:
            break
        i += n
    return out


def audio_span(path) -> tuple[str, float] | None:
    """(codec, presentation end in seconds of the last audio packet) or None without an audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        end = max(float((p.pts + p.duration) * p.time_base) for p in c.demux(a) if p.pts is not None)
        return a.codec_context.name, end


# --------------------------------------------------------------------------------------------- schedules


def test_output_frames_follow_the_target_rate_and_last_as_long_as_the_source():
    for n, fs, ft in [(20, 20.0, 25.0), (30, 30.0, 30.0), (100, 29.97, 24.0), (7, 25.0, 60.0)]:
        j = pair_frames_for_output(n, fs, ft)
        assert abs(len(j) / ft - n / fs) <= 0.5 / ft + 1e-9
        assert j[0] == 0 and j.max() <= n - 1 and np.all(np.diff(j) >= 0)
        assert np.array_equal(j, np.minimum(np.rint(np.arange(len(j)) * fs / ft), n - 1))
    j = pair_frames_for_output(10, 20.0, 20.0)
    assert np.array_equal(j, np.arange(10))
    # expression: the plate is the frame whose pose the pair frame kept; pose+expression: the target's own rate
    pose_frame = np.array([4, 3, 2, 1, 0, 1, 2, 3, 4, 3])
    assert np.array_equal(plate_frames(j, 5, "expression", pose_frame), pose_frame)
    assert np.array_equal(plate_frames(np.array([0, 0, 1, 1]), 5, "pose+expression"), [0, 1, 2, 3])


# --------------------------------------------------------------------------------------------- compositing


@pytest.mark.parametrize("mode", ["expression", "pose+expression"])
def test_pixels_outside_the_masks_are_the_plates_exactly(mode):
    """(c) Before encoding, every pixel outside the blend masks is the plate's, bit for bit; inside, the head
    changed. The masks stay near the boxes (the head boxes, not the whole frame)."""
    n = 12
    rng = np.random.default_rng(0)
    plates = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    t_boxes = np.stack([box_at(*target_centre(t, n)) for t in range(n)])
    p_boxes = pair_boxes(n, far=mode == "pose+expression")
    colour = np.stack([disc_conditioning().colour] * n)
    crops = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    cs = CompositeSettings()
    bg = np.full((H, W, 3), 77, np.uint8)
    p_valid = np.ones(n, bool)
    p_valid[5] = False  # no render: the plate, untouched
    out = list(composite_frames(crops, range(n), range(n), plates, colour, p_boxes, p_valid, mode, cs, colour, t_boxes, np.ones(n, bool), bg))
    assert len(out) == n
    for k, c in enumerate(out):
        assert c.frame.shape == (H, W, 3) and c.plate_index == k
        assert np.array_equal(c.frame[~c.changed], plates[k][~c.changed])
        if k == 5:
            assert not c.changed.any() and np.array_equal(c.frame, plates[k])
            continue
        near = np.zeros((H, W), bool)
        for b in [p_boxes[k]] + ([t_boxes[k]] if mode == "pose+expression" else []):
            x0, y0, x1, y1 = np.rint(b).astype(int)
            near[max(y0, 0):y1, max(x0, 0):x1] = True
        assert c.changed.any() and not (c.changed & ~near).any()
        assert (c.frame[c.changed] != plates[k][c.changed]).any()


def test_pose_mode_never_pastes_what_the_generator_painted_beyond_the_frame():
    """The target's head boxes always overhang the frame's right edge (a phone close-up), so its generator paints
    the black padding on that side of the crop. The transferred head sits further left: that part of the crop is now
    inside the frame. Whatever the generator paints there must not reach the output (no dark bar along the edge):
    two crops that differ only there give the same frames; inside the trained part the head is pasted."""
    n = 6
    rng = np.random.default_rng(1)
    plates = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    overhang = SIDE / 4  # a quarter of the box out of the frame in every training frame
    t_boxes = np.stack([box_at(W + overhang - SIDE / 2, 60 + 4 * t) for t in range(n)])
    p_boxes = t_boxes - np.array([SIDE / 4, 0, SIDE / 4, 0], np.float32)  # the new head, further left: all inside
    colour = np.stack([disc_conditioning().colour] * n)
    edge_col = int(round(S * 3 / 4))  # the crop column of the frame's edge in training
    crops = np.full((n, S, S, 3), 180, np.uint8)
    black = crops.copy()
    black[:, :, edge_col - 1 :] = 0  # what a generator trained on padded crops paints beyond the edge
    white = crops.copy()
    white[:, :, edge_col - 1 :] = 255
    bg = np.full((H, W, 3), 77, np.uint8)
    cs = CompositeSettings()

    def frames(c):
        return [f.frame for f in composite_frames(c, range(n), range(n), plates, colour, p_boxes, np.ones(n, bool), "pose+expression", cs,
                                                  colour, t_boxes, np.ones(n, bool), bg)]  # fmt: skip

    a, b = frames(black), frames(white)
    for k in range(n):
        x0 = p_boxes[k, 0]
        beyond = int(np.ceil(x0 + (edge_col - 0.5) * SIDE / S - 0.5))  # frame pixels sampling only that part
        assert beyond < W - 4
        assert np.array_equal(a[k][:, beyond:], b[k][:, beyond:])
        assert not (a[k][:, beyond:].max(-1) < 20).any() or (plates[k][:, beyond:].max(-1) < 20).any()
        cy = int(round((p_boxes[k, 1] + p_boxes[k, 3]) / 2))
        cx = int(round(x0 + SIDE / 2))
        assert (a[k][cy, cx] == 180).all()  # the head itself is pasted


def test_background_plate_recovers_the_background_behind_a_moving_head(tmp_path):
    _, cond, bg, frames, boxes = make_target(tmp_path, n=30)
    colour = np.stack([disc_conditioning().colour] * len(frames))
    plate, never = background_plate(frames, colour, boxes, np.ones(len(frames), bool), 0.45, 0.08, n_samples=10)
    assert not never.any()  # the head moved off every pixel in some sampled frame
    assert np.array_equal(plate, bg)  # exact: raw frames, the median of background pixels only
    # a head that never moves: what it always covers is never seen, and inpainted (not left magenta)
    still = np.repeat(frames[:1], 10, 0)
    plate, never = background_plate(still, colour[:10], np.repeat(boxes[:1], 10, 0), np.ones(10, bool), 0.45, 0.08)
    assert never.any() and never.mean() < 0.2
    d = np.abs(plate.astype(int) - HEAD).sum(-1)
    assert d[never].min() > 60  # no magenta head colour in the inpainted part


# --------------------------------------------------------------------------------------------- the video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clips")
    video, tcond, bg, frames, boxes = make_target(tmp, n=30, fps=25.0)
    source = make_source(tmp, n=20, fps=20.0)
    return dict(tmp=tmp, target=video, target_cond=tcond, bg=bg, frames=frames, boxes=boxes, source=source,
                generator=tiny_generator(tmp / "G.pt"))


DEFAULT_SETTINGS = CompositeSettings()


def run(clips, tmp_path, mode, source=None, settings=DEFAULT_SETTINGS):
    source = source or clips["source"]
    n_src = probe_video(source).n_frames
    pcond = write_conditioning_file(tmp_path / "pair_cond.h5", pair_boxes(n_src, far=mode == "pose+expression"))
    out, side = tmp_path / "reenactment.mp4", tmp_path / "side_by_side.mp4"
    write_reenactment(clips["generator"], pcond, clips["target_cond"], source, probe_video(source), clips["target"], probe_video(clips["target"]),
                      out, side, mode, np.arange(n_src) % 30, settings, device="cpu")
    return out, side


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["expression", "pose+expression"])
def test_output_has_the_targets_size_and_rate_the_sources_length_and_audio(clips, tmp_path, mode):
    """(a) + (b): a 96x160 target at 25 fps, a 20-frame source at 20 fps with AAC audio: 25 frames of 96x160 at
    25 fps (1 s, as the source), H.264 yuv420p, the source's AAC audio ending within a frame of the video, the
    index ('moov') before the data ('mdat'); no temporary frame store left behind."""
    out, side = run(clips, tmp_path, mode)
    info = probe_video(out)
    assert (info.width, info.height, info.codec, info.orientation) == (W, H, "h264", "")
    assert info.fps == pytest.approx(25.0) and info.n_frames == 25
    src = probe_video(clips["source"])
    assert abs(info.n_frames / info.fps - src.n_frames / src.fps) <= 1 / info.fps
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    codec, end = audio_span(out)
    assert codec == "aac" and abs(end - info.n_frames / info.fps) <= 1 / info.fps, end
    kinds = atoms(out)
    assert kinds.index("moov") < kinds.index("mdat"), kinds
    side_info = probe_video(side)
    side_h = max(PREVIEW_HEIGHT, S)  # small crops enlarged so that the panels' labels stay readable
    assert side_info.n_frames == 25 and side_info.height == side_h and side_info.width == 3 * side_h
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair_cond.h5", "reenactment.mp4", "side_by_side.mp4"]


def test_no_audio_when_the_source_has_none_or_when_switched_off(clips, tmp_path):
    silent = make_source(tmp_path, audio=False)
    out, _ = run(clips, tmp_path, "expression", source=silent)
    assert audio_span(out) is None and probe_video(out).n_frames == 25
    out, _ = run(clips, tmp_path, "expression", settings=CompositeSettings(audio=False))
    assert audio_span(out) is None


def test_audio_that_does_not_fit_mp4_is_transcoded_to_aac(tmp_path):
    src = make_source(tmp_path, n=20, fps=20.0, suffix=".mkv", audio_codec="pcm_s16le")
    with av.open(str(src)) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"
    out = tmp_path / "out.mp4"
    write_mp4(out, (np.zeros((32, 48, 3), np.uint8) for _ in range(15)), 25.0, audio_from=src)  # 0.6 s of the 1 s source
    codec, end = audio_span(out)
    assert codec == "aac" and abs(end - 15 / 25) <= 1 / 25, end


RATE, ONSET, LOUD = 44100, 1.0, 0.3  # the tone source: silence, then a 440 Hz tone of amplitude 0.3 from 1 s on


def make_tone_source(tmp_path, audio_codec="aac", suffix=".mp4", n=50, fps=25.0):
    """A 64x48 clip of ``n`` frames whose mono audio is silent until ONSET s, then a 440 Hz tone."""
    path = tmp_path / f"tone{suffix}"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(audio_codec, rate=RATE)
        a.layout = "mono"
        t = np.arange(int(round(n / fps * RATE))) / RATE
        x = np.where(t >= ONSET, LOUD * np.sin(2 * np.pi * 440 * (t - ONSET)), 0).astype(np.float32)
        for k in range(n):
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 + k, np.uint8), format="rgb24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        mux_mono_audio(out, a, x, RATE)
    return path


def tone_onset(path, threshold=0.1) -> float:
    """Seconds at which the decoded audio first exceeds ``threshold`` (the tone's first such sample)."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    x = np.concatenate([f.to_ndarray()[0] for f in frames])
    x = x / 32768.0 if x.dtype == np.int16 else x
    return float(frames[0].pts * frames[0].time_base) + int(np.argmax(np.abs(x) > threshold)) / RATE


def test_transcoded_audio_keeps_its_timing(tmp_path):
    """A source whose audio must be transcoded (PCM in .mkv), written from its start: the tone starts where it does
    in the source (before the fix the encoder's priming, without time stamps, delayed it by 23 ms) and the audio
    ends with the video (it ended 31 ms after it)."""
    src = make_tone_source(tmp_path, "pcm_s16le", ".mkv")
    out = tmp_path / "out.mp4"
    write_mp4(out, (np.zeros((32, 48, 3), np.uint8) for _ in range(35)), 25.0, audio_from=src)
    assert abs(tone_onset(out) - tone_onset(src)) < 1e-4, (tone_onset(out), tone_onset(src))
    codec, end = audio_span(out)
    assert codec == "aac" and abs(end - 35 / 25) < 1e-4, end


@pytest.mark.parametrize("audio_codec, suffix", [("aac", ".mp4"), ("pcm_s16le", ".mkv")])
def test_audio_start_cuts_the_sound_sample_exactly_and_ends_with_the_video(tmp_path, audio_codec, suffix):
    """A clip from 0.8 s of a source whose tone starts at 1.0 s: the output's tone starts at 0.2 s (to a tenth of
    a millisecond; measured: the same sample as the source's own onset, AAC priming included), the audio is AAC
    and ends with the video's 1.2 s (measured: to the sample; the bar is half an AAC packet)."""
    src = make_tone_source(tmp_path, audio_codec, suffix)
    rise = np.arcsin(0.1 / LOUD) / (2 * np.pi * 440)  # the tone reaches the threshold this long after its start
    assert abs(tone_onset(src) - (ONSET + rise)) < 1e-4  # the source as decoded
    for start in (0.8, 0.37):
        out = tmp_path / f"out{start}.mp4"
        write_mp4(out, (np.zeros((32, 48, 3), np.uint8) for _ in range(30)), 25.0, audio_from=src, audio_start=start)
        assert abs(tone_onset(out) - (ONSET - start + rise)) < 1e-4, (start, tone_onset(out))
        codec, end = audio_span(out)
        assert codec == "aac" and abs(end - 30 / 25) < 0.5 * 1024 / RATE and abs(end - 30 / 25) < 1e-4, (start, end)


def test_audio_start_zero_copies_the_packets(tmp_path):
    """audio_start 0 (the re-enactment's case) keeps the packet copy: the output's AAC packets are the source's,
    byte for byte, and the file is the one written without the argument."""
    src = make_tone_source(tmp_path)
    frames = [np.full((32, 48, 3), 10 * k, np.uint8) for k in range(30)]
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_mp4(a, iter(frames), 25.0, audio_from=src)
    write_mp4(b, iter(frames), 25.0, audio_from=src, audio_start=0.0)
    assert a.read_bytes() == b.read_bytes()

    def packets(path):
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]

    out, ref = packets(b), packets(src)
    assert len(out) >= 30 / 25 * RATE / 1024 and out == ref[:len(out)]
    assert abs(tone_onset(b) - tone_onset(src)) < 1e-6


def test_pose_mode_leaves_no_plate_head_behind(clips, tmp_path):
    """(d) The target's head (magenta) moves far from where the new head is pasted: where the plate's head was and
    the new head is not, the output is the background (within H.264's noise), not the head."""
    out, _ = run(clips, tmp_path, "pose+expression")
    cs = CompositeSettings()
    frames = clips["frames"]
    n_src = 20
    pair = pair_boxes(n_src, far=True)
    colour = disc_conditioning().colour
    from deep_puppets.transfer import ping_pong

    plates = ping_pong(25, len(frames))
    js = pair_frames_for_output(n_src, 20.0, 25.0)
    yy, xx = np.mgrid[0:H, 0:W]
    checked = 0
    for k, img in enumerate(iter_frames(out)):
        p = plates[k]
        cx, cy = target_centre(p, len(frames))
        old_head = np.hypot(xx - cx, yy - cy) < RADIUS
        new = head_region(colour, pair[js[k]], (H, W), cs.pose_grow, cs.feather) > 0
        region = old_head & ~new
        if region.sum() < 50:
            continue
        checked += 1
        err = np.abs(img[region].astype(int) - clips["bg"][region]).mean()
        before = np.abs(frames[p][region].astype(int) - clips["bg"][region]).mean()
        assert err < 6 and before > 60, (k, err, before)
    assert checked >= 15
