"""Ingest: probe a video once (real decoded frame count, size, rate, time stamps) and plan its segments."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import InputError
from .files import write_json
from .segments import Segment, plan_segments
from .video import VideoInfo, probe_video

log = logging.getLogger(__name__)


def probe_to_json(video_path, out_json, name: str, on_truncated: str = "error") -> VideoInfo:
    """Probe ``video_path`` and write its :class:`VideoInfo` (plus the name) as JSON, atomically.

    ``on_truncated`` (config ``input.on_truncated``): a video that decodes fewer frames than its container
    declares is an error, or with ``"warn"`` a warning and the frames that decode are used."""
    info = probe_video(video_path, on_truncated=on_truncated)
    log.info(
        "%s: %d frames (%s declared), %dx%d%s, %.3f fps, codec %s",
        video_path,
        info.n_frames,
        info.declared_frames if info.declared_frames is not None else "none",
        info.width,
        info.height,
        f" upright ({info.orientation})" if info.orientation else "",
        info.fps,
        info.codec,
    )
    if info.n_frames < 2:
        raise InputError(video_path, f"only {info.n_frames} decodable frame(s); a video needs at least 2")
    write_json(out_json, {"name": name, **info.to_dict()})
    return info


def read_probe(path) -> VideoInfo:
    d = json.loads(Path(path).read_text())
    d.pop("name", None)
    return VideoInfo.from_dict(d)


def segment_of(info: VideoInfo, segments_config: dict, index) -> Segment:
    """Segment ``index`` of a probed video under the config's ``segments`` section."""
    plan = plan_segments(info.n_frames, segments_config["length"], segments_config["overlap"])
    index = int(index)
    if not 0 <= index < len(plan):
        raise InputError(info.path, f"segment {index} does not exist (the video has {len(plan)} segments)")
    return plan[index]


def segments_for(probe_json, length: int, overlap: int) -> list[Segment]:
    """The segment plan of a probed video under the configured length/overlap."""
    return plan_segments(read_probe(probe_json).n_frames, length, overlap)
