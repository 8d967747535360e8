"""HDF5 layouts of every file the workflow writes, defined once, here.

A :class:`Layout` lists the datasets (dtype, symbolic shape, meaning) and attributes of one kind of file.
:func:`write` checks the arrays against the layout and writes atomically (temporary file, then rename), so a
killed job never leaves a half-written file under the final name. :func:`read` checks a file against the
layout and names the file and the problem when it does not match. ``docs/hdf5.md`` is generated from these
layouts by :func:`markdown` (a test keeps it current).

Layouts of later stages register themselves with :func:`register` from their own modules; this module holds
the ones of the ingest stages.
"""

from __future__ import annotations

import os
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


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


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
        import json

        return json.dumps(v, sort_keys=True)
    return v


def _decode_attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def open_file(path) -> h5py.File:
    """Open a user or workflow HDF5 file for reading; :class:`InputError` naming it when it cannot be."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        return h5py.File(path, "r")
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
    return arrays, attrs


def markdown() -> str:
    """Documentation of every registered layout (written to docs/hdf5.md)."""
    lines = [
        "# HDF5 layouts",
        "",
        "Generated from `deep_puppets/h5io.py` and the layouts registered by the stage modules "
        "(`python -m deep_puppets.h5io > docs/hdf5.md`). Every file carries the attributes `layout` and "
        "`layout_version`. Shapes use symbols shared across a file's datasets (T = frames).",
        "",
    ]
    for layout in sorted(LAYOUTS.values(), key=lambda l: l.name):
        lines += [f"## `{layout.name}` (version {layout.version})", "", layout.doc, "", "| dataset | dtype | shape | meaning |", "|---|---|---|---|"]
        for name, d in layout.datasets.items():
            shape = "(" + ", ".join(str(s) for s in d.shape) + ")"
            opt = " (optional)" if d.optional else ""
            lines.append(f"| `{name}` | {d.dtype} | {shape} | {d.doc}{opt} |")
        if layout.attrs:
            lines += ["", "| attribute | meaning |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in layout.attrs.items()]
        lines.append("")
    return "\n".join(lines)


def load_all_layouts() -> None:
    """Import every stage module so that its layouts are registered."""
    import importlib
    import pkgutil

    import deep_puppets

    for mod in pkgutil.iter_modules(deep_puppets.__path__):
        if mod.name not in ("__main__",):
            importlib.import_module(f"deep_puppets.{mod.name}")


LANDMARKS = register(
    Layout(
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
    )
)


if __name__ == "__main__":
    # Run as a script this file is a second module object; use the package's registry.
    from deep_puppets import h5io as _registry

    _registry.load_all_layouts()
    print(_registry.markdown())
