"""Steadiness of the head crop boxes (deep_puppets/framing.py) on real tracks.

For each video: the RMS (pixels) of the second difference in time of the box centre with the configured
smoothing and without it (``framing.smoothing`` 0), and how far the smoothed centre ever strays from the raw one
(the lag a fast nod could cut the chin off with), as a fraction of the box side. The bar: RMS ≤ 0.5 px on
LivePortrait__d6.

The tracks come from a workflow run up to ``track.h5``, e.g. with a config ::

    videos: {d6: /work/shared/data/videos/LivePortrait__d6.mp4, d13: /work/shared/data/videos/LivePortrait__d13.mp4}
    pairs: []
    results: /tmp/fr_results

and the targets ``/tmp/fr_results/videos/d6/track.h5 /tmp/fr_results/videos/d13/track.h5``.

Usage: ``python benchmarks/framing.py --results /tmp/fr_results d6 d13 [--smoothing 0.25] [--scale 2]
[--offset-y 0.05]``. Prints one line per video, then one JSON object (video -> figures) as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def figures(track_file, model_file, settings) -> dict:
    from dataclasses import replace

    from deep_puppets import framing
    from deep_puppets.fit_files import check_model
    from deep_puppets.jobs.model import load_video_model
    from deep_puppets.tracks import read_track

    track, attrs = read_track(track_file)
    model = load_video_model({"type": "person"}, model_file)
    check_model(attrs, model, track_file)
    args = (float(attrs["fps"]), int(attrs["width"]), int(attrs["height"]))
    boxes = framing.fit_boxes(model, track, args[0], settings, *args[1:])
    raw = framing.fit_boxes(model, track, args[0], replace(settings, smoothing=0.0), *args[1:])
    side = boxes[:, 2] - boxes[:, 0]
    lag = np.linalg.norm(framing.box_centres(boxes) - framing.box_centres(raw), axis=1) / side
    return {
        "frames": len(boxes),
        "fps": args[0],
        "valid_fraction": float(np.mean(track.valid)),
        "rms_second_difference_px": framing.smoothness(boxes),
        "rms_second_difference_raw_px": framing.smoothness(raw),
        "max_raw_offset_per_side": float(lag.max()),
        "p99_raw_offset_per_side": float(np.percentile(lag, 99)),
        "side_px_median": float(np.median(side)),
        "all_finite": bool(np.isfinite(boxes).all()),
    }


def main(argv=None) -> dict:
    from deep_puppets.framing import FramingSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--results", required=True)
    ap.add_argument("--smoothing", type=float, default=FramingSettings.smoothing)
    ap.add_argument("--scale", type=float, default=FramingSettings.scale)
    ap.add_argument("--offset-y", type=float, default=FramingSettings.offset_y)
    a = ap.parse_args(argv)
    settings = FramingSettings(mode="head", scale=a.scale, offset_y=a.offset_y, smoothing=a.smoothing)
    out = {}
    for v in a.videos:
        folder = Path(a.results) / "videos" / v
        out[v] = f = figures(folder / "track.h5", folder / "model.h5", settings)
        print(
            f"{v}: {f['frames']} frames at {f['fps']:g} fps, RMS 2nd difference of the centre {f['rms_second_difference_px']:.3f} px "
            f"(raw {f['rms_second_difference_raw_px']:.3f}), max |smoothed - raw| {100 * f['max_raw_offset_per_side']:.2f} % of the side "
            f"(p99 {100 * f['p99_raw_offset_per_side']:.2f} %), side {f['side_px_median']:.0f} px"
        )
    print(json.dumps({"settings": json.loads(settings.to_json()), "videos": out}, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
