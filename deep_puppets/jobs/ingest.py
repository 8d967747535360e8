"""Job of the ingest stage: probe a video once (its real frame count, size, rate and time stamps)."""

from __future__ import annotations

from ..ingest import probe_to_json
from ..needs import check_video_length


def probe(*, video: str, video_path, out, on_truncated: str, config: dict) -> None:
    """Probe ``video_path`` into ``out`` (JSON); stop when the video can never have frames enough for the run
    ``config`` asks of it."""
    info = probe_to_json(video_path, out, video, on_truncated)
    check_video_length(video, video_path, info.n_frames, config)
