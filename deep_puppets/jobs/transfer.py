"""Job of the transfer stage: a source video's motion transferred onto a target's face."""

from __future__ import annotations

import logging

from ..transfer import TransferSettings
from ..transfer_files import transfer_files
from .model import load_video_model

log = logging.getLogger(__package__)


def transfer(*, model_cfg: dict, source_model_file, target_model_file, source_track, target_track, out, mode: str, transfer_cfg: dict) -> None:
    """The pair's transfer in ``mode`` (config section ``transfer``)."""
    result = transfer_files(
        source_track,
        target_track,
        load_video_model(model_cfg, source_model_file),
        load_video_model(model_cfg, target_model_file),
        out,
        mode=mode,
        settings=TransferSettings.from_config(transfer_cfg),
    )
    log.info("transfer (%s): %d frames, stats %s", mode, len(result.q), result.stats)
