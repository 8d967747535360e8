"""Are conditioning files byte-reproducible? Writes the same animation in separate processes per encoder/level.

Each run is a fresh Python process that renders the benchmark animation of ``benchmarks/render.py``
(``--frames`` frames at 256²) and streams it into a ``conditioning`` HDF5 file with one deflate encoder and
level; the figure is the number of distinct file checksums among ``--runs`` runs (1 = reproducible). ISA-L's
levels ≥ 1 are why the default is its level 0 (see ``deep_puppets.render.conditioning_file.DEFAULT_LEVELS``).

Usage: ``python benchmarks/render_reproducibility.py [--runs 8] [--frames 1008] [--settings isal:0 isal:1 zlib:1]``.
Prints one line per setting, then as the last line one JSON object ``{setting: {runs, distinct, ...}}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import sys
sys.path[:0] = [{repo!r}, {bench!r}]
from render import animation
from deep_puppets.render.gl import Renderer
from deep_puppets.render.sequence import write_conditioning
a = animation({frames})
r = Renderer(a["triangles"], a["mean"], size=(256, 256), subdivisions=1)
write_conditioning({out!r}, r, a["vertices"], a["boxes"], sh=a["sh"], eye_points=a["vertices"], encoder={encoder!r}, level={level})
"""


def run_once(encoder: str, level: int, frames: int, out: Path) -> str:
    code = _CHILD.format(repo=str(REPO), bench=str(REPO / "benchmarks"), frames=frames, level=level, out=str(out), encoder=encoder)
    subprocess.run([sys.executable, "-c", code], check=True)
    return hashlib.md5(out.read_bytes()).hexdigest()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1008)
    ap.add_argument("--settings", nargs="+", default=["isal:0", "isal:1", "zlib:1"], help="encoder:level")
    args = ap.parse_args(argv)
    result = {}
    with tempfile.TemporaryDirectory(prefix="dp_bench_repro_") as tmp:
        for setting in args.settings:
            encoder, level = setting.split(":")
            sums = Counter(run_once(encoder, int(level), args.frames, Path(tmp) / "c.h5") for _ in range(args.runs))
            result[setting] = {"runs": args.runs, "distinct": len(sums), "differing_runs": args.runs - max(sums.values())}
            print(f"{setting:8s} {args.runs} runs, {len(sums)} distinct file(s)", flush=True)
    result["frames"] = args.frames
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
