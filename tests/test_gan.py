"""Rendering-to-video GAN: split, windows, receptive field, flow, training, resume, synthesis, baselines.

Everything runs on tiny synthetic data (a moving coloured blob as conditioning, a striped version over a
textured background as the real video) with tiny networks and one torch thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deep_puppets import h5io
from deep_puppets.errors import BusyError, ConfigError, InputError
from deep_puppets.gan import losses as L
from deep_puppets.gan.baselines import (
    mean_frame,
    nearest_neighbours,
    photometric_error,
    photometric_error_map,
    retrieval_baseline,
)
from deep_puppets.gan.checkpoints import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from deep_puppets.gan.data import (
    ClipDataset,
    batch_items,
    crop_resize,
    fill_boxes,
    split_frames,
    stack_window,
    window_indices,
)
from deep_puppets.gan.flow import FLOW, compute_flow, open_flow_file, write_flow_file
from deep_puppets.gan.inference import generate, load_generator
from deep_puppets.gan.networks import MultiscaleDiscriminator, receptive_field
from deep_puppets.gan.settings import TrainSettings
from deep_puppets.gan.synthesize import side_by_side, synthesize_video
from deep_puppets.gan.train import train, train_from_files
from deep_puppets.gan.trainer import Trainer, seed_everything
from deep_puppets.layouts import LAYOUTS
from deep_puppets.render.conditioning_file import STREAMS

from .conftest import REPO


def synthetic(n: int = 36, size: int = 64):
    """Conditioning streams (a moving blob: flat colour, its local coordinates, a white 'pupil') and the real
    frames (the blob striped, over a fixed textured background)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = (128 + 60 * np.sin(xx[..., None] / 3.0 + np.arange(3)) * np.cos(yy[..., None] / 5.0)).astype(np.uint8)
    cond = {k: np.zeros((n, size, size, 3), np.uint8) for k in STREAMS}
    real = np.empty((n, size, size, 3), np.uint8)
    r = size / 6
    for t in range(n):
        cx = size / 2 + size / 4 * np.sin(2 * np.pi * t / n)
        cy = size / 2 + size / 5 * np.cos(2 * np.pi * t / n)
        d = np.hypot(xx - cx, yy - cy)
        m = d < r
        cond["colour"][t][m] = (220, 60, 40)
        cond["correspondence"][t][..., 0] = np.where(m, (xx - cx + r) / (2 * r) * 255, 0).astype(np.uint8)
        cond["correspondence"][t][..., 1] = np.where(m, (yy - cy + r) / (2 * r) * 255, 0).astype(np.uint8)
        cond["gaze"][t][d < size / 20] = (255, 255, 255)
        img = bg.copy()
        stripes = (np.sin((xx - cx) / 1.5) > 0)[..., None] * np.array([40, 0, 0]) + np.array([180, 70, 50])
        img[m] = stripes[m].astype(np.uint8)
        real[t] = img
    return cond, real


TINY = dict(size=32, gen_base=8, gen_depth=3, gen_max_ch=32, d_base=8, d_max_ch=32, di_layers=2, di_num_D=2,
            dv_layers=2, dv_num_D=1, window=2, clip_len=2, eval_frames=2, log_every=3, checkpoint_every=3,
            keep_checkpoints=2, iterations=12, threads=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread (fast for tiny networks, and needed for bit-exact resume); restored for other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder:
    """Array-like that records which frames were read (and can slow reads down)."""

    def __init__(self, arr, read: set, delay: float = 0.0):
        self.arr, self.read, self.delay = arr, read, delay
        self.shape = arr.shape

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, t):
        self.read.add(int(t))
        if self.delay:
            time.sleep(self.delay)
        return self.arr[t]


@pytest.fixture(scope="module")
def data32():
    cond, real = synthetic(30, 32)
    flow, frames = compute_flow(real, (32, 32))
    return cond, frames, flow


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data32):
    """A complete tiny run; it also records which frames training read."""
    cond, frames, flow = data32
    read: set = set()
    out = tmp_path_factory.mktemp("uninterrupted")
    s = TrainSettings(**{**TINY, "eval_frames": 0})
    res = train({k: Recorder(v, read) for k, v in cond.items()}, Recorder(frames, read), Recorder(flow, read), s, out, out / "G.pt")
    return out, res, read


# ------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("n", [1, 2, 3, 10, 96, 1001])
@pytest.mark.parametrize("frac", [0.0, 0.2, 1 / 3, 0.9])
def test_split_is_by_time(n, frac):
    train_idx, held = split_frames(n, frac)
    assert len(train_idx) >= 1 and len(train_idx) + len(held) == n
    assert np.array_equal(np.concatenate([train_idx, held]), np.arange(n))
    if n > 1 and frac < 0.9:
        assert len(held) == min(round(n * frac), n - 1)


@pytest.mark.parametrize("window,clip_len", [(1, 1), (3, 2), (5, 4), (11, 3)])
def test_training_clips_and_windows_never_reach_held_out_frames(window, clip_len):
    n = 40
    train_idx, held = split_frames(n, 1 / 3)
    cond = {k: np.zeros((n, 1, 1, 3), np.uint8) for k in STREAMS}
    ds = ClipDataset(cond, np.zeros((n, 1, 1, 3), np.uint8), None, train_idx, STREAMS, (1, 1), window, clip_len)
    used = set()
    for item in range(len(ds)):
        for t in ds.clip_frames(item):
            used.update([int(t)], window_indices(int(t), window, ds.first).tolist())
    assert used == set(train_idx.tolist())  # every training frame is used, no held-out one
    assert len(ds) == len(train_idx) - clip_len + 1


def test_training_reads_only_training_frames(uninterrupted, data32):
    _, _, read = uninterrupted
    train_idx, _ = split_frames(len(data32[1]), TrainSettings().held_out_fraction)
    assert read and read <= set(train_idx.tolist())


