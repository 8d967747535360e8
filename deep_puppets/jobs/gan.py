"""Jobs of the generator's training: a target's optical flow and the training of its generator (vid2vid GAN).
The re-enactment through a trained generator is :mod:`.synthesize` (inference, kept apart from training)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from ..files import atomic_path
from ..gan.flow import write_flow_file
from ..gan.run_folder import (
    LOCK_NAME,
    TrainingLock,
    input_digests,
    remove_superseded_runs,
)
from ..gan.settings import TrainSettings
from ..gan.train import train_from_files
from ..needs import check_training_frames
from ..render.conditioning_file import open_conditioning

log = logging.getLogger(__package__)


def gan_settings(gan_cfg: dict, render_cfg: dict) -> TrainSettings:
    """Training settings: the ``gan`` section at the frame size of the conditioning renders."""
    return TrainSettings.at_render_size(gan_cfg, render_cfg)


def gan_flow(*, video_path, conditioning_file, out, gan_cfg: dict, render_cfg: dict) -> None:
    """The optical flow of a target's frames in the conditioning's crop boxes, cached for training."""
    settings = gan_settings(gan_cfg, render_cfg)
    f, _, boxes = open_conditioning(conditioning_file)
    f.close()
    write_flow_file(video_path, out, settings.size, preset=settings.flow_preset, boxes=boxes)
    log.info("optical flow of %s at %s cached in %s", video_path, settings.size, out)


def gan_train(*, conditioning_file, flow_file, generator_out, losses_png, gan_cfg: dict, render_cfg: dict, threads: int) -> None:
    """Train (or resume) the generator of one target, holding the target's training lock throughout.

    The run folder ``train-<fingerprint>/`` beside the generator is named by the settings and the content hashes
    of the conditioning and flow files: a killed run resumes there, while changed settings or changed inputs
    (anything upstream) start a new run; the folders of superseded runs are removed."""
    settings = gan_settings(gan_cfg, render_cfg)
    with open_conditioning(conditioning_file, settings.streams)[0] as fc:
        check_training_frames(str(conditioning_file), len(fc[settings.streams[0]]), settings.to_dict())
    if not settings.threads:
        settings = replace(settings, threads=threads)
    gan_dir = Path(generator_out).parent
    with TrainingLock(gan_dir / LOCK_NAME, "the training of this target"):
        inputs = input_digests(conditioning_file, flow_file)
        run_dir = gan_dir / f"train-{settings.fingerprint(inputs)}"
        log.info("run folder %s (conditioning sha256 %s, flow sha256 %s)", run_dir, inputs["conditioning"], inputs["flow"])
        remove_superseded_runs(gan_dir, keep=run_dir)
        train_from_files(conditioning_file, flow_file, settings, run_dir, generator_out, inputs=inputs)
        with atomic_path(losses_png) as tmp:
            shutil.copyfile(run_dir / "losses.png", tmp)
