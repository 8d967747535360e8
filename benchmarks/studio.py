"""Benchmark of the puppet studio: the latency of one slider change to an updated image at 256² (issue 17's bar:
≤ 150 ms median on 2 CPU cores).

One update is what the web app does per slider move: :meth:`deep_puppets.studio.engine.StudioEngine.frame` (the
edit applied to the window's frames, their conditioning renders on the persistent GL context, the generator's
forward pass without autograd) and both images PNG-encoded (``cv2.imencode``, compression 1). The
case is built honestly: the embedded demo run through the workflow with ``render.size: 256`` and the generator at
the ``cpu`` preset's size (the default network, as a real clip's target has it) trained for a couple of iterations
(the weights' values do not change the arithmetic), in a temporary folder; or ``--results DIR`` (a results folder
with a trained target). The first ``--warmup`` updates are not timed; then ``--updates`` updates at one frame with
the edits changing every time (mouth open, smile, yaw, gaze sweeping). Reported: the median and 90th percentile
per update, the render-only part (the same updates without the generator), the PNG encoding, for each backend of
the generator's forward pass: torch (with and without channels-last weights; ``torch_median_ms``: the better) and
ONNX Runtime (``onnx``, :mod:`deep_puppets.studio.onnx_generator`), and the machine's load (the machine may be
shared: compare ``load_avg_1min``). ``median_ms`` and ``passes`` are those of the backend the studio chooses by
default (``backend="auto"``: ``chosen_backend``).

Usage: ``python benchmarks/studio.py [--threads 2] [--updates 30] [--results DIR] [--keep DIR]``. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASE = {  # the demo at 256², the generator trained for 2 iterations
    "demo": {"enabled": True, "n_frames": 40, "size": 256},
    "segments": {"length": 24, "overlap": 6},
    "render": {"size": 256},
    "gan": {"iterations": 2, "checkpoint_every": 2, "log_every": 1, "eval_frames": 0},
}
TARGET = "demo_target"


def build_case(workdir: Path) -> Path:
    """Run the workflow up to the demo target's generator in ``workdir``; returns its results folder."""
    override = workdir / "bench-config.yaml"
    override.write_text(yaml.safe_dump(CASE))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(REPO / "config.yaml"), str(override), "--cores", "2", f"results/videos/{TARGET}/gan/generator.pt"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"building the case failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return workdir / "results"


def edits_sequence(n: int) -> list[dict]:
    import numpy as np

    u = np.linspace(0, 1, n)
    return [{"mouth_open": round(float(-1 + 2.5 * a), 3), "smile": round(float(np.sin(6 * a)), 3),
             "yaw": round(float(20 * np.sin(4 * a)), 2), "gaze_x": round(float(0.2 * np.cos(5 * a)), 3)} for a in u]


def time_updates(engine, t: int, edits: list[dict], warmup: int) -> dict:
    import cv2
    import numpy as np

    png = [int(cv2.IMWRITE_PNG_COMPRESSION), 1]
    total, encode = [], []
    for i, e in enumerate(edits[:warmup] + edits):
        t0 = time.perf_counter()
        fr = engine.frame(t, e)
        t1 = time.perf_counter()
        for img in (fr.conditioning, fr.generated):
            if img is not None:
                ok, _ = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]), png)
        t2 = time.perf_counter()
        if i >= warmup:
            total.append(t2 - t0)
            encode.append(t2 - t1)
    ms = np.array(total) * 1000
    return {"median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "min_ms": round(float(ms.min()), 1), "encode_median_ms": round(float(np.median(encode)) * 1000, 2), "updates": len(ms)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--results", help="an existing results folder with a trained target (default: build the 256² demo case)")
    ap.add_argument("--target", default=None)
    ap.add_argument("--keep", help="build the case in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--frame", type=int, default=10)
    args = ap.parse_args(argv)

    import torch

    from deep_puppets.studio.engine import StudioEngine

    torch.set_num_threads(args.threads)
    result: dict = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg_1min_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        if args.results:
            results = Path(args.results)
        else:
            work = Path(args.keep) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            results = build_case(work)
            result["build_case_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        with StudioEngine(results, args.target) as engine:  # backend auto, as the studio opens it
            chosen = engine.backend
            result.update(target=engine.target, size=engine.size, window=engine.gs.window, prev_frames=engine.gs.prev_frames,
                          G_params=sum(p.numel() for p in engine.G.parameters()), renderer=engine.renderer.gl_renderer,
                          engine_open_s=round(time.perf_counter() - t0, 2), chosen_backend=chosen)
            if engine.onnx_generator is not None:
                result.update(onnx_export_s=round(engine.onnx_generator.export_s, 2), onnx_max_abs_diff=engine.onnx_generator.max_abs_diff)
            edits = edits_sequence(args.updates)
            t = min(args.frame, engine.n_frames - 1)
            engine.use_backend("torch")
            for layout in ("contiguous", "channels_last"):
                engine.set_channels_last(layout == "channels_last")
                r = time_updates(engine, t, edits, args.warmup)
                result[layout] = r
                print(f"torch {layout}: {r}", flush=True)
            engine.set_channels_last(False)
            if engine.onnx_generator is not None:
                engine.use_backend("onnx")
                result["onnx"] = time_updates(engine, t, edits, args.warmup)
                print(f"onnx: {result['onnx']}", flush=True)
            G, engine.G = engine.G, None  # the same updates without the generator: render + encode only
            result["render_only"] = time_updates(engine, t, edits, args.warmup)
            engine.G = G
            print(f"render only: {result['render_only']}", flush=True)
    best = min(("contiguous", "channels_last"), key=lambda k: result[k]["median_ms"])
    result.update(best_layout=best, torch_median_ms=result[best]["median_ms"], onnx_median_ms=result.get("onnx", {}).get("median_ms"))
    median = result["onnx_median_ms"] if chosen == "onnx" else result["torch_median_ms"]
    result.update(median_ms=median, bar_ms=150, passes=median <= 150, load_avg_1min_after=os.getloadavg()[0])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
