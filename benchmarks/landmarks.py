"""Benchmark of the landmark stage: a whole video, decoding included, in parallel jobs and in one process.

Each job is a fresh process running :func:`deep_puppets.landmarks.run_segment` on one segment, as
``snakemake --cores N`` runs the landmark rule, so the wall time includes process start-up, imports and
model loading. The video is cut into ``--jobs`` segments unless ``--segment-length`` says otherwise. The
single-process figure runs the whole video as one segment in one such process.

Usage: ``python benchmarks/landmarks.py [--video PATH] [--jobs 2] [--segment-length N] [--overlap 0]``.
The last line printed is one JSON object (video, frames, seconds, fps, valid_fraction, jobs,
fps_single_process, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_VIDEO = "../shared/data/videos/LivePortrait__d6.mp4"  # relative to the repository root


def _segment_job(video: str, info_dict: dict, segment_dict: dict, out_path: str, settings_dict: dict) -> dict:
    """One landmark job (runs in a worker process)."""
    import logging

    from deep_puppets.landmarks import LandmarkSettings, run_segment
    from deep_puppets.segments import Segment
    from deep_puppets.video import VideoInfo

    logging.basicConfig(level=logging.WARNING)
    return run_segment(
        Path(video).stem,
        video,
        VideoInfo.from_dict(info_dict),
        Segment(**segment_dict),
        out_path,
        LandmarkSettings(**settings_dict),
    )


def run_stage(video: str, info, segments, jobs: int, settings) -> dict:
    """Run every segment in ``jobs`` fresh processes; wall time and pooled results."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="dp_bench_landmarks_") as tmp:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(
                    _segment_job, video, info.to_dict(), s.to_dict(), f"{tmp}/seg{s.index:03d}.h5", settings.to_dict()
                )
                for s in segments
            ]
            summaries = [f.result() for f in futures]
        seconds = time.perf_counter() - t0
    frames = sum(s["frames"] for s in summaries)
    valid = sum(s["valid_fraction"] * s["frames"] for s in summaries)
    return {
        "seconds": seconds,
        "frames_processed": frames,
        "valid_fraction": valid / frames if frames else 0.0,
        "in_job_fps": [round(s["fps"], 1) for s in summaries],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=DEFAULT_VIDEO, help="video file (relative paths: to the repository root)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs (processes)")
    ap.add_argument("--segment-length", type=int, default=None, help="frames per segment (default: video / jobs)")
    ap.add_argument("--overlap", type=int, default=0, help="frames shared by consecutive segments")
    args = ap.parse_args(argv)

    from deep_puppets.landmarks import LandmarkSettings
    from deep_puppets.segments import plan_segments
    from deep_puppets.video import probe_video

    video = Path(args.video)
    video = str(video if video.is_absolute() else (REPO / video).resolve())
    settings = LandmarkSettings()

    t0 = time.perf_counter()
    info = probe_video(video)
    probe_s = time.perf_counter() - t0
    n = info.n_frames
    length = args.segment_length or max(2, math.ceil(n / args.jobs) + args.overlap)
    segments = plan_segments(n, length, args.overlap)
    print(f"video {video}: {n} frames {info.width}x{info.height} @ {info.fps:.2f} fps (probe {probe_s:.2f} s)")
    print(f"settings {settings.to_dict()}")

    single = run_stage(video, info, plan_segments(n, n, 0), 1, settings)
    fps_single = n / single["seconds"]
    print(
        f"1 process, 1 segment: {single['seconds']:.2f} s wall = {fps_single:.1f} frames/s "
        f"(in-job {single['in_job_fps'][0]} frames/s, without process start-up)"
    )

    par = run_stage(video, info, segments, args.jobs, settings)
    fps = n / par["seconds"]
    print(
        f"{args.jobs} processes, {len(segments)} segments of <= {length} frames (overlap {args.overlap}): "
        f"{par['seconds']:.2f} s wall = {fps:.1f} frames/s (in-job {par['in_job_fps']} frames/s)"
    )
    print(f"valid fraction {par['valid_fraction']:.4f}")

    result = {
        "video": Path(video).name,
        "frames": n,
        "seconds": round(par["seconds"], 3),
        "fps": round(fps, 1),
        "valid_fraction": round(par["valid_fraction"], 4),
        "jobs": args.jobs,
        "segments": len(segments),
        "fps_single_process": round(fps_single, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
