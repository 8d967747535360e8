"""Corrupted intermediates never pass unnoticed (issue 11, item 2).

Bytes are overwritten *inside* one dataset's stored data (found with h5py's chunk index), header intact, as a
failing disk or a bad copy would do. Every reader then ends with one line naming the file and the dataset
(HDF5 Fletcher-32 checksums; the deflated conditioning images carry zlib's Adler-32), and implausible values
written with valid checksums (a faulty run) are refused with the file and dataset named. JSON is strict.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from deep_puppets import h5io
from deep_puppets.errors import InputError

from .conftest import copy_run, run_workflow

SOURCE, TARGET, PAIR = "demo_source", "demo_target", "demo_source__demo_target__pose"


def stored_extent(path, dataset: str, chunk: int = 0) -> tuple[int, int]:
    """(byte offset, size) in ``path`` of chunk ``chunk`` of ``dataset`` (its whole data when contiguous)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        if ds.chunks is None:
            return ds.id.get_offset(), ds.id.get_storage_size()
        info = ds.id.get_chunk_info(chunk)
        return info.byte_offset, info.size


def n_chunks(path, dataset: str) -> int:
    with h5py.File(path, "r") as f:
        return f[dataset].id.get_num_chunks()


def corrupt(path, dataset: str, n_bytes: int = 800, chunks=(0,), seed: int = 0) -> None:
    """Overwrite up to ``n_bytes`` bytes in the middle of each of ``chunks`` of ``dataset``, in place (every
    overwritten byte changes)."""
    rng = np.random.default_rng(seed)
    extents = [stored_extent(path, dataset, c) for c in chunks]
    with open(path, "r+b") as fh:
        for offset, size in extents:
            n = min(n_bytes, size // 2)
            start = offset + (size - n) // 2
            fh.seek(start)
            old = np.frombuffer(fh.read(n), np.uint8)
            fh.seek(start)
            fh.write((old ^ rng.integers(1, 256, n, dtype=np.uint8)).tobytes())


def assert_names(err: InputError, path, dataset: str, what: str = "is corrupted") -> None:
    msg = str(err)
    assert err.path == str(path) and f"dataset '{dataset}' {what}" in msg and "\n" not in msg, msg


# ------------------------------------------------------------------------------------------- checksums


def _conditioning(tmp_path, encoder: str) -> Path:
    from deep_puppets.render.conditioning_file import ConditioningWriter, Frame

    rng = np.random.default_rng(1)
    path = tmp_path / f"cond-{encoder}.h5"
    attrs = {"renderer": "test", "settings": "{}", "source": "test", "framing": "null"}
    with ConditioningWriter(path, 4, (48, 40), attrs, encoder=encoder) as w:
        for i in range(4):
            img = np.zeros((40, 48, 3), np.uint8)
            img[8:32, 10:38] = rng.integers(40, 200, (24, 28, 3))  # a textured face on black, as rendered
            w.append(Frame(img, img // 2, img // 3, True), i, [0, 0, 48, 40])
    return path


@pytest.mark.parametrize("encoder", ["isal", "zlib"])
def test_flipped_byte_in_a_deflated_colour_chunk_is_detected(tmp_path, encoder):
    """The conditioning images are deflated by the renderer and stored with write_direct_chunk (no Fletcher-32):
    zlib's Adler-32, checked by inflate, catches a flipped byte anywhere in the chunk; the rare flip that
    escapes it (unused bits of the deflate stream) leaves the decoded image unchanged. Never a wrong image."""
    from deep_puppets.render.conditioning_file import iter_stream, open_conditioning

    path = _conditioning(tmp_path, encoder)
    good = list(iter_stream(path, "colour"))
    offset, size = stored_extent(path, "colour", 2)
    original = path.read_bytes()
    detected = 0
    for k in range(0, size, max(1, size // 150)):
        data = bytearray(original)
        data[offset + k] ^= 0x10
        path.write_bytes(bytes(data))
        try:
            frames = list(iter_stream(path, "colour"))
        except InputError as e:
            assert_names(e, path, "colour")
            detected += 1
        else:
            assert all(np.array_equal(a, b) for a, b in zip(frames, good))
    assert detected >= 0.9 * len(range(0, size, max(1, size // 150)))
    path.write_bytes(original)  # the small datasets carry Fletcher-32
    open_conditioning(path)[0].close()
    corrupt(path, "box", 8)
    with pytest.raises(InputError) as e:
        open_conditioning(path)
    assert_names(e.value, path, "box")


def _readers():
    """(kind, files of the tiny run to copy, the file to corrupt, dataset, consumer reading the copies)."""
    from deep_puppets.fit_files import read_fit_identity
    from deep_puppets.gan.flow import open_flow_file
    from deep_puppets.jobs import fit as fit_jobs
    from deep_puppets.landmark_sets import read_video_landmarks
    from deep_puppets.models.person import load_person_model
    from deep_puppets.render.conditioning_file import iter_stream
    from deep_puppets.texture.texture_file import TEXTURE
    from deep_puppets.tracks import read_track
    from deep_puppets.transfer_files import read_transfer

    v = f"videos/{TARGET}"

    def flow_frames(p):
        f, flow, frames = open_flow_file(p[0])
        with f:
            return [np.asarray(flow[t]) for t in range(len(flow))]

    return [
        ("landmarks", [f"{v}/landmarks/seg000.h5", f"{v}/landmarks/seg001.h5"], 1, "landmarks", read_video_landmarks),
        ("fit segment", [f"{v}/fit/seg000.h5", f"{v}/fit/seg001.h5"], 0, "q", lambda p: fit_jobs.track(fit_files=p, out=p[0].parent / "merged.h5")),
        ("fit identity", [f"{v}/fit/identity.h5"], 0, "camera", lambda p: read_fit_identity(p[0])),
        ("track", [f"{v}/track.h5"], 0, "q", lambda p: read_track(p[0])),
        ("texture", [f"{v}/texture.h5"], 0, "albedo", lambda p: h5io.read(p[0], TEXTURE)),
        ("person model", [f"{v}/model.h5"], 0, "exp_basis", lambda p: load_person_model(p[0])),
        ("transfer", [f"pairs/{PAIR}/transfer.h5"], 0, "camera", lambda p: read_transfer(p[0])),
        ("flow", [f"{v}/gan/flow.h5"], 0, "flow", flow_frames),
        ("flow box", [f"{v}/gan/flow.h5"], 0, "box", flow_frames),
        ("conditioning", [f"pairs/{PAIR}/conditioning.h5"], 0, "gaze", lambda p: list(iter_stream(p[0], "gaze"))),
    ]


@pytest.mark.slow
def test_every_intermediate_with_damaged_data_fails_naming_file_and_dataset(tiny_full_run, tmp_path):
    """800 random bytes inside one dataset of each kind of intermediate of a real (tiny) run: its consumer
    raises one InputError naming the file and the dataset; the undamaged copy reads fine."""
    for kind, rels, which, dataset, consume in _readers():
        work = tmp_path / kind.replace(" ", "_")
        paths = []
        for rel in rels:
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            paths.append(Path(shutil.copy2(tiny_full_run / "results" / rel, dst)))
        consume(paths)  # intact: reads fine
        merged = paths[0].parent / "merged.h5"  # (the fit segments' consumer writes a track)
        merged.unlink(missing_ok=True)
        chunks = range(n_chunks(paths[which], dataset)) if kind in ("flow", "conditioning") else (0,)
        corrupt(paths[which], dataset, chunks=[c for c in chunks if c % 7 == 3] or [0])
        with pytest.raises(InputError) as e:
            consume(paths)
        assert_names(e.value, paths[which], dataset)
        assert not merged.exists()


@pytest.mark.slow
def test_workflow_stops_on_corrupted_intermediates(tiny_full_run, tmp_path):
    """The issue's reproduction: 800 random bytes inside `q` of a track.h5 (header intact) used to exit 0 with
    q ≈ 1e307 and faceless renders. Now every consumer of the damaged track fails with one line naming it; and
    damaged conditioning images stop the GAN training of the other video. Exit code non-zero."""
    work = copy_run(tiny_full_run, tmp_path / "run")
    track = work / f"results/videos/{SOURCE}/track.h5"
    cond = work / f"results/videos/{TARGET}/conditioning.h5"
    corrupt(track, "q")
    corrupt(cond, "colour", 64, chunks=range(n_chunks(cond, "colour")))  # every frame: training reads some
    r = run_workflow(work, "--cores", "2", "--keep-going", timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-4000:]
    assert f"videos/{SOURCE}/track.h5: dataset 'q' is corrupted (checksum mismatch): delete the file" in out, out[-4000:]
    assert f"videos/{TARGET}/conditioning.h5: dataset 'colour' is corrupted (checksum mismatch)" in out, out[-4000:]
    assert not list(work.glob(f"results/pairs/{PAIR}/.*.tmp*"))


# ------------------------------------------------------------------------------------------ implausible values


def _rewrite(src, dst, layout, change):
    arrays, attrs = h5io.read(src, layout)
    change(arrays)
    h5io.write(dst, layout, arrays, {k: attrs[k] for k in layout.attrs})  # fresh, valid checksums
    return dst


def _set(name, index, value):
    def change(arrays):
        arrays[name] = np.array(arrays[name], dtype=float if arrays[name].dtype.kind == "f" else arrays[name].dtype)
        arrays[name][index] = value

    return change


@pytest.mark.slow
def test_implausible_values_are_refused_naming_file_and_dataset(tiny_full_run, tmp_path):
    """Non-finite or absurd parameters written with valid checksums (a faulty run, or a file from elsewhere)."""
    from deep_puppets.models.person import PERSON_MODEL
    from deep_puppets.texture.texture_file import TEXTURE
    from deep_puppets.tracks import TRACK

    res = tiny_full_run / f"results/videos/{TARGET}"
    valid_frame = int(np.flatnonzero(h5io.read(res / "landmarks/seg000.h5", h5io.LANDMARKS)[0]["valid"])[0])
    cases = [
        ("track.h5", TRACK, "q", _set("q", (3, 0), 1e307), "holds values outside"),
        ("track.h5", TRACK, "q", _set("q", (5, 1), np.nan), "holds non-finite values"),
        ("track.h5", TRACK, "camera", _set("camera", (4, 6), -2.0), "holds scales (column 6) outside"),
        ("track.h5", TRACK, "camera", _set("camera", (4, 3), np.inf), "holds non-finite values"),
        ("landmarks/seg000.h5", h5io.LANDMARKS, "landmarks", _set("landmarks", (valid_frame, 7, 0), 1e9), "holds x coordinates outside"),
        ("landmarks/seg000.h5", h5io.LANDMARKS, "landmarks", _set("landmarks", (valid_frame, 7, 1), np.nan), "holds non-finite values"),
        ("texture.h5", TEXTURE, "albedo", _set("albedo", (0, 0), 1e30), "holds values outside"),
        ("texture.h5", TEXTURE, "sh", _set("sh", (0, 0), np.nan), "holds non-finite values"),
        ("model.h5", PERSON_MODEL, "exp_basis", _set("exp_basis", (0, 0, 0), np.inf), "holds non-finite values"),
    ]
    for i, (rel, layout, dataset, change, what) in enumerate(cases):
        bad = _rewrite(res / rel, tmp_path / f"{i}-{Path(rel).name}", layout, change)
        with pytest.raises(InputError) as e:
            h5io.read(bad, layout)
        assert_names(e.value, bad, dataset, what)
    for rel, layout in [("track.h5", TRACK), ("landmarks/seg000.h5", h5io.LANDMARKS), ("texture.h5", TEXTURE), ("model.h5", PERSON_MODEL)]:
        h5io.read(res / rel, layout)  # the real files pass


# ------------------------------------------------------------------------------------------------ JSON


def test_json_outputs_are_strict(tmp_path):
    """NaN and ±inf become null (Python's json would write NaN/Infinity, which is not JSON)."""
    from deep_puppets.files import write_json

    path = write_json(tmp_path / "s.json", {"a": float("nan"), "b": np.float32(np.inf), "c": [1.5, -np.inf, np.int64(3)],
                                            "d": {"e": np.array([np.nan, 2.0])}, "f": np.bool_(True)})

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=reject)
    assert data == {"a": None, "b": None, "c": [1.5, None, 3], "d": {"e": [None, 2.0]}, "f": True}


@pytest.mark.slow
def test_hdf5_datasets_carry_checksums(tiny_full_run):
    """Every non-empty dataset of every intermediate of the run has Fletcher-32, except the deflated
    conditioning images (zlib's Adler-32)."""
    images = {"colour", "correspondence", "gaze"}
    files = list((tiny_full_run / "results").rglob("*.h5"))
    assert len(files) >= 15
    for p in files:
        with h5py.File(p, "r") as f:
            for name, ds in f.items():
                if ds.size and ds.shape:
                    assert ds.fletcher32 or (name in images and ds.compression == "gzip"), f"{p}: {name}"
