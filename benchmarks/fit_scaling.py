"""How the segment fit scales with the number of frames: time and peak memory, one segment, smoothing on.

Fits synthetic landmark sequences (drawn from the model itself, 2 px noise) of 1,000, 4,000 and 18,000
frames in ONE segment, each size in its own child process so that its peak RSS (``ru_maxrss`` of that
child, from ``os.wait4``) is the fit's alone. Models:

- ``person``: a stand-in for the default person-specific model, MediaPipe topology size (478 vertices, no
  identity components, 20 expression components);
- ``ict``: the ICT FaceKit model as :func:`deep_puppets.models.ict.load_ict` gives it (face region, 100
  identity / 55 expression components incl. gaze), when ``../shared/models/ict-facekit-light`` is present.

Identity is fixed (the workflow's per-segment setting). Prints a table, then as its LAST line one JSON
object with every figure. Targets: ≥ 1,000 frames/s on 2 cores, < 1 GiB peak RSS at 18,000 frames, both
growing linearly. The machine's load average is reported: other jobs on the same cores slow the wall clock.

    .venv/bin/python benchmarks/fit_scaling.py [--sizes 1000 4000 18000] [--models person ict] [--threads 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEP_PUPPETS_SHARED", REPO.parent / "shared"))
ICT_PATH = SHARED / "models/ict-facekit-light/ict_facekit_light_packed.npz"


def child(model_name: str, frames: int, threads: int) -> dict:
    """Runs in the child process: build the model and the landmarks, fit, report."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from deep_puppets.fit_types import FitSettings
    from deep_puppets.fitting import solve_segment
    from deep_puppets.models.ict import load_ict
    from tests.synthetic_faces import draw_landmarks, synthetic_model, synthetic_motion

    if model_name == "person":
        model = synthetic_model(n_vertices=478, k_id=0, k_exp=20, seed=0, name="person-like")
    else:
        model = load_ict(ICT_PATH)
    p, q, cam = synthetic_motion(model, frames, seed=1)
    landmarks = draw_landmarks(model, p, q, cam, noise_px=2.0)
    valid = np.ones(frames, bool)
    del q, cam
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    res = solve_segment(model, landmarks, valid, FitSettings(), p=p, threads=threads)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return dict(
        model=model_name,
        frames=frames,
        K_exp=model.n_exp,
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3),
        fps=round(frames / wall, 1),
        iterations=res.iterations,
        converged=bool(res.converged),
        mean_residual_px=round(float(np.nanmean(res.residual)), 3),
        rss_before_fit_mib=round(rss_before, 1),
    )


def run_child(model_name: str, frames: int, threads: int) -> dict:
    """Run one size in a child process; its own peak RSS comes from wait4 (not the maximum over children)."""
    cmd = [sys.executable, __file__, "--child", model_name, str(frames), "--threads", str(threads)]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports kilobytes
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 18000], help="frames per fit")
    ap.add_argument("--models", nargs="+", default=["person", "ict"], choices=["person", "ict"])
    ap.add_argument("--threads", type=int, default=2, help="threads assembling the normal equations")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest is reported (noisy shared machines)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads)))
        return

    models = [m for m in args.models if m != "ict" or ICT_PATH.exists()]
    skipped = sorted(set(args.models) - set(models))
    load = os.getloadavg()
    runs = []
    header = f"{'model':8} {'frames':>7} {'fps':>8} {'wall s':>8} {'cpu s':>8} {'iters':>5} {'resid px':>8} {'peak RSS MiB':>12}"
    print(header)
    print("-" * len(header))
    for model in models:
        for n in args.sizes:
            tries = [run_child(model, n, args.threads) for _ in range(max(args.repeat, 1))]
            r = min(tries, key=lambda x: x["wall_s"])
            r["wall_s_all"] = [x["wall_s"] for x in tries]
            r["peak_rss_mib"] = max(x["peak_rss_mib"] for x in tries)
            runs.append(r)
            print(
                f"{r['model']:8} {r['frames']:>7} {r['fps']:>8.0f} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['iterations']:>5}"
                f" {r['mean_residual_px']:>8.2f} {r['peak_rss_mib']:>12.0f}"
            )
    summary = {}
    for model in models:
        rs = sorted((r for r in runs if r["model"] == model), key=lambda r: r["frames"])
        if len(rs) >= 2:
            a, b = rs[0], rs[-1]
            summary[model] = dict(
                time_per_frame_ratio=round((b["wall_s"] / b["frames"]) / (a["wall_s"] / a["frames"]), 2),
                rss_growth_mib_per_1000_frames=round((b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["frames"] - a["frames"]) * 1000, 1),
            )
        if rs:
            summary.setdefault(model, {}).update(
                min_fps=min(r["fps"] for r in rs), fps_target_met=min(r["fps"] for r in rs) >= 1000, rss_target_met=rs[-1]["peak_rss_mib"] < 1024
            )
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; threads={args.threads}"
        + (f"; skipped (absent): {skipped}" if skipped else "")
    )
    print(
        json.dumps(
            {"benchmark": "fit_scaling", "threads": args.threads, "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in load],
             "skipped": skipped, "runs": runs, "scaling": summary}
        )
    )


if __name__ == "__main__":
    main()