def test_window_stacks_the_right_frames_with_start_padding():
    assert window_indices(5, 3).tolist() == [3, 4, 5]
    assert window_indices(1, 3).tolist() == [0, 0, 1]  # padding: the first frame repeated
    assert window_indices(0, 3).tolist() == [0, 0, 0]
    assert window_indices(12, 4, first=11).tolist() == [11, 11, 11, 12]
    n, size = 6, (4, 4)
    # stream k, frame t: every pixel = 10 * t + k (+ 100 in the green channel, + 200 in blue)
    cond = {name: np.stack([np.broadcast_to(np.array([10 * t + k, 100 + 10 * t + k, 200 + t], np.uint8), size + (3,)) for t in range(n)])
            for k, name in enumerate(("a", "b"))}
    x = stack_window(cond, ("a", "b"), window_indices(1, 3), size)
    assert x.shape == (3 * 2 * 3, 4, 4) and x.dtype == np.float32
    want = []
    for t in (0, 0, 1):
        for k in (0, 1):
            want += [10 * t + k, 100 + 10 * t + k, 200 + t]
    assert np.allclose(x[:, 0, 0] * 255, want)
    # the current frame's conditioning is the last 3 * n_streams channels
    assert np.allclose(x[-6:, 2, 3] * 255, want[-6:])


def test_crop_resize_follows_the_renderer_convention():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    assert np.array_equal(crop_resize(img, (10, 5, 30, 25), (20, 20)), img[5:25, 10:30])  # 1:1 crop is exact
    assert np.array_equal(crop_resize(img, (0, 0, 60, 40), (40, 60)), img)
    out = crop_resize(img, (50, -10, 70, 10), (20, 20))  # partly outside: black there
    assert np.array_equal(out[10:, :10], img[:10, 50:60]) and not out[:10].any() and not out[:, 10:].any()
    flat = np.full((400, 400, 3), 77, np.uint8)
    assert np.all(crop_resize(flat, (0, 0, 400, 400), (16, 16)) == 77)  # pyrDown path keeps a flat image flat
    boxes = np.array([[np.nan] * 4, [0, 0, 2, 2], [np.nan] * 4, [np.nan] * 4, [1, 1, 3, 3]], float)
    assert fill_boxes(boxes)[:, 0].tolist() == [0, 0, 0, 1, 1]


def test_batch_order_is_a_pure_function_of_seed_and_iteration():
    a = [batch_items(i, 2, 7, seed=3).tolist() for i in range(10)]
    assert a == [batch_items(i, 2, 7, seed=3).tolist() for i in range(10)]
    first_epoch = sum(a[:3], []) + a[3][:1]
    assert sorted(first_epoch) == list(range(7))  # an epoch visits every clip once
    assert a != [batch_items(i, 2, 7, seed=4).tolist() for i in range(10)]


# ------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("n_layers,scale", [(1, 0), (2, 0), (3, 0), (3, 1), (2, 2)])
def test_receptive_field_matches_gradient_support(n_layers, scale):
    rf = receptive_field(n_layers, scale)
    size = 256
    torch.manual_seed(0)
    D = MultiscaleDiscriminator(2, base=4, n_layers=n_layers, num_D=scale + 1, norm="none").double()
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    out = D(x)[scale][-1]
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    support = (x.grad.abs().sum((0, 1)) > 0).nonzero()
    (y0, x0), (y1, x1) = support.min(0).values.tolist(), support.max(0).values.tolist()
    assert y0 > 0 and y1 < size - 1 and x0 > 0 and x1 < size - 1  # not clipped by the border
    assert (y1 - y0 + 1, x1 - x0 + 1) == (rf, rf)


def test_documented_receptive_fields():
    assert [receptive_field(3, i) for i in range(3)] == [70, 141, 283]
    assert [receptive_field(4, i) for i in range(2)] == [142, 285]


# ------------------------------------------------------------------------------------------- flow


def test_flow_convention_and_warp(tmp_path):
    rng = np.random.default_rng(0)
    import cv2

    tex = cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (0, 0), 2)
    prev = tex[:, 10:74]
    cur = tex[:, 8:72]  # content moves 2 px to the right: cur(x) = prev(x - 2)
    flow, frames = compute_flow([prev, cur], (96, 64))
    assert flow.shape == (2, 96, 64, 2) and np.all(flow[0] == 0)
    inner = flow[1, 16:-16, 16:-16]
    assert abs(np.median(inner[..., 0]) + 2) < 0.25 and abs(np.median(inner[..., 1])) < 0.25
    warped = L.warp(torch.from_numpy(prev).permute(2, 0, 1)[None].float(), torch.from_numpy(flow[1]).permute(2, 0, 1)[None])
    err = (warped[0].permute(1, 2, 0).numpy() - cur)[16:-16, 16:-16]
    assert np.abs(err).mean() < 3  # grey levels
    # cached file: layout checked, size checked
    from deep_puppets.mp4_writer import write_mp4

    video = tmp_path / "t.mp4"
    write_mp4(video, [tex[:64, i:i + 64] for i in range(0, 12, 2)], fps=10)
    path = write_flow_file(video, tmp_path / "flow.h5", (32, 32), preset="fast")
    arrays, attrs = h5io.read(path, FLOW)
    assert arrays["flow"].shape == (6, 32, 32, 2) and arrays["frames"].shape == (6, 32, 32, 3)
    assert np.all(arrays["box"] == [0, 0, 64, 64])  # no boxes: the whole frame
    assert LAYOUTS["flow"] is FLOW
    f, fl, fr = open_flow_file(path, (32, 32))
    assert len(fl) == 6
    f.close()
    with pytest.raises(InputError, match="training size"):
        open_flow_file(path, (64, 64))


