"""The HDF5 file format of the workflow: layouts, checked atomic writes, checked reads.

A :class:`Layout` lists the datasets (dtype, symbolic shape, meaning) and attributes of one kind of file.
:func:`write` checks the arrays against the layout and writes atomically (temporary file, then rename), so a
killed job never leaves a half-written file under the final name. :func:`read` checks a file against the
layout and names the file and the problem when it does not match.

**Integrity.** Every non-empty array dataset is written with HDF5's Fletcher-32 checksum filter (the
conditioning images, whose chunks are deflated by :mod:`deep_puppets.render`, carry the zlib stream's Adler-32
instead, which inflate verifies). :func:`open_file` returns a file whose datasets turn a checksum or inflate
failure into one :class:`InputError` naming the file and the dataset, on every read, lazy reads included.
A layout may also have a ``check`` of its values (finite, plausible ranges), run by :func:`read`.

Each layout is defined once, in the module of the stage that writes it (this module holds the ingest stage's
``landmarks``); :mod:`deep_puppets.layouts` lists them all and generates ``docs/hdf5.md`` from them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Dataset:
    dtype: str  # numpy dtype name ("float32", "bool", ...)
    shape: tuple  # ints are fixed sizes, strings are symbols shared across datasets ("T", "K")
    doc: str
    chunk_per: str | None = None  # symbol along which to chunk one item per chunk (e.g. "T" for frames)
    compress: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Layout:
    name: str
    version: int
    doc: str
    datasets: dict[str, Dataset]
    attrs: dict[str, str] = field(default_factory=dict)  # attribute name -> meaning (all required)
    # check(arrays, attrs) -> a problem ("dataset 'q' ...") or None; run by read() on the loaded values
    check: Callable[[dict, dict], str | None] | None = field(default=None, compare=False)


def _check_shapes(layout: Layout, arrays: dict[str, np.ndarray], where: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, spec in layout.datasets.items():
        if name not in arrays:
            if spec.optional:
                continue
            raise InputError(where, f"{layout.name} file lacks dataset '{name}'")
        shape = tuple(arrays[name].shape)
        if len(shape) != len(spec.shape):
            raise InputError(where, f"dataset '{name}' has shape {shape}, layout {layout.name} wants {spec.shape}")
        for got, want in zip(shape, spec.shape):
            if isinstance(want, int):
                if got != want:
                    raise InputError(where, f"dataset '{name}' has shape {shape}, layout wants {spec.shape}")
            elif sizes.setdefault(want, got) != got:
                raise InputError(where, f"dataset '{name}' has {want}={got}, other datasets have {want}={sizes[want]}")
    return sizes


def write(path, layout: Layout, arrays: dict[str, Any], attrs: dict[str, Any]) -> Path:
    """Write ``arrays`` and ``attrs`` to ``path`` following ``layout``; atomic."""
    path = Path(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    unknown = set(arrays) - set(layout.datasets)
    if unknown:
        raise ValueError(f"{path}: datasets {sorted(unknown)} are not in layout {layout.name}")
    missing_attrs = set(layout.attrs) - set(attrs)
    if missing_attrs:
        raise ValueError(f"{path}: attributes {sorted(missing_attrs)} required by layout {layout.name}")
    _check_shapes(layout, arrays, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["layout"] = layout.name
            f.attrs["layout_version"] = layout.version
            for k, v in attrs.items():
                f.attrs[k] = _attr_value(v)
            for name, arr in arrays.items():
                spec = layout.datasets[name]
                arr = arr.astype(spec.dtype, copy=False)
                kw: dict[str, Any] = {}
                if spec.chunk_per is not None and arr.ndim and arr.shape[0] > 0:
                    kw["chunks"] = (1,) + arr.shape[1:]
                if spec.compress:
                    kw["compression"] = "gzip"
                    kw["compression_opts"] = 4
                    kw["shuffle"] = True
                if arr.ndim and arr.size:  # (HDF5 filters need chunks; scalars and empty arrays have none)
                    kw["fletcher32"] = True
                f.create_dataset(name, data=arr, **kw)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _attr_value(v):
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)) and not (isinstance(v, (list, tuple)) and v and isinstance(v[0], (int, float))):
        from .files import json_text

        return json_text(v, sort_keys=True)
    return v


def _decode_attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


RECOMPUTE = "delete the file to have it recomputed"


def corrupted(path, dataset: str, reason: str = "checksum mismatch") -> InputError:
    """The one error of a workflow file whose stored data is damaged."""
    return InputError(path, f"dataset '{dataset.lstrip('/')}' is corrupted ({reason}): {RECOMPUTE}")


def implausible(path, problem: str) -> InputError:
    """The one error of a workflow file whose values fail a layout's check (``problem`` names the dataset)."""
    return InputError(path, f"{problem}: the file is damaged or was written by a faulty run; {RECOMPUTE}")


class CheckedDataset(h5py.Dataset):
    """An h5py dataset whose reads raise :func:`corrupted` (naming file and dataset) instead of HDF5's
    ``OSError`` when a chunk fails its checksum or does not inflate."""

    def __init__(self, ds: h5py.Dataset, path):
        super().__init__(ds.id)
        self._path = path

    def _corrupted(self, e: OSError) -> InputError:
        reason = "checksum mismatch" if self.fletcher32 or self.compression == "gzip" else f"unreadable: {e}"
        return corrupted(self._path, self.name, reason)

    def __getitem__(self, args, new_dtype=None):
        try:
            return super().__getitem__(args, new_dtype)
        except OSError as e:
            raise self._corrupted(e) from None

    def read_direct(self, dest, source_sel=None, dest_sel=None):
        try:
            return super().read_direct(dest, source_sel, dest_sel)
        except OSError as e:
            raise self._corrupted(e) from None

    def __array__(self, dtype=None, copy=None):
        try:
            return super().__array__(dtype, copy)
        except OSError as e:
            raise self._corrupted(e) from None


