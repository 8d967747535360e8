"""Faults and bad input: killed jobs resume, bad files and config mistakes give errors naming them, nothing
half-written is left as a valid output, and user files are never unpickled or passed to a shell."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deep_puppets import config as dp_config
from deep_puppets.errors import ConfigError, DeepPuppetsError, InputError
from deep_puppets.mp4_writer import write_mp4
from deep_puppets.video import probe_video, read_frames

from .conftest import (
    REPO,
    TINY_FULL,
    copy_run,
    merged,
    planned_jobs,
    run_workflow,
    workflow_cmd,
)

TARGET = "demo_target"
PAIR = "demo_source__demo_target__pose"


# ------------------------------------------------------------------------------------------------ killed jobs


def _start(workdir, config, *args) -> subprocess.Popen:
    return subprocess.Popen(workflow_cmd(workdir, config, "--cores", "2", *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout=300, what="") -> None:
    """SIGKILL the whole process group of ``proc`` (Snakemake and its jobs) as soon as ``ready()``."""
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
            assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _unlock(workdir, config) -> None:
    """A SIGKILLed Snakemake leaves its lock behind (it cannot tell a dead run from a live one): the README
    says to run `snakemake --unlock` once before the next run."""
    r = run_workflow(workdir, config=config, timeout=300)
    assert r.returncode != 0 and "LockException" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    r = run_workflow(workdir, "--unlock", config=config, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_from_its_checkpoint(tiny_full_run, tmp_path):
    work = copy_run(tiny_full_run, tmp_path / "run")
    gan_dir = work / "results" / "videos" / TARGET / "gan"
    old_runs = set(gan_dir.glob("train-*"))
    # a new seed -> new training run directory; long enough to be killed between checkpoints
    config = merged(TINY_FULL, {"gan": {"seed": 7, "iterations": 20, "checkpoint_every": 5}})
    target = f"results/videos/{TARGET}/gan/generator.pt"  # training only: synthesis and reports are tested elsewhere
    proc = _start(work, config, target)

    def checkpoint_written():
        return [p for p in gan_dir.glob("train-*/checkpoints/iter_*.pt") if p.parents[1] not in old_runs]

    _kill_when(proc, checkpoint_written, what="the first checkpoint")
    assert not (gan_dir / "generator.pt").exists(), "a killed training left a generator behind"
    ckpts = sorted(checkpoint_written())
    done = int(re.search(r"iter_(\d+)", ckpts[-1].name).group(1))
    assert 0 < done < 20

    _unlock(work, config)
    r = run_workflow(work, "--cores", "2", target, config=config)  # plain run: the default profile reruns incomplete jobs
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    log = (work / "results" / "logs" / "gan_train" / f"{TARGET}.log").read_text()
    resumed = re.search(r"resuming from \S+iter_(\d+)\.pt \(iteration (\d+)\)", log)
    assert resumed, log[-3000:]
    assert int(resumed.group(2)) >= done
    assert "final generator" in log and "(iteration 20)" in log
    assert planned_jobs(work, config, target) == []


@pytest.mark.slow
def test_rendering_killed_with_sigkill_reruns_and_finishes(tiny_full_run, tmp_path):
    work = copy_run(tiny_full_run, tmp_path / "run")
    out = work / "results" / "pairs" / PAIR / "conditioning.h5"
    log = work / "results" / "logs" / "render_pair" / f"{PAIR}.log"
    t0 = time.time()
    proc = _start(work, TINY_FULL, "--forcerun", "render_pair")
    _kill_when(proc, lambda: log.exists() and log.stat().st_mtime >= t0, what="render_pair to start")
    assert not out.exists(), "a killed render left its output behind"

    _unlock(work, TINY_FULL)
    r = run_workflow(work, "--cores", "2")  # plain run: the default profile reruns incomplete jobs
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    import h5py

    with h5py.File(out, "r") as f:
        assert f["colour"].shape[0] == 40
    assert planned_jobs(work) == []


def _incomplete_markers(workdir) -> list[str]:
    """Output paths Snakemake has marked incomplete (.snakemake/incomplete/<base64 of the path>)."""
    import base64

    folder = Path(workdir) / ".snakemake" / "incomplete"
    return [base64.urlsafe_b64decode(p.name).decode() for p in folder.glob("*") if p.is_file() and p.name != "migration_underway"]


@pytest.mark.slow
def test_segment_job_killed_with_sigkill_reruns_and_leaves_valid_segments(tmp_path):
    """Jobs planned after the probe checkpoint: a kill leaves nothing under the final names, the next run
    reruns them, every segment file is complete and no incomplete marker is left on an existing output."""
    from deep_puppets import h5io
    from deep_puppets.fit_files import FIT_SEGMENT

    work = tmp_path / "run"
    work.mkdir()
    config = TINY_FULL
    target = f"results/videos/{TARGET}/track.h5"
    res = work / "results" / "videos" / TARGET
    logs = work / "results" / "logs" / "landmarks"
    proc = _start(work, config, target)
    _kill_when(proc, lambda: logs.exists() and any(logs.rglob("*.log")), what="a landmarks job to start")
    marked = _incomplete_markers(work)
    assert any("/landmarks/seg" in m for m in marked), marked  # Snakemake marked the running segment jobs
    assert not any((work / m).exists() for m in marked), "a killed job left a file under its final name"

    _unlock(work, config)
    r = run_workflow(work, "--cores", "2", target, config=config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    segments = sorted((res / "landmarks").glob("seg*.h5")) + sorted((res / "fit").glob("seg*.h5"))
    assert len(segments) == 4, segments
    for path in segments:
        h5io.read(path, h5io.LANDMARKS if path.parent.name == "landmarks" else FIT_SEGMENT)
    assert not [m for m in _incomplete_markers(work) if (work / m).exists()]
    assert not list(res.rglob(".*tmp*")), "temporary files left behind"
    assert planned_jobs(work, config, target) == []


# ------------------------------------------------------------------------------------------------ bad input

BAD = ("zero_byte", "not_video", "corrupt", "truncated")


def _noface_frames(n=40, size=160):
    y, x = np.mgrid[0:size, 0:size]
    return [np.dstack([(x + 3 * t) % 256, (y + 2 * t) % 256, np.full_like(x, 128)]).astype(np.uint8) for t in range(n)]


@pytest.fixture(scope="module")
def bad_input_run(tiny_full_run, tmp_path_factory):
    """One run (--keep-going) over bad files, a video with no face and one with faceless frames."""
    work = tmp_path_factory.mktemp("bad_input")
    data = work / "data"
    data.mkdir()
    good = tiny_full_run / "results" / "demo" / "demo_source.mp4"
    raw = good.read_bytes()
    (data / "zero_byte.mp4").write_bytes(b"")
    (data / "not_video.mp4").write_text("this is not a video\n" * 200)
    garbled = bytearray(raw)
    garbled[1024:] = np.random.default_rng(0).integers(0, 256, len(raw) - 1024, dtype=np.uint8).tobytes()
    (data / "corrupt.mp4").write_bytes(bytes(garbled))
    (data / "truncated.mp4").write_bytes(raw[:300])  # cut inside the header: no frame left
    write_mp4(data / "no_face.mp4", _noface_frames(), fps=25)
    frames = read_frames(good, 0, None, probe_video(good))
    gap = range(15, 21)
    for t in gap:  # six frames without a face in the middle of the clip
        frames[t] = np.full_like(frames[t], 90)
    write_mp4(data / "gappy.mp4", frames, fps=25)
    names = [*BAD, "no_face", "gappy"]
    config = merged(TINY_FULL, {"demo": {"enabled": False}, "videos": {n: f"data/{n}.mp4" for n in names}})
    r = run_workflow(work, "--cores", "2", "--keep-going", config=config)
    return work, r, set(gap)


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD)
def test_bad_video_file_fails_with_an_error_naming_it(bad_input_run, name):
    work, r, _ = bad_input_run
    out = r.stdout + r.stderr
    assert r.returncode != 0
    path = f"data/{name}.mp4"
    assert re.search(rf"Error in rule probe: \S*{re.escape(path)}: ", out), out[-5000:]
    assert f"{path}:" in (work / "results" / "logs" / "probe" / f"{name}.log").read_text()
    # nothing half-written is left as a valid output
    assert not (work / "results" / "videos" / name / "probe.json").exists()


@pytest.mark.slow
def test_video_without_any_face_fails_with_an_error_naming_it(bad_input_run):
    work, r, _ = bad_input_run
    out = r.stdout + r.stderr
    assert re.search(r"Error in rule landmarks_summary: no_face \(\S*data/no_face\.mp4\): \d+ frames with a face; at least 30 needed", out), out[-5000:]
    assert not (work / "results" / "videos" / "no_face" / "landmarks" / "summary.json").exists()
    assert not (work / "results" / "videos" / "no_face" / "track.h5").exists()


@pytest.mark.slow
def test_frames_without_a_face_are_flagged_bridged_and_counted(bad_input_run):
    work, r, gap = bad_input_run
    res = work / "results" / "videos" / "gappy"
    summary = json.loads((res / "landmarks" / "summary.json").read_text())
    invalid = set(summary["invalid_frames"])
    assert gap <= invalid and len(invalid) <= len(gap) + 4, invalid
    assert summary["valid_frames"] == 40 - len(invalid)
    tracking = json.loads((res / "diagnostics" / "tracking.json").read_text())
    assert tracking["frames"] == 40 and tracking["valid_frames"] == 40 - len(invalid)
    import h5py

    with h5py.File(res / "track.h5", "r") as f:  # flagged, and bridged: every frame has a camera and expression
        assert set(np.flatnonzero(~f["valid"][()]).tolist()) == invalid
        assert np.isfinite(f["camera"][()]).all() and np.isfinite(f["q"][()]).all()
        assert f["camera"].shape[0] == f["q"].shape[0] == 40
    assert "frames without a face" in (work / "results" / "logs" / "landmarks_summary" / "gappy.log").read_text()


# ------------------------------------------------------------------------------------------------ config mistakes


@pytest.mark.slow
@pytest.mark.parametrize("change,key", [
    ({"pairs": [{"source": "ghost", "target": "demo_target"}]}, "'pairs[0].source': unknown video 'ghost'"),
    ({"pairs": [{"source": "demo_source", "target": "demo_target", "mode": "dance"}]}, "'pairs[0].mode'"),
    ({"segments": {"length": -24}}, "'segments.length'"),
    ({"render": {"size": -64}}, "'render.size'"),
    ({"model": {"type": "ict", "path": "models/missing.npz"}}, "'model.path': 'models/missing.npz' does not exist"),
])
def test_config_mistake_is_one_line_naming_the_key_before_any_job(tmp_path, change, key):
    r = run_workflow(tmp_path, "--cores", "1", config=merged(TINY_FULL, change), timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith("config error:")]
    assert len(lines) == 1 and key in lines[0], out[-3000:]
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists(), "a job started"


@pytest.mark.slow
def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    config = merged(TINY_FULL, {"results": str(tmp_path / "a_file" / "results")})
    r = run_workflow(tmp_path, "--cores", "1", config=config, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith("config error:")]
    assert len(lines) == 1 and "'results'" in lines[0] and "a_file" in lines[0], out[-3000:]


# ------------------------------------------------------------------------------------------------ security


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_model_files_are_never_unpickled_by_default(tmp_path):
    from deep_puppets.models.registry import load_model

    marker = tmp_path / "unpickled"
    npz = tmp_path / "model.npz"
    from deep_puppets.models.ict import REQUIRED_KEYS

    arrays = {k: np.zeros(3) for k in REQUIRED_KEYS}
    arrays[REQUIRED_KEYS[0]] = np.array([_Payload(marker)], dtype=object)
    np.savez(npz, **arrays)
    pkl = tmp_path / "model.pkl"
    import pickle

    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    for path in (npz, pkl):
        with pytest.raises(DeepPuppetsError, match=r"pickle"):
            load_model({"type": "ict", "path": str(path)})
        assert not marker.exists(), path
    with pytest.raises(ConfigError, match="allow_pickle"):
        dp_config.prepare({"model": {"type": "ict", "path": str(npz), "allow_pickle": "yes"}})


def test_checkpoints_and_generators_load_with_weights_only(tmp_path):
    import torch

    from deep_puppets.gan.checkpoints import load_checkpoint
    from deep_puppets.gan.inference import load_generator

    marker = tmp_path / "unpickled"
    bad = tmp_path / "iter_00000010.pt"
    torch.save({"format": "x", "payload": _Payload(marker)}, bad)
    for load in (load_checkpoint, load_generator):
        with pytest.raises(InputError):
            load(bad)
        assert not marker.exists(), load.__name__
    for py in (REPO / "deep_puppets").rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", py.read_text()):
            assert "weights_only=True" in call, (py, call)


@pytest.mark.slow
def test_config_paths_never_reach_a_shell(tmp_path):
    # no rule runs a shell or Python `run:` block; no code runs a shell
    for smk in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]:
        assert not re.search(r"^\s*(shell|run):", smk.read_text(), re.M), smk
    for py in [*(REPO / "deep_puppets").rglob("*.py"), *(REPO / "workflow_scripts").glob("*.py")]:
        text = py.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", text), py
    # a video whose path is full of shell syntax is probed as a plain file name
    odd = tmp_path / "dir with space" / "$(touch PWNED); `touch PWNED2` 'x'.mp4"
    odd.parent.mkdir()
    write_mp4(odd, _noface_frames(40, 64), fps=25)  # >= the 30 frames a person model needs (probe-time check)
    config = merged(TINY_FULL, {"demo": {"enabled": False}, "videos": {"odd": str(odd)}})
    r = run_workflow(tmp_path, "--cores", "1", "results/videos/odd/probe.json", config=config, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert json.loads((tmp_path / "results" / "videos" / "odd" / "probe.json").read_text())["n_frames"] == 40
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


# ------------------------------------------------------------------------------------------------ disk full


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to the last byte: every write there fails with a real ENOSPC (needs root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs (needs root)")
    try:
        with open(mnt / "filler", "wb") as f, pytest.raises(OSError, match="No space left"):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


_WRITERS = {
    "hdf5": "import h5py\nwith h5py.File(out, 'w') as f:\n    f['x'] = np.zeros(100000)",
    "torch": "import torch\ntorch.save({'w': torch.rand(100000)}, out)",
    "mp4": "from deep_puppets.mp4_writer import write_mp4\n"
           "write_mp4(out, (np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8) for _ in range(40)), 25)",
    "json": "from deep_puppets.files import write_json\nwrite_json(out, {'a': list(range(10000))})",
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", sorted(_WRITERS))
def test_disk_full_is_one_line_naming_the_output(full_disk, tmp_path, writer):
    out = full_disk / f"out.{writer}"
    src = tmp_path / "input.bin"
    src.write_bytes(b"x" * 3_000_000)
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, types\nimport numpy as np\nfrom deep_puppets.workflow import run_script\n"
        f"out = {str(out)!r}\n"
        "def main(sm):\n" + "".join(f"    {line}\n" for line in _WRITERS[writer].splitlines()) +
        f"sm = types.SimpleNamespace(rule='job', log=[], threads=1, output=[out], input=[{str(src)!r}])\n"
        "run_script(sm, main)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in r.stderr.splitlines() if line.startswith("Error in rule job:")]
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert len(lines) == 1, r.stderr[-3000:]
    assert re.fullmatch(rf"Error in rule job: no space left on device while writing {re.escape(str(out))} \(needs ~3 MB; 0\.\d MB free\)", lines[0]), lines[0]


@pytest.mark.slow
def test_figures_and_tables_on_a_full_disk_leave_no_file(full_disk):
    """The diagnostics and evaluation figures are written atomically: a failed write leaves nothing behind."""
    import pandas as pd

    from deep_puppets import diagnostics as dg
    from deep_puppets import evaluation as ev

    t = np.arange(30.0)
    df = pd.DataFrame({"frame": t, "method": "gan", "region": "frame", "e_col": t / 100})
    curves = np.random.default_rng(0).random((30, 7))
    writers = {
        "e_col.png": lambda p: ev.e_col_plot(df, p, "title"),
        "camera.png": lambda p: dg.camera_smoothing_figure(curves, curves, 25.0, p, "title"),
        "tracking.png": lambda p: dg.tracking_figure(t / 100, t, t, None, 25.0, p, "title"),
    }
    for name, write in writers.items():
        with pytest.raises(OSError):
            write(full_disk / name)
        assert sorted(p.name for p in full_disk.iterdir()) == ["filler"], name