# ------------------------------------------------------------------------------------------- settings


def test_settings_from_config():
    s = TrainSettings.from_config({"size": [64, 96], "gan_mode": "hinge"})
    assert s.size == (64, 96) and s.gan_mode == "hinge" and s.window == 3
    assert TrainSettings.from_config(None).size == (128, 128)
    assert json.loads(s.to_json())["size"] == [64, 96]
    assert s.fingerprint() == TrainSettings.from_config({"size": [64, 96], "gan_mode": "hinge", "iterations": 5}).fingerprint()
    assert s.fingerprint() != TrainSettings.from_config({"size": [64, 96]}).fingerprint()
    with pytest.raises(ConfigError, match="unknown key"):
        TrainSettings.from_config({"sise": 64})
    with pytest.raises(ConfigError, match="gan.size"):
        TrainSettings.from_config({"size": 100})  # not divisible by 2**gen_depth
    with pytest.raises(ConfigError, match="gan.di_num_D"):
        TrainSettings.from_config({"size": 64, "di_num_D": 3})  # coarsest scale too small
    with pytest.raises(ConfigError, match="gan.gan_mode"):
        TrainSettings.from_config({"gan_mode": "wgan"})


# ------------------------------------------------------------------------------------------- training


def test_tiny_run_learns():
    cond, real = synthetic(36, 64)
    flow, frames = compute_flow(real, (64, 64))
    s = TrainSettings(size=64, gen_base=8, gen_depth=4, gen_max_ch=64, d_base=8, d_max_ch=32, di_layers=2, di_num_D=2,
                      dv_layers=2, window=2, clip_len=2, lr_g=2e-3)
    train_idx, _ = split_frames(36, s.held_out_fraction)
    ds = ClipDataset(cond, frames, flow, train_idx, s.streams, s.size, s.window, s.clip_len)
    seed_everything(0)
    tr = Trainer(s, "cpu")
    fixed = ds.batch([0, 7, 14, 21])

    def l1():
        with torch.no_grad():
            return float(L.l1_loss(tr.generate_clip(torch.from_numpy(fixed["cond"])), torch.from_numpy(fixed["real"])))

    before = l1()
    for i in range(60):
        losses = tr.step(ds.batch(batch_items(i, 1, len(ds), s.seed)))
    after = l1()
    assert all(np.isfinite(v) for v in losses.values())
    assert after < 0.5 * before, (before, after)


def test_other_options_run(data32, tmp_path):
    """Hinge loss, fed-back frames, batch 2, no flow: a few iterations run and stay finite."""
    cond, frames, _ = data32
    s = TrainSettings(**{**TINY, "gan_mode": "hinge", "prev_frames": 2, "batch_size": 2, "iterations": 2, "eval_frames": 3})
    res = train(cond, frames, None, s, tmp_path / "run", tmp_path / "G.pt")
    assert res.iterations == 2 and all(np.isfinite(v) for v in res.last_losses.values())
    G, s2 = load_generator(tmp_path / "G.pt")
    assert s2.prev_frames == 2 and s2.lambda_warp == 0  # no flow: the warp term was switched off
    out = list(generate(G, cond, [20, 21, 22], s2))
    assert len(out) == 3 and out[0].shape == (32, 32, 3) and out[0].dtype == np.uint8


def test_clip_longer_than_any_run_of_valid_training_frames_is_one_config_error(data32, tmp_path):
    """Invalid frames cut the 20 training frames into runs of at most 4: clip_len 5 is named, before any iteration."""
    cond, frames, flow = data32
    valid = np.ones(len(frames), bool)
    valid[4::5] = False
    s = TrainSettings(**{**TINY, "clip_len": 5, "eval_frames": 0})
    with pytest.raises(ConfigError, match=r"'gan.clip_len' 5: no run of 5 consecutive training frames"):
        train(cond, frames, flow, s, tmp_path / "run", tmp_path / "G.pt", valid=valid)
    assert not (tmp_path / "G.pt").exists()
    train(cond, frames, flow, TrainSettings(**{**TINY, "clip_len": 4, "iterations": 1, "eval_frames": 0}), tmp_path / "run4", None, valid=valid)


def test_run_outputs(uninterrupted):
    out, res, _ = uninterrupted
    assert res.iterations == 12 and res.resumed_from == 0 and res.final_path == out / "G.pt"
    assert [p.name for p in list_checkpoints(out)] == ["iter_00000009.pt", "iter_00000012.pt"]  # keep 2
    for p in list_checkpoints(out):
        state = torch.load(p, weights_only=True)
        assert state["iteration"] == int(p.stem[5:])
        assert {"G", "D_I", "D_V", "opt_G", "opt_D", "scaler", "rng"} <= set(state)
    final = torch.load(out / "G.pt", weights_only=True)
    assert final["iteration"] == 12 and "D_I" not in final
    import pandas as pd

    df = pd.read_csv(out / "losses.csv")
    assert df["iteration"].tolist() == [3, 6, 9, 12] and np.isfinite(df["g_l1"]).all()
    assert (out / "losses.png").stat().st_size > 1000


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_exactly(uninterrupted, data32, tmp_path):
    ref_dir, _, _ = uninterrupted
    cond, frames, flow = data32
    s = TrainSettings(**{**TINY, "eval_frames": 0})
    first = train(cond, frames, flow, s, tmp_path, tmp_path / "G.pt", stop_after=7)  # "killed" after iteration 7
    assert first.final_path is None and not (tmp_path / "G.pt").exists()
    assert list_checkpoints(tmp_path)[-1].name == "iter_00000006.pt"
    again = train(cond, frames, flow, s, tmp_path, tmp_path / "G.pt")
    assert again.resumed_from == 6 and again.iterations == 12
    ref = torch.load(ref_dir / "checkpoints" / "iter_00000012.pt", weights_only=True)
    got = torch.load(tmp_path / "checkpoints" / "iter_00000012.pt", weights_only=True)
    for key in ("G", "D_I", "D_V"):
        assert _same_weights(ref[key], got[key]), key
    assert _same_weights(torch.load(ref_dir / "G.pt", weights_only=True)["G"], torch.load(tmp_path / "G.pt", weights_only=True)["G"])
    import pandas as pd

    a, b = pd.read_csv(ref_dir / "losses.csv"), pd.read_csv(tmp_path / "losses.csv")
    assert b["iteration"].tolist() == [3, 6, 9, 12]  # the row logged after the last checkpoint is gone
    cols = ["loss_g", "g_l1", "d_image", "d_video"]
    assert np.array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    # a changed architecture is refused, a changed iteration count is not
    with pytest.raises(ConfigError, match="gen_base"):
        train(cond, frames, flow, TrainSettings(**{**TINY, "eval_frames": 0, "gen_base": 16}), tmp_path, None)
    assert train(cond, frames, flow, TrainSettings(**{**TINY, "eval_frames": 0, "iterations": 13}), tmp_path, None).resumed_from == 12


KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from tests.test_gan import synthetic, TINY, Recorder
from deep_puppets.gan.flow import compute_flow
from deep_puppets.gan.settings import TrainSettings
from deep_puppets.gan.train import train
cond, real = synthetic(30, 32)
flow, frames = compute_flow(real, (32, 32))
slow = Recorder(frames, set(), delay=0.01)  # slower reads only: the arithmetic is unchanged
train(cond, slow, flow, TrainSettings(**{**TINY, "eval_frames": 0}), sys.argv[1], sys.argv[1] + "/G.pt")
"""


@pytest.mark.slow
def test_sigkilled_run_resumes(uninterrupted, data32, tmp_path):
    ref_dir, _, _ = uninterrupted
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not list_checkpoints(tmp_path) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert list_checkpoints(tmp_path), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "G.pt").exists()
    done = int(list_checkpoints(tmp_path)[-1].stem[5:])
    cond, frames, flow = data32
    res = train(cond, frames, flow, TrainSettings(**{**TINY, "eval_frames": 0}), tmp_path, tmp_path / "G.pt")
    assert 3 <= res.resumed_from == done < 12 and res.iterations == 12
    assert _same_weights(torch.load(ref_dir / "G.pt", weights_only=True)["G"], torch.load(tmp_path / "G.pt", weights_only=True)["G"])


def test_completed_run_trains_afresh_when_run_again(uninterrupted, data32, tmp_path):
    """Running a completed run folder again (what --forcerun does) trains all iterations again from 0 (not
    0 iterations returning the old weights); without a done mark (killed) it resumes, as above."""
    ref_dir, _, _ = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(ref_dir, run)
    res = train(*data32, TrainSettings(**{**TINY, "eval_frames": 0}), run, run / "G.pt")
    assert res.resumed_from == 0 and res.iterations == 12
    import pandas as pd

    assert pd.read_csv(run / "losses.csv")["iteration"].tolist() == [3, 6, 9, 12]  # no duplicate rows
    assert _same_weights(torch.load(ref_dir / "G.pt", weights_only=True)["G"], torch.load(run / "G.pt", weights_only=True)["G"])
    assert json.loads((run / "done.json").read_text())["iteration"] == 12


def test_checkpoint_of_other_inputs_is_never_resumed(data32, tmp_path):
    s = TrainSettings(**{**TINY, "eval_frames": 0})
    mine = {"conditioning": "a" * 64, "flow": "b" * 64}
    train(*data32, s, tmp_path, None, stop_after=3, inputs=mine)
    assert json.loads(load_checkpoint(list_checkpoints(tmp_path)[-1])["inputs"]) == mine
    with pytest.raises(InputError, match="other inputs .*conditioning sha256 aaaaaaaaaaaa vs now cccccccccccc"):
        train(*data32, s, tmp_path, None, inputs={**mine, "conditioning": "c" * 64})
    assert train(*data32, s, tmp_path, None, stop_after=6, inputs=mine).resumed_from == 3


def _data_region(path, member="data/") -> tuple[int, int]:
    """(offset, size) of the largest tensor record inside a torch zip file."""
    import struct
    import zipfile

    info = max((i for i in zipfile.ZipFile(path).infolist() if member in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + n + m, info.file_size


def _overwrite(path, offset: int, n: int, seed: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


def test_damaged_generator_is_one_input_error(uninterrupted, tmp_path):
    ref_dir, _, _ = uninterrupted
    g = tmp_path / "G.pt"
    # 64 KB overwritten in the middle
    g.write_bytes((ref_dir / "G.pt").read_bytes())
    _overwrite(g, g.stat().st_size // 2 - 32768, 65536)
    with pytest.raises(InputError, match=r"G\.pt: is damaged"):
        load_generator(g)
    # bytes flipped inside one tensor's data only: the zip still parses and torch.load returns huge weights; the
    # checksum over the tensors catches it
    g.write_bytes((ref_dir / "G.pt").read_bytes())
    off, size = _data_region(g)
    _overwrite(g, off + size // 2, 256)
    assert torch.load(g, weights_only=True)["format"]  # loads without complaint
    with pytest.raises(InputError, match=r"G\.pt: is damaged \(checksum mismatch\)"):
        load_generator(g)
    g.write_bytes(b"PK\x03\x04" + (ref_dir / "G.pt").read_bytes()[4:1000])  # truncated: a zip error, wrapped
    with pytest.raises(InputError, match=r"G\.pt: is damaged or not a generator file"):
        load_generator(g)


def test_damaged_checkpoint_is_skipped_and_resume_falls_back(uninterrupted, data32, tmp_path, caplog):
    ref_dir, _, _ = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(ref_dir, run)
    (run / "done.json").unlink(missing_ok=True)  # as if killed after the last checkpoint
    (run / "G.pt").unlink()
    newest, previous = list_checkpoints(run)[-1], list_checkpoints(run)[-2]
    off, size = _data_region(newest)
    _overwrite(newest, off + size // 2, 512)
    assert torch.load(newest, weights_only=True)["iteration"] == 12  # loads without complaint
    with pytest.raises(InputError, match="checksum mismatch"):
        load_checkpoint(newest)
    assert latest_checkpoint(run)[0] == previous
    other = tmp_path / "other.pt"
    other.write_bytes(previous.read_bytes())
    _overwrite(other, other.stat().st_size // 2 - 32768, 65536)
    with pytest.raises(InputError, match="is damaged"):
        load_checkpoint(other)
    with caplog.at_level("WARNING", "deep_puppets.gan"):
        res = train(*data32, TrainSettings(**{**TINY, "eval_frames": 0}), run, run / "G.pt")
    assert res.resumed_from == 9 and "skipping checkpoint" in caplog.text and "checksum mismatch" in caplog.text
    assert _same_weights(torch.load(ref_dir / "G.pt", weights_only=True)["G"], torch.load(run / "G.pt", weights_only=True)["G"])


LOCK_SCRIPT = """
import sys, time
from deep_puppets.gan.run_folder import LOCK_NAME, TrainingLock
with TrainingLock(sys.argv[1] + "/" + LOCK_NAME):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_trainer_of_a_folder_fails_at_once_naming_the_first(uninterrupted, data32, tmp_path):
    ref_dir, _, _ = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(ref_dir, run)
    (run / "done.json").unlink(missing_ok=True)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file() and p.name != ".train.lock"}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(run)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(BusyError) as e:
            train(*data32, TrainSettings(**{**TINY, "eval_frames": 0, "iterations": 15}), run, run / "G.pt")
        assert time.monotonic() - t0 < 2
    finally:
        holder.kill()
        holder.wait()
    msg = str(e.value)
    assert "\n" not in msg and f"pid {holder.pid} on " in msg and " since " in msg and str(run) in msg, msg
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file() and p.name != ".train.lock"}
    assert after == before
    # the holder is gone (killed): its lock went with it, and the folder trains (resumes) again
    assert train(*data32, TrainSettings(**{**TINY, "eval_frames": 0, "iterations": 15}), run, None).resumed_from == 12


