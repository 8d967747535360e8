"""Small file helpers shared by the stages."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path
