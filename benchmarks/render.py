"""Benchmark of the conditioning renderer: colour, correspondence and gaze images of an animated face.

The mesh is MediaPipe's canonical face (478 vertices incl. the 10 iris points, 852 triangles,
``deep_puppets.models.facemesh``), Loop-subdivided ``--subdivisions`` times, animated over ``--frames``
frames (head rotation, scale, translation in a 1280×720 frame, a moving jaw, SH lighting turning) and
projected with the fitter's weak-perspective camera (``deep_puppets.camera.project``). Every frame renders
all three images at ``--size``² with a square crop box following the face, reads them back, and (in the
main figure) streams them into a ``conditioning`` HDF5 file.

Usage: ``python benchmarks/render.py [--frames 500] [--size 256] [--subdivisions 1] [--compression gzip]
[--encoder isal|zlib] [--repeat 1] [--profile]``. Prints a table (wall and CPU time: on a shared machine the
CPU time per frame is the steadier figure), then as the last line one JSON object (frames, seconds, fps, size, vertices,
triangles, renderer, ...); ``seconds``/``fps`` are the full figure, HDF5 writing included.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def animation(n_frames: int, seed: int = 0) -> dict:
    """Screen-space vertices (T, 478, 3), crop boxes (T, 4), SH (T, 9, 3) and the topology."""
    from deep_puppets import camera
    from deep_puppets.models import facemesh
    from deep_puppets.texture.lighting import sh_directional

    mean = np.asarray(facemesh.canonical_face(), dtype=np.float64)  # cm, y up, z to the viewer
    tri = np.asarray(facemesh.triangles())
    t = np.arange(n_frames)
    rng = np.random.default_rng(seed)
    jaw = mean[:, 1] < mean[facemesh.LIPS, 1].mean()  # lower face opens
    shapes = mean[None] + (0.6 * (1 + np.sin(t / 9.0)))[:, None, None] * jaw[None, :, None] * [0.0, -1.0, 0.0]
    shapes = shapes + rng.normal(scale=0.02, size=shapes.shape)
    rot = np.stack([0.25 * np.sin(t / 23.0), 0.45 * np.sin(t / 31.0), 0.1 * np.sin(t / 17.0)], axis=1)
    scale = 14.0 + 3.0 * np.sin(t / 40.0)  # pixels per cm
    cams = np.concatenate(
        [
            rot,
            640 + 150 * np.sin(t / 50.0)[:, None],
            360 + 60 * np.cos(t / 45.0)[:, None],
            np.zeros((n_frames, 1)),
            scale[:, None],
        ],
        axis=1,
    )
    verts = camera.project(shapes, cams)
    lo, hi = verts[..., :2].min(axis=1), verts[..., :2].max(axis=1)
    centre, half = (lo + hi) / 2, 0.6 * (hi - lo).max(axis=1)
    boxes = np.concatenate([centre - half[:, None], centre + half[:, None]], axis=1)
    sh = np.stack([sh_directional([np.sin(a), -0.3, -np.cos(a)], 0.7, 0.4) for a in t / 60.0])
    return {"vertices": verts, "boxes": boxes, "sh": sh, "triangles": tri, "mean": mean}


def timed(fn, repeat: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of the fastest of ``repeat`` runs of ``fn()``."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        c0, t0 = os.times(), time.perf_counter()
        fn()
        c1, wall = os.times(), time.perf_counter() - t0
        best = min(best, (wall, (c1.user - c0.user) + (c1.system - c0.system)))
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--subdivisions", type=int, default=1)
    ap.add_argument("--compression", choices=["gzip", "lzf"], default="gzip")
    ap.add_argument("--encoder", choices=["isal", "zlib"], help="deflate encoder (default: isal where installed)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure; the best is reported")
    ap.add_argument("--profile", action="store_true", help="print where the time goes (cProfile)")
    args = ap.parse_args(argv)

    from deep_puppets.render.conditioning_file import DEFAULT_ENCODER, DEFAULT_LEVELS
    from deep_puppets.render.gl import Renderer
    from deep_puppets.render.sequence import render_sequence, write_conditioning

    encoder = args.encoder or DEFAULT_ENCODER

    load = os.getloadavg()[0]  # other work on the machine skews the figures: reported with them
    anim = animation(args.frames)
    v, boxes, sh = anim["vertices"], anim["boxes"], anim["sh"]
    t0 = time.perf_counter()
    renderer = Renderer(anim["triangles"], anim["mean"], size=(args.size, args.size), subdivisions=args.subdivisions)
    setup_s = time.perf_counter() - t0
    settings = renderer.settings()
    rows = []

    def render_only():
        for _ in render_sequence(renderer, v, boxes, sh, eye_points=v):
            pass

    with tempfile.TemporaryDirectory(prefix="dp_bench_render_") as tmp:
        out = Path(tmp) / "conditioning.h5"

        def full():
            write_conditioning(
                out,
                renderer,
                v,
                boxes,
                sh=sh,
                eye_points=v,
                source="benchmark",
                compression=args.compression,
                encoder=encoder,
            )

        render_only()  # warm-up (shader compilation, first allocations)
        rows.append(("render 3 images + readback", *timed(render_only, args.repeat)))
        label = f"{args.compression}, {encoder}" if args.compression == "gzip" else args.compression
        rows.append((f"render + HDF5 ({label})", *timed(full, args.repeat)))
        seconds, cpu = rows[-1][1:]
        file_mb = out.stat().st_size / 1e6
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(full)
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    renderer.close()

    print(
        f"renderer: {renderer.gl_renderer}; {settings['vertices']} vertices, {settings['triangles']} triangles "
        f"({args.subdivisions}× Loop of 478/852); setup {setup_s * 1e3:.0f} ms; HDF5 {file_mb:.1f} MB"
    )
    print(f"{'stage':34s} {'seconds':>8s} {'ms/frame':>9s} {'fps':>7s} {'CPU ms/frame':>13s}")
    for name, s, c in rows:
        print(f"{name:34s} {s:8.2f} {1e3 * s / args.frames:9.2f} {args.frames / s:7.1f} {1e3 * c / args.frames:13.2f}")
    result = {
        "frames": args.frames,
        "seconds": round(seconds, 3),
        "fps": round(args.frames / seconds, 1),
        "fps_render_only": round(args.frames / rows[0][1], 1),
        "cpu_ms_per_frame": round(1e3 * cpu / args.frames, 2),
        "load_avg_1min": round(load, 2),
        "size": args.size,
        "vertices": settings["vertices"],
        "triangles": settings["triangles"],
        "base_vertices": len(anim["mean"]),
        "base_triangles": len(anim["triangles"]),
        "subdivisions": args.subdivisions,
        "compression": args.compression,
        "encoder": encoder if args.compression == "gzip" else None,
        "deflate_level": DEFAULT_LEVELS[encoder] if args.compression == "gzip" else None,
        "file_mb": round(file_mb, 1),
        "renderer": renderer.gl_renderer,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