def test_logs_are_appended_per_attempt(tmp_path):
    import logging

    from deep_puppets.workflow import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    path = tmp_path / "job.log"
    try:
        for attempt in ("first", "second"):
            setup_logging(str(path))
            logging.getLogger("deep_puppets").info("%s attempt", attempt)
    finally:
        for h in root.handlers:
            if h not in saved[0]:
                h.close()
        root.handlers[:], root.level = saved
    lines = path.read_text().splitlines()
    assert [ln.startswith("===== attempt ") and f"pid {os.getpid()}" in ln for ln in lines] == [True, False, True, False], lines
    assert lines[1].endswith("first attempt") and lines[3].endswith("second attempt")


def test_train_from_files_with_crops_and_invalid_frames(tmp_path):
    """Conditioning rendered on a crop (box) with some frames invalid; the flow file crops the video alike."""
    import h5py

    from deep_puppets.mp4_writer import write_mp4

    cond, real = synthetic(24, 32)
    big = np.zeros((24, 48, 64, 3), np.uint8)
    big[:, 8:40, 16:48] = real  # the real video is larger; the conditioning shows the box (16, 8, 48, 40)
    video = tmp_path / "target.mp4"
    write_mp4(video, big, fps=10, crf=10)
    boxes = np.tile(np.array([16, 8, 48, 40], np.float32), (24, 1))
    valid = np.ones(24, bool)
    valid[5] = False
    boxes[5] = np.nan
    with h5py.File(tmp_path / "cond.h5", "w") as f:
        for k, v in cond.items():
            f[k] = v
        f["valid"], f["box"] = valid, boxes
    write_flow_file(video, tmp_path / "flow.h5", 32, preset="ultrafast", boxes=boxes)
    arrays, _ = h5io.read(tmp_path / "flow.h5", FLOW)
    assert np.abs(arrays["frames"].astype(int) - real).mean() < 6  # the crop is the real frame (codec noise)
    s = TrainSettings(**{**TINY, "iterations": 2, "eval_frames": 2})
    res = train_from_files(tmp_path / "cond.h5", tmp_path / "flow.h5", s, tmp_path / "run", tmp_path / "G.pt")
    assert res.iterations == 2 and (tmp_path / "G.pt").exists()
    # which frames may be trained on: the first 16 (split) without frame 5 → clips of 2 not touching frame 5
    ds = ClipDataset(cond, real, None, np.delete(np.arange(16), 5), STREAMS, (32, 32), 2, 2)
    assert 5 not in ds.ends and 6 not in ds.ends and len(ds) == 13
    read: set = set()
    one_epoch = TrainSettings(**{**TINY, "iterations": 13, "eval_frames": 0, "checkpoint_every": 13})
    train(cond, Recorder(real, read), None, one_epoch, tmp_path / "run3", None, valid=valid)
    assert read == set(range(16)) - {5}  # every usable training frame, not the invalid one, nothing held out
    other = boxes.copy()
    other[:, 0] += 4
    with h5py.File(tmp_path / "cond2.h5", "w") as f:
        for k, v in cond.items():
            f[k] = v
        f["box"] = other
    with pytest.raises(InputError, match="other crop boxes"):
        train_from_files(tmp_path / "cond2.h5", tmp_path / "flow.h5", s, tmp_path / "run2", None)


# ------------------------------------------------------------------------------------------- synthesis


