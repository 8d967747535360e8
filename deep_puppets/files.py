"""Small file helpers shared by the stages."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator


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


def write_json(path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path
