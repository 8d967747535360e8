"""One entry point for every model provider: :func:`load_model` dispatches on a config dict.

Spec keys (relative paths are resolved against ``base_dir``)::

    type: person | ict | bfm2009 | bfm2017          (required)
    path: model file (person: the built person_model .h5; ict: packed npz or FaceXModel folder;
          bfm2009: 01_MorphableModel.mat; bfm2017: .h5)                                  (required)
    # ict:      region (face|full), exp_std, gaze, gaze_std
    # bfm2009:  exp_path (Exp_Pca.bin), exp_index_path, exp_std_path, exp_mean (ignore|add),
    #           landmarks_path, unit, n_id, n_exp
    # bfm2017:  landmarks_path, unit, source_unit, n_id, n_exp
    allow_pickle: false   # pickle can run code when a file is loaded: off unless the user opts in

Unknown types and keys are :class:`ConfigError` naming the key; bad files are :class:`InputError` naming
the file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, InputError
from .base import MorphableModel

PATH_KEYS = ("path", "exp_path", "exp_index_path", "exp_std_path", "landmarks_path")
OPTIONS = {
    "person": set(),
    "ict": {"region", "exp_std", "gaze", "gaze_std"},
    "bfm2009": {"exp_path", "exp_index_path", "exp_std_path", "exp_mean", "landmarks_path", "unit", "n_id", "n_exp"},
    "bfm2017": {"landmarks_path", "unit", "source_unit", "n_id", "n_exp"},
}
PICKLE_SUFFIXES = (".pkl", ".pickle")
# What a provider's loader hands the fit changed while its model file did not (landmark weights, the correspondence):
# the revision goes into the fit rules' params (config.model_params), so the fits made before rerun, and only those
# of that provider. ict 1: the upper-lid skin ring's weight 0 (ict.EYELID_SKIN_WEIGHT; the eyes close in blinks).
FIT_REVISIONS = {"ict": 1}


def _resolve(value, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def load_model(spec: dict, base_dir=".", where: str = "model", require_landmarks: bool = True) -> MorphableModel:
    """Load the model described by ``spec`` (see the module docstring).

    ``where`` names the config key holding ``spec`` in error messages. With ``require_landmarks`` a model
    without any landmark correspondence (a BFM without ``landmarks_path``) is refused, as it cannot be fitted.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"'{where}' must be a mapping with at least 'type' and 'path'")
    kind = spec.get("type")
    if kind not in OPTIONS:
        raise ConfigError(f"'{where}.type': {kind!r} is not a model type (known: {', '.join(OPTIONS)})")
    unknown = sorted(set(spec) - OPTIONS[kind] - {"type", "path", "allow_pickle"})
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in '{where}' for type {kind}")
    if not spec.get("path"):
        raise ConfigError(f"'{where}.path' is required")
    allow_pickle = spec.get("allow_pickle", False)
    if not isinstance(allow_pickle, bool):
        raise ConfigError(f"'{where}.allow_pickle' must be true or false")

    base_dir = Path(base_dir)
    kw = {k: v for k, v in spec.items() if k not in ("type", "allow_pickle")}
    for key in PATH_KEYS:
        if kw.get(key) is not None:
            kw[key] = _resolve(kw[key], base_dir)
            if kw[key].suffix.lower() in PICKLE_SUFFIXES:
                if not allow_pickle:
                    raise InputError(
                        kw[key], f"is a pickle file; loading pickle can run arbitrary code, so it is refused unless '{where}.allow_pickle' is true"
                    )
                raise InputError(kw[key], f"no loader for pickle files as '{where}.{key}' of a {kind} model")
    path = kw.pop("path")

    try:
        model = _dispatch(kind, path, allow_pickle, kw)
    except ValueError as e:  # a bad option value (unit, region, ...); file problems are InputError
        raise ConfigError(f"'{where}': {e}") from None

    if require_landmarks and (model.lm_weight is not None and not model.lm_weight.any()):
        raise ConfigError(f"'{where}.landmarks_path': a {kind} model has no MediaPipe landmark correspondence; give a JSON file of 478 or 68 vertex indices")
    return model


def _dispatch(kind: str, path: Path, allow_pickle: bool, kw: dict) -> MorphableModel:
    if kind == "person":
        from .person import load_person_model

        return load_person_model(path)
    if kind == "ict":
        from .ict import load_ict

        return load_ict(path, allow_pickle=allow_pickle, **kw)
    if kind == "bfm2009":
        from .bfm import load_bfm2009

        return load_bfm2009(path, **kw)
    from .bfm import load_bfm2017

    return load_bfm2017(path, **kw)
