"""What each stage needs, checked as early as it can be: its settings when the config is read, the video's
length when it is probed, its faces at the landmark gate.

* :func:`check_stage_settings` builds every stage's settings object (landmarks, fit, transfer, framing, model
  options, the GAN at ``render.size``) from the prepared config, so that a bad value stops the workflow before any job
  starts with one line naming the user's key.
* :func:`check_video_length` runs in the probe job, as soon as the frame count is known.
* :func:`faces_needed` is M of the landmark gate (``landmarks_summary``): a video needs at least
  ``M = max(ceil(landmarks.min_valid_fraction * frames), model_min_faces)`` frames with a face, where
  ``model_min_faces`` is what the model needs (:func:`model_min_faces`).
"""

from __future__ import annotations

import math

from .errors import ConfigError, InputError
from .models.person import PERSON_MODEL_MIN_FRAMES


def model_min_faces(model_cfg: dict) -> int:
    """Frames with a face the model needs: a person model ``max(30, model.n_components + 1)`` (its principal
    components need more shapes than components), a model file 1 (the identity fit needs one face)."""
    if model_cfg["type"] == "person":
        return max(PERSON_MODEL_MIN_FRAMES, int(model_cfg["n_components"]) + 1)
    return 1


def faces_needed(n_frames: int, min_valid_fraction: float, min_faces: int) -> int:
    """M: the frames with a face a video of ``n_frames`` frames needs to pass the landmark gate."""
    return max(math.ceil(min_valid_fraction * n_frames - 1e-9), int(min_faces))


def _model_reason(model_cfg: dict) -> str:
    if model_cfg["type"] == "person":
        return f"a person model with 'model.n_components' {model_cfg['n_components']} needs {model_min_faces(model_cfg)}"
    return "the identity fit needs 1"


def check_video_length(name: str, path, n_frames: int, config: dict) -> None:
    """Stop at probe time when ``n_frames`` can never be enough: fewer frames than the model needs faces, or
    (for a target) too few training frames for one clip, or no held-out frame to evaluate on."""
    where = f"{name} ({path})"
    need = model_min_faces(config["model"])
    if n_frames < need:
        raise InputError(where, f"{n_frames} frames; at least {need} frames with a face needed ({_model_reason(config['model'])})")
    if name in {p["target"] for p in config["pairs"]}:
        check_training_frames(where, n_frames, config["gan"])


def check_training_frames(where: str, n_frames: int, gan: dict) -> None:
    """A target of ``n_frames`` frames must leave ``gan.clip_len`` training frames and at least one held-out
    frame; else a one-line :class:`InputError` naming ``where`` and the keys. Checked at probe time and again
    by the training job (a ``gan`` change after the probe does not probe again)."""
    from .gan.data import split_frames

    train, held = split_frames(n_frames, gan["held_out_fraction"])
    if len(train) < gan["clip_len"]:
        raise InputError(
            where,
            f"{n_frames} frames, {len(train)} of them for training ('gan.held_out_fraction' {gan['held_out_fraction']:.3g} "
            f"holds out {len(held)}); 'gan.clip_len' {gan['clip_len']} needs at least {gan['clip_len']} training frames",
        )
    if not len(held):
        raise InputError(
            where, f"'gan.held_out_fraction' {gan['held_out_fraction']:.3g} holds out none of its {n_frames} frames; the evaluation needs at least 1"
        )


def check_stage_settings(config: dict) -> None:
    """Build every stage's settings object from the prepared ``config``; a bad value is a one-line
    :class:`ConfigError` naming the user's key (before any job starts)."""
    from .fit_types import FitSettings
    from .framing import FramingSettings
    from .gan.settings import TrainSettings
    from .landmarks import LandmarkSettings
    from .models.registry import OPTIONS
    from .transfer import TransferSettings

    LandmarkSettings.from_config(config["landmarks"])
    FitSettings.from_fit_section(config["fit"])
    TransferSettings.from_config(config["transfer"])
    FramingSettings.from_config(config["framing"])
    model = config["model"]
    unknown = sorted(set(model["options"]) - OPTIONS[model["type"]])
    if unknown:
        known = ", ".join(sorted(OPTIONS[model["type"]])) or "none"
        raise ConfigError(
            f"'model.options': unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for type {model['type']} (known: {known})"
        )
    size, depth = int(config["render"]["size"]), int(config["gan"]["gen_depth"])
    if size % 2**depth:
        raise ConfigError(f"'render.size': {size} is not divisible by 2**gan.gen_depth = {2**depth} (the generator's frame size)")
    TrainSettings.at_render_size(config["gan"], config["render"])
