"""Small file helpers shared by the stages."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; it is renamed over ``path`` only when the block
    ends without an exception and removed otherwise, so a killed or failed job never leaves a half-written
    file under the final name. The temporary name keeps the suffix (``.x.png.tmp123.png``) so writers that
    choose the format by the suffix (matplotlib, pandas) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def finite_or_null(data):
    """``data`` (dicts, lists, tuples, numbers, numpy scalars and arrays) with every NaN or ±inf replaced by
    None, so that it is strict JSON (JSON has no NaN or Infinity; Python's json writes them unless told not to)."""
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(v) for v in data]
    if isinstance(data, np.ndarray):
        return finite_or_null(data.tolist())
    if isinstance(data, (bool, np.bool_)):
        return bool(data)
    if isinstance(data, np.integer):
        return int(data)
    if isinstance(data, (float, np.floating)):
        return float(data) if math.isfinite(data) else None
    return data


def json_text(data, **kw) -> str:
    """Strict JSON of ``data``: non-finite numbers become null (:func:`finite_or_null`), never NaN/Infinity."""
    return json.dumps(finite_or_null(data), allow_nan=False, **kw)


def write_json(path, data: dict) -> Path:
    """Write ``data`` as indented strict JSON (:func:`json_text`), atomically (temporary file, then rename):
    never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json_text(data, indent=1))
    os.replace(tmp, path)
    return path


def read_json(path, what: str = "JSON file") -> dict:
    """The JSON object in ``path``; a missing or unreadable file is an :class:`~deep_puppets.errors.InputError`
    naming it as ``what`` (one line, no traceback)."""
    from .errors import InputError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"is missing (the {what}): run the workflow first") from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"is not a readable {what} ({e})") from None
