"""HDF5 layouts: schema checks on write and read, atomic writes, generated docs kept current."""

import h5py
import numpy as np
import pytest

from deep_puppets import h5io
from deep_puppets.errors import InputError
from deep_puppets.layouts import markdown

from .conftest import REPO


def landmark_arrays(t=5):
    return {
        "frame_index": np.arange(t),
        "landmarks": np.zeros((t, 478, 3)),
        "valid": np.ones(t, bool),
        "score": np.ones(t),
        "box": np.zeros((t, 4)),
    }


ATTRS = dict(video="v", video_path="v.mp4", fps=25.0, width=64, height=48, n_frames=5, segment=0, start=0, stop=5, core_start=0, core_stop=5, detector={"a": 1})


def test_roundtrip_and_dtypes(tmp_path):
    p = h5io.write(tmp_path / "x.h5", h5io.LANDMARKS, landmark_arrays(), ATTRS)
    arrays, attrs = h5io.read(p, h5io.LANDMARKS)
    assert arrays["landmarks"].dtype == np.float32 and arrays["valid"].dtype == bool
    assert attrs["video"] == "v" and attrs["n_frames"] == 5 and attrs["detector"] == '{"a": 1}'
    assert not list(tmp_path.glob(".*tmp*"))


def test_rewrites_are_byte_identical(tmp_path):
    """No object timestamps: the same arrays written twice give the same file bytes (checksums of reruns agree)."""
    import time

    a = h5io.write(tmp_path / "a.h5", h5io.LANDMARKS, landmark_arrays(), ATTRS)
    time.sleep(1.1)  # HDF5 timestamps count seconds: a later second would show in the bytes
    b = h5io.write(tmp_path / "b.h5", h5io.LANDMARKS, landmark_arrays(), ATTRS)
    assert a.read_bytes() == b.read_bytes()


def test_write_rejects_inconsistent_shapes(tmp_path):
    a = landmark_arrays()
    a["valid"] = np.ones(4, bool)
    with pytest.raises(InputError, match="T=4"):
        h5io.write(tmp_path / "x.h5", h5io.LANDMARKS, a, ATTRS)
    a = landmark_arrays()
    a["landmarks"] = np.zeros((5, 468, 3))
    with pytest.raises(InputError, match="landmarks"):
        h5io.write(tmp_path / "x.h5", h5io.LANDMARKS, a, ATTRS)
    assert not list(tmp_path.iterdir())


def test_read_names_file_and_problem(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layout"] = "something_else"
    with pytest.raises(InputError, match="other.h5.*'something_else'"):
        h5io.read(p, h5io.LANDMARKS)
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="garbage.h5.*not a readable HDF5"):
        h5io.read(bad, h5io.LANDMARKS)


def test_docs_are_generated_from_the_layouts():
    assert (REPO / "docs" / "hdf5.md").read_text().strip() == markdown().strip(), (
        "docs/hdf5.md is stale: run .venv/bin/python -m deep_puppets.layouts > docs/hdf5.md"
    )
