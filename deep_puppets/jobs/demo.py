"""Job of the demo stage: the embedded demo clips, made from a still photo with known motion."""

from __future__ import annotations

from ..demo import make_demo_clip


def demo_clip(*, demo: str, video_out, truth_out, demo_cfg: dict) -> None:
    """Demo clip ``demo`` ('demo_source' or 'demo_target') and its known motion (config section ``demo``)."""
    make_demo_clip(
        demo.removeprefix("demo_"),
        video_out,
        truth_out,
        n_frames=demo_cfg["n_frames"],
        size=demo_cfg["size"],
        fps=demo_cfg["fps"],
        seed=demo_cfg["seed"],
    )