class CheckedFile(h5py.File):
    """An h5py file (read-only) whose datasets are :class:`CheckedDataset` s."""

    def __getitem__(self, name):
        obj = super().__getitem__(name)
        return CheckedDataset(obj, self.filename) if isinstance(obj, h5py.Dataset) else obj


def open_file(path) -> CheckedFile:
    """Open a user or workflow HDF5 file for reading; :class:`InputError` naming it when it cannot be, and
    when a dataset read from it is corrupted (:class:`CheckedDataset`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        return CheckedFile(path, "r")
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})") from None


def read(path, layout: Layout, load: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file of ``layout``; returns ``(arrays, attrs)``. Raises :class:`InputError` on mismatch."""
    path = Path(path)
    with open_file(path) as f:
        got = _decode_attr(f.attrs.get("layout"))
        if got != layout.name:
            raise InputError(path, f"is a '{got}' file, expected layout '{layout.name}'")
        version = _decode_attr(f.attrs.get("layout_version"))
        if version != layout.version:
            raise InputError(path, f"layout '{layout.name}' version {version}, this code reads {layout.version}")
        arrays = {}
        for name in layout.datasets:
            if name in f:
                arrays[name] = f[name][()] if load else f[name]
        attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
        _check_shapes(layout, {k: v for k, v in arrays.items()}, str(path))
        missing = set(layout.attrs) - set(attrs)
        if missing:
            raise InputError(path, f"lacks attributes {sorted(missing)} of layout '{layout.name}'")
    if load and layout.check is not None:
        problem = layout.check(arrays, attrs)
        if problem:
            raise implausible(path, problem)
    return arrays, attrs


# ------------------------------------------------------------------------- value checks for Layout.check


def nonfinite(name: str, a, where=None) -> str | None:
    """A problem when dataset ``name``'s values ``a`` hold NaN or ±inf (in the rows ``where`` only, when given)."""
    a = np.asarray(a)
    if where is not None:
        a = a[np.asarray(where, bool)]
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    row = int(np.argwhere(bad)[0][0]) if a.ndim else 0
    return f"dataset '{name}' holds non-finite values ({int(bad.sum())}, first in row {row})"


def out_of_range(name: str, a, lo: float, hi: float, where=None, what: str = "values") -> str | None:
    """A problem when finite values ``a`` of dataset ``name`` (rows ``where``) leave ``[lo, hi]``; NaN is not judged."""
    a = np.asarray(a, float)
    if where is not None:
        a = a[np.asarray(where, bool)]
    with np.errstate(invalid="ignore"):
        bad = (a < lo) | (a > hi)
    if not bad.any():
        return None
    return f"dataset '{name}' holds {what} outside [{lo:g}, {hi:g}] (e.g. {a[bad].flat[0]:.4g})"


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def _check_landmarks(arrays: dict, attrs: dict) -> str | None:
    """Valid frames: finite landmarks within two frame sizes of the frame (z within ten); scores in [0, 1]."""
    valid, lm = arrays["valid"], arrays["landmarks"]
    w, h = float(attrs["width"]), float(attrs["height"])
    side = max(w, h)
    return first_problem(
        nonfinite("landmarks", lm, valid),
        out_of_range("landmarks", lm[..., 0], -2 * side, w + 2 * side, valid, "x coordinates"),
        out_of_range("landmarks", lm[..., 1], -2 * side, h + 2 * side, valid, "y coordinates"),
        out_of_range("landmarks", lm[..., 2], -10 * side, 10 * side, valid, "depths"),
        nonfinite("score", arrays["score"]),
        out_of_range("score", arrays["score"], 0.0, 1.0),
        out_of_range("frame_index", arrays["frame_index"], 0, np.inf),
    )


LANDMARKS = Layout(
    name="landmarks",
    version=1,
    doc=(
        "Dense face landmarks of one video segment (MediaPipe FaceMesh, 478 points: 468 mesh + 10 iris). "
        "One row per frame of the segment, overlap included; frames without a face are kept with "
        "`valid = false` and NaN landmarks, never dropped."
    ),
    datasets={
        "frame_index": Dataset("int64", ("T",), "absolute frame index in the video"),
        "landmarks": Dataset(
            "float32", ("T", 478, 3), "x, y in pixels of the full frame; z relative depth scaled like x (pixels); NaN where invalid"
        ),
        "valid": Dataset("bool", ("T",), "a face was found and meshed in this frame"),
        "score": Dataset("float32", ("T",), "face presence score in [0, 1] (0 where invalid)"),
        "box": Dataset("float32", ("T", 4), "face region x0, y0, x1, y1 (pixels) the mesh ran on, before levelling it on the eyes; NaN where none"),
    },
    attrs={
        "video": "video name (config key)",
        "video_path": "path of the source video",
        "fps": "frames per second",
        "width": "frame width in pixels",
        "height": "frame height in pixels",
        "n_frames": "decoded frames in the whole video",
        "segment": "segment index",
        "start": "first frame of the segment (overlap included)",
        "stop": "one past the last frame of the segment",
        "core_start": "first frame this segment owns (the others belong to a neighbour)",
        "core_stop": "one past the last frame this segment owns",
        "detector": "JSON of the detector settings",
    },
    check=_check_landmarks,
)