def test_synthesis_writes_video(uninterrupted, data32, tmp_path):
    ref_dir, _, _ = uninterrupted
    cond, frames, _ = data32
    from deep_puppets.video import probe_video

    n = synthesize_video(ref_dir / "G.pt", cond, tmp_path / "out.mp4", fps=10, frames=list(range(20, 30)), out_size=(48, 64))
    info = probe_video(tmp_path / "out.mp4")
    assert n == 10 and info.n_frames == 10 and (info.height, info.width) == (48, 64) and info.codec == "h264"
    G, s = load_generator(ref_dir / "G.pt")
    a = list(generate(G, cond, [20, 21], s))
    b = list(generate(G, cond, [20, 21], s, batch_size=1))
    assert np.abs(a[1].astype(int) - b[1]).max() <= 1  # batching changes float rounding at most
    sbs = list(side_by_side([a, [f[:16] for f in frames[20:22]], [np.zeros((32, 16), np.uint8)] * 5]))
    assert len(sbs) == 2 and sbs[0].shape == (32, 32 + 64 + 16, 3)
    assert np.array_equal(sbs[0][:, :32], a[0])


# ------------------------------------------------------------------------------------------- baselines


def test_photometric_error():
    rng = np.random.default_rng(1)
    img = rng.random((2, 8, 8, 3)).astype(np.float32) * 0.5
    assert np.all(photometric_error(img, img) == 0)
    assert photometric_error(img[0], img[0].copy()) == 0.0
    shifted = img + np.array([0.3, 0.4, 0.0], np.float32)  # distance 0.5 at every pixel
    assert np.allclose(photometric_error(shifted, img), [0.5, 0.5])
    u8 = (img * 255).astype(np.uint8)
    half = u8.copy()
    half[:, :4, :, 0] += 51  # 0.2 on half the pixels
    assert np.allclose(photometric_error(half, u8), 0.1, atol=1e-6)
    assert photometric_error_map(half, u8).shape == (2, 8, 8)


def test_nearest_neighbour_retrieval_and_mean_frame():
    rng = np.random.default_rng(2)
    n = 30
    feats = rng.normal(size=(n, 5)) * np.array([1, 100, 0.01, 1, 5])  # very different units
    train_idx, held = split_frames(n, 1 / 3)
    feats[held[3]] = feats[7]
    feats[held[5]] = feats[13]
    picks = nearest_neighbours(feats, train_idx, held)
    assert picks[3] == 7 and picks[5] == 13 and set(picks) <= set(train_idx)
    # standardised: 0.5 std off in the large-unit column is nearer than 1.5 std off in the small-unit one
    f2 = feats[:21].copy()
    f2[8] = f2[7] + np.array([1.5, 0, 0, 0, 0])  # column 0 has std ≈ 1
    f2[20] = f2[7] + np.array([0, 50, 0, 0, 0])  # column 1 has std ≈ 100
    assert nearest_neighbours(f2, np.arange(20), [20])[0] == 7
    assert np.argmin(((f2[:20] - f2[20]) ** 2).sum(1)) != 7  # the raw distance would not pick frame 7
    frames = np.stack([np.full((8, 8, 3), t, np.uint8) for t in range(n)])
    out = retrieval_baseline(frames, feats, train_idx, held[[3, 5]], (4, 4))
    assert out.shape == (2, 4, 4, 3) and out[0, 0, 0, 0] == 7 and out[1, 0, 0, 0] == 13
    assert np.all(mean_frame(frames, [1, 2, 6], (4, 4)) == 3)


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_preset_networks_build_run_and_see_the_whole_crop(preset):
    """The cpu and gpu presets' networks at their crop size: G maps the conditioning window to a frame of that size,
    and D_I's largest patch covers at least 3/4 of the crop (the seed report's head-detaches-from-body finding)."""
    from deep_puppets import config as dp_config
    from deep_puppets.gan.inference import build_generator
    from deep_puppets.gan.networks import receptive_fields
    from deep_puppets.gan.trainer import build_image_discriminator
    from deep_puppets.jobs.gan import gan_settings

    cfg = dp_config.prepare({"preset": preset})
    s = gan_settings(cfg["gan"], cfg["render"])
    assert s.size == (cfg["render"]["size"],) * 2
    assert max(receptive_fields(s.di_layers, s.di_num_D)) >= 0.75 * max(s.size)
    G, D = build_generator(s), build_image_discriminator(s)
    with torch.no_grad():
        y = G(torch.rand(1, s.in_channels, *s.size))
        preds = D(torch.rand(1, 3 * len(s.streams) + 3, *s.size))
    assert y.shape == (1, 3, *s.size) and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert len(preds) == s.di_num_D


