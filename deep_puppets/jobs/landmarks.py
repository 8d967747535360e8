"""Jobs of the landmark stage: the detector's landmarks of one segment, and the per-video summary (the gate of
every later job)."""

from __future__ import annotations

from ..ingest import read_probe, segment_of
from ..landmark_sets import summarize_landmarks, write_summary
from ..landmarks import LandmarkSettings, run_segment


def landmarks(*, video: str, video_path, probe_json, segments_cfg: dict, seg, out, landmarks_cfg: dict) -> None:
    """Landmarks of segment ``seg`` of a video (config sections ``segments`` and ``landmarks``)."""
    info = read_probe(probe_json)
    run_segment(video, video_path, info, segment_of(info, segments_cfg, seg), out, LandmarkSettings.from_config(landmarks_cfg))


def landmarks_summary(*, segment_files, video: str, video_path, min_valid_fraction: float, min_faces: int, out) -> None:
    """The per-video landmark summary (JSON); fails with one line when the video has too few faces."""
    summary = summarize_landmarks(list(segment_files), video, video_path, min_valid_fraction, min_faces)
    write_summary(out, summary)
