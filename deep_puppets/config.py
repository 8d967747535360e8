"""Configuration: schema validation with defaults, then the checks a schema cannot express.

Every problem becomes a one-line :class:`~deep_puppets.errors.ConfigError` naming the key, raised while the
Snakefile is parsed, i.e. before any job starts.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError
from .video import path_problem

DEMO_VIDEOS = ("demo_source", "demo_target")
SCHEMA = "config.schema.yaml"


def schema_path() -> Path:
    return Path(str(resources.files("deep_puppets") / "schemas" / SCHEMA))


def load_schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def _key_path(error) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _describe(error) -> str:
    """One line naming the key and the problem, from a jsonschema ValidationError."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f" in '{key}'" if error.absolute_path else ""
        return f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}{where}"
    if "propertyNames" in error.schema_path:
        return f"'{key}': name {error.instance!r} must start with a letter or digit and hold only letters, digits, '_' or '-'"
    return f"'{key}': {error.message}"


def validate_schema(config: dict) -> dict:
    """Validate ``config`` against the schema and fill defaults (nested ones too); returns a new dict."""
    import jsonschema
    from snakemake.utils import validate

    config = copy.deepcopy(config) if config else {}
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    # snakemake's validate fills the defaults, including those of nested objects created from `default: {}`.
    validate(config, str(schema_path()), set_default=True)
    for pair in config.get("pairs", []):
        pair.setdefault("mode", "pose+expression")
    return config


def resolve(path, base_dir) -> Path:
    """A config path: absolute (``~`` expanded) or relative to ``base_dir`` (where snakemake runs)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def check_writable_folder(folder: str, base_dir: Path) -> None:
    """``folder`` exists as a writable directory or can be created: else a one-line ConfigError."""
    import os

    ancestor = resolve(folder, base_dir)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"'results': {folder!r} cannot be created: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"'results': {folder!r} is not writable ({ancestor})")


def demo_enabled(config: dict) -> bool:
    enabled = config["demo"]["enabled"]
    return (not config["videos"]) if enabled == "auto" else bool(enabled)


def prepare(config: dict, base_dir: str | Path = ".") -> dict:
    """Validate, fill defaults, add the demo when enabled, and check cross-references and files.

    The returned config has ``videos`` (name -> path, the demo's generated paths included) and ``pairs``
    with every field set.
    """
    config = validate_schema(config)
    base_dir = Path(base_dir)
    seg = config["segments"]
    if seg["overlap"] >= seg["length"]:
        raise ConfigError(f"'segments.overlap' ({seg['overlap']}) must be smaller than 'segments.length' ({seg['length']})")
    results = config["results"]
    check_writable_folder(results, base_dir)
    videos = dict(config["videos"])
    for name, path in videos.items():
        problem = path_problem(resolve(path, base_dir))
        if problem:
            raise ConfigError(f"'videos.{name}': file {path!r} {problem}")
    pairs = [dict(p) for p in config["pairs"]]
    if demo_enabled(config):
        clash = set(DEMO_VIDEOS) & set(videos)
        if clash:
            raise ConfigError(f"'videos': names {sorted(clash)} are reserved for the demo")
        for name in DEMO_VIDEOS:
            videos[name] = f"{results}/demo/{name}.mp4"
        if not pairs:
            pairs = [{"source": "demo_source", "target": "demo_target", "mode": "pose+expression"}]
    for i, pair in enumerate(pairs):
        for role in ("source", "target"):
            if pair[role] not in videos:
                raise ConfigError(f"'pairs[{i}].{role}': unknown video {pair[role]!r} (known: {', '.join(sorted(videos)) or 'none'})")
    model = config["model"]
    if model["type"] != "person":
        if not model["path"]:
            raise ConfigError(f"'model.path' is required for a model of type {model['type']}")
        if not resolve(model["path"], base_dir).exists():
            raise ConfigError(f"'model.path': {model['path']!r} does not exist")
    config["videos"] = videos
    config["pairs"] = pairs
    return config


def is_demo_video(name: str, config: dict) -> bool:
    return name in DEMO_VIDEOS and demo_enabled(config)


def pair_id(pair: dict) -> str:
    """Folder name of a pair: ``{source}__{target}__{mode}`` with mode ``pose`` (pose+expression) or ``expr``."""
    mode = {"pose+expression": "pose", "expression": "expr"}[pair["mode"]]
    return f"{pair['source']}__{pair['target']}__{mode}"


def settings_from_section(cls, section: str, values: dict | None):
    """``cls(**values)`` for a settings dataclass read from config section ``section``; missing keys take the
    class defaults and unknown keys are a :class:`ConfigError` naming them."""
    from dataclasses import fields

    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