def test_ema_generator_is_the_moving_average_of_g_and_is_what_is_saved(data32, tmp_path):
    """gan.ema_decay: after every G update G_ema = d·G_ema + (1 − d)·G with d = min(decay, (1 + i) / (10 + i)); the
    generator file holds the average (not G), and a killed run resumes it exactly."""
    cond, frames, flow = data32
    s = TrainSettings(**{**TINY, "eval_frames": 0, "ema_decay": 0.6})
    from deep_puppets.gan.data import ClipDataset, batch_items
    from deep_puppets.gan.trainer import Trainer, seed_everything

    train_idx, _ = split_frames(len(frames), s.held_out_fraction)
    ds = ClipDataset(cond, frames, flow, train_idx, s.streams, s.size, s.window, s.clip_len)
    seed_everything(s.seed)
    tr = Trainer(s, "cpu")
    assert tr.generator is tr.G_ema and not any(p.requires_grad for p in tr.G_ema.parameters())
    expected = [p.detach().clone() for p in tr.G.parameters()]  # the average starts at G's initial weights
    for i in range(4):
        tr.step(ds.batch(batch_items(i, s.batch_size, len(ds), s.seed)))
        d = min(0.6, (1 + i) / (10 + i))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, tr.G.parameters())]
    for e, got in zip(expected, tr.G_ema.parameters()):
        assert torch.allclose(e, got, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(tr.G.parameters(), tr.G_ema.parameters()))
    # the saved generator is the average
    from deep_puppets.gan.inference import load_generator, save_generator

    G, _ = load_generator(save_generator(tr, tmp_path / "ema.pt"))
    assert _same_weights(G.state_dict(), tr.G_ema.state_dict()) and not _same_weights(G.state_dict(), tr.G.state_dict())
    # off (0): G itself
    plain = Trainer(TrainSettings(**TINY), "cpu")  # the default: off
    assert plain.G_ema is None and plain.generator is plain.G
    # resumed exactly: killed after 7 iterations, then run to the end, against an uninterrupted run
    whole = train(cond, frames, flow, s, tmp_path / "whole", tmp_path / "whole.pt")
    train(cond, frames, flow, s, tmp_path / "killed", None, stop_after=7)
    again = train(cond, frames, flow, s, tmp_path / "killed", tmp_path / "again.pt")
    assert again.resumed_from == 6 and whole.iterations == again.iterations == 12
    assert _same_weights(torch.load(tmp_path / "whole.pt", weights_only=True)["G"], torch.load(tmp_path / "again.pt", weights_only=True)["G"])
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainSettings(**{**TINY, "ema_decay": 1.0})


def test_neural_texture_is_sampled_through_the_correspondence_learns_and_is_saved(data32, tmp_path):
    """gan.neural_texture: the texture is read at the current frame's correspondence (x, y), zero off the surface;
    training moves it (its own colour term falls) and the generator file carries it; without the correspondence
    stream the setting is refused, naming the key."""
    from deep_puppets.gan.inference import build_generator

    cond, frames, flow = data32
    s = TrainSettings(**{**TINY, "eval_frames": 0, "neural_texture": 4, "lr_texture": 0.02})
    x = stack_window(cond, s.streams, window_indices(10, s.window), s.size)
    c = s.correspondence_channel
    assert np.allclose(x[c:c + 3], cond["correspondence"][10].transpose(2, 0, 1) / 255.0)  # the newest frame's
    G = build_generator(s)
    on = cond["correspondence"][10].sum(-1) > 0
    ramp = torch.linspace(0, 1, 256).expand(256, 256)  # level 0's channel 0 = the texture's x coordinate
    with torch.no_grad():
        G.texture.levels[0][0, 0] = ramp
        G(torch.from_numpy(x)[None])
    feat = G.sampled[0, 0].numpy()
    assert (feat[~on] == 0).all() and (G.sampled[0, 1:] == 0).all()
    u = cond["correspondence"][10][..., 0][on] / 255.0  # sampled at the correspondence's x: the ramp gives it back
    assert np.abs(feat[on] - u).max() < 0.01

    res = train(cond, frames, flow, s, tmp_path / "run", tmp_path / "G.pt")
    import pandas as pd

    tex = pd.read_csv(tmp_path / "run" / "losses.csv")["g_texture"].to_numpy()
    assert res.iterations == 12 and np.isfinite(tex).all() and tex[-1] < 0.8 * tex[0], tex
    G2, s2 = load_generator(tmp_path / "G.pt")
    assert s2.neural_texture == 4 and max(float(t.detach().abs().max()) for t in G2.texture.levels) > 0.01
    with torch.no_grad():
        y = G2(torch.from_numpy(x)[None])
        for t in G2.texture.levels:
            t.zero_()
        y0 = G2(torch.from_numpy(x)[None])
    assert float((y - y0).abs().max()) > 1e-3  # the learned texture is used
    with pytest.raises(ConfigError, match="neural_texture.*correspondence"):
        TrainSettings(**{**TINY, "neural_texture": 4, "streams": ("colour", "gaze")})


