"""Dark bars along a video's left and right edges (README, "d13 with the `cpu` preset": the pose+expression bar).

    .venv/bin/python scripts/edge_bars.py VIDEO [VIDEO ...] [--rows 300:800] [--drop 30]

Per frame and side, the mean grey level of the outermost 8 columns minus that of the band 24–40 columns in (over
``--rows``); a frame has a bar on that side when the edge is darker than the band by more than ``--drop`` grey
levels. Prints, per video and side, the share of frames with a bar, the mean difference and its 5th percentile.
Compare a re-enactment with its target clip (whose own edges set the normal level).
"""

from __future__ import annotations

import argparse

import numpy as np


def edge_differences(path: str, rows: slice) -> np.ndarray:
    """(T, 2) per frame: (left edge − band, right edge − band) in grey levels."""
    from deep_puppets.video import iter_frames

    out = []
    for frame in iter_frames(path):
        g = frame.astype(np.float32).mean(axis=-1)[rows]
        out.append((g[:, :8].mean() - g[:, 24:40].mean(), g[:, -8:].mean() - g[:, -40:-24].mean()))
    return np.array(out).reshape(-1, 2)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--rows", default="300:800", help="row range START:STOP of the frame to look at")
    ap.add_argument("--drop", type=float, default=30.0, help="grey levels darker than the band that make a bar")
    a = ap.parse_args(argv)
    start, stop = (int(v) for v in a.rows.split(":"))
    for path in a.videos:
        d = edge_differences(path, slice(start, stop))
        for k, side in enumerate(("left", "right")):
            print(f"{path} {side}: bar in {100 * np.mean(d[:, k] < -a.drop):.1f}% of {len(d)} frames; "
                  f"edge − band mean {d[:, k].mean():.1f}, 5th percentile {np.percentile(d[:, k], 5):.1f}")


if __name__ == "__main__":
    main()