@pytest.mark.parametrize("di_frames", ["all", "last"])
def test_di_frames_sets_which_clip_frames_the_image_discriminator_judges(data32, di_frames):
    """gan.di_frames: D_I sees every frame of each clip (B·K images per pass) or each clip's last frame only (B),
    real and generated alike; D_V still sees whole clips. Both train (finite losses, D_I's weights move)."""
    from deep_puppets.gan.data import ClipDataset, batch_items

    cond, frames, flow = data32
    s = TrainSettings(**{**TINY, "eval_frames": 0, "batch_size": 2, "clip_len": 3, "di_frames": di_frames})
    train_idx, _ = split_frames(len(frames), s.held_out_fraction)
    ds = ClipDataset(cond, frames, flow, train_idx, s.streams, s.size, s.window, s.clip_len)
    seed_everything(0)
    tr = Trainer(s, "cpu")
    seen = {"D_I": [], "D_V": []}
    for name in seen:
        getattr(tr, name).register_forward_hook(lambda m, args, out, name=name: seen[name].append(args[0].shape[0]))
    batch = ds.batch(batch_items(0, s.batch_size, len(ds), s.seed))
    before = [p.detach().clone() for p in tr.D_I.parameters()]
    losses = tr.step(batch)
    per_pass = 2 * 3 if di_frames == "all" else 2
    assert seen["D_I"] == [per_pass, per_pass, 2 * per_pass]  # G's fake, G's real (feature matching), D's real ⊕ fake
    assert seen["D_V"] == [2, 2, 4]
    d_i_input = tr._image_input(torch.zeros(6, 3 * len(s.streams), 32, 32), torch.from_numpy(batch["real"]))
    if di_frames == "last":  # the newest frame of each clip, beside its conditioning
        assert torch.equal(d_i_input[:, -3:], torch.from_numpy(batch["real"][:, -1]))
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.D_I.parameters()))
    with pytest.raises(ConfigError, match="di_frames"):
        TrainSettings(**{**TINY, "di_frames": "first"})


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bfloat16_trains_in_bfloat16_only_where_the_cpu_computes_it(data32, native, monkeypatch, caplog):
    """gan.cpu_bfloat16: on a CPU with bfloat16 units G and the discriminators compute in bfloat16 (weights,
    optimiser state, G's output layer and the losses stay float32; the step trains); on one without (emulated
    bfloat16 is ~100x slower) the setting is ignored with a log line and everything is float32. ``native=True``
    runs the real bfloat16 path only where this CPU has the units; the fallback runs everywhere."""
    from deep_puppets.gan import trainer as trainer_module
    from deep_puppets.gan.data import ClipDataset, batch_items

    if native and not trainer_module.cpu_has_bfloat16():
        pytest.skip("this CPU has no bfloat16 units (AVX512-BF16 or AMX)")
    if not native:
        monkeypatch.setattr(trainer_module, "cpu_has_bfloat16", lambda: False)
    cond, frames, flow = data32
    s = TrainSettings(**{**TINY, "eval_frames": 0, "cpu_bfloat16": True})
    assert trainer_module.autocast_dtype(TrainSettings(**TINY), torch.device("cpu")) is None  # off by default
    assert trainer_module.autocast_dtype(s, torch.device("cuda")) == torch.float16  # CUDA: amp's float16, as before
    train_idx, _ = split_frames(len(frames), s.held_out_fraction)
    ds = ClipDataset(cond, frames, flow, train_idx, s.streams, s.size, s.window, s.clip_len)
    seed_everything(0)
    with caplog.at_level("INFO", logger="deep_puppets.gan"):
        tr = Trainer(s, "cpu")
    assert ("no bfloat16 units" in caplog.text) is not native
    dtypes = {}
    tr.G.down[1].register_forward_hook(lambda m, a, out: dtypes.setdefault("G inner", out.dtype) and None)
    tr.D_I.register_forward_hook(lambda m, a, out: dtypes.setdefault("D_I", out[0][-1].dtype) and None)
    fakes = []
    tr.G.register_forward_hook(lambda m, a, out: fakes.append(out.detach()))
    before = [p.detach().clone() for p in tr.G.parameters()]
    losses = tr.step(ds.batch(batch_items(0, s.batch_size, len(ds), s.seed)))
    want = torch.bfloat16 if native else torch.float32
    assert dtypes == {"G inner": want, "D_I": want}
    assert fakes[0].dtype == torch.float32 and float(fakes[0].min()) >= 0 and float(fakes[0].max()) <= 1
    assert all(p.dtype == torch.float32 for p in [*tr.G.parameters(), *tr.D_I.parameters(), *tr.D_V.parameters()])
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.G.parameters()))


def test_eye_loss_is_the_l1_over_the_eyes_the_gaze_stream_draws(data32):
    """gan.lambda_eyes: an L1 over the gaze stream's drawn eyes widened by a margin (a closed eye, drawn as a line,
    still covers its lids), as a mean over those pixels; it enters G's loss (G's update changes with it) and needs
    the gaze stream."""
    gaze = torch.zeros(2, 3, 32, 32)
    gaze[0, :, 10, 12:15] = 1.0  # an eye closed to a line
    region = L.eye_region(gaze, 2)
    assert region.shape == (2, 1, 32, 32) and region[1].sum() == 0  # nothing drawn, no eyes
    rows, cols = np.nonzero(region[0, 0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 12, 10, 16)
    fake, real = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    m = region.bool().expand(-1, 3, -1, -1)
    assert torch.isclose(L.region_l1_loss(fake, real, region), (fake - real).abs()[m].mean())
    assert L.region_l1_loss(fake, real, torch.zeros_like(region)) == 0

    from deep_puppets.gan.data import ClipDataset, batch_items

    cond, frames, flow = data32
    updates = {}
    for weight in (0.0, 50.0):
        s = TrainSettings(**{**TINY, "eval_frames": 0, "lambda_eyes": weight})
        train_idx, _ = split_frames(len(frames), s.held_out_fraction)
        ds = ClipDataset(cond, frames, flow, train_idx, s.streams, s.size, s.window, s.clip_len)
        seed_everything(0)
        tr = Trainer(s, "cpu")
        losses = tr.step(ds.batch(batch_items(0, s.batch_size, len(ds), s.seed)))
        assert (losses["g_eyes"] > 0) == (weight > 0)  # the synthetic 'pupil' is drawn in every frame
        updates[weight] = torch.cat([p.detach().flatten() for p in tr.G.parameters()])
    assert not torch.equal(updates[0.0], updates[50.0])
    with pytest.raises(ConfigError, match="lambda_eyes.*gaze"):
        TrainSettings(**{**TINY, "lambda_eyes": 1.0, "streams": ("colour", "correspondence")})


def test_a_key_added_at_its_neutral_value_keeps_runs_and_checkpoints():
    """lambda_eyes came after generators had been trained: at 0 it leaves the run folder's fingerprint as it was
    (computed as before the key existed), and a checkpoint saved without it resumes; any other value is another
    training."""
    import hashlib

    from deep_puppets.gan.checkpoints import incompatible_settings

    s = TrainSettings(**TINY)
    before = {k: v for k, v in s.to_dict().items() if k not in TrainSettings.RUN_KEYS and k != "lambda_eyes"}
    assert s.fingerprint() == hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]
    eyes = TrainSettings(**{**TINY, "lambda_eyes": 10.0})
    assert eyes.fingerprint() != s.fingerprint()
    saved = {k: v for k, v in s.to_dict().items() if k != "lambda_eyes"}  # a record written before the key
    assert incompatible_settings(saved, s) == [] and incompatible_settings(saved, eyes) == ["lambda_eyes"]
