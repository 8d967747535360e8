"""Configuration: schema validation with defaults, then the checks a schema cannot express.

Every problem becomes a one-line :class:`~deep_puppets.errors.ConfigError` naming the key, raised while the
Snakefile is parsed, i.e. before any job starts. One module for one concern: everything here reads, types or
checks the config dict (schema, ``--set`` values, presets, paths, the names derived from it).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError
from .video import path_problem

PAIR_MODES = ("pose+expression", "expression")  # how a pair re-animates its target (the first is the default)

log = logging.getLogger(__name__)

DEMO_VIDEOS = ("demo_source", "demo_target")
SCHEMA = "config.schema.yaml"
PRESETS = "presets.yaml"
# The checkout this package runs from, and its folders that hold sources: `results` may be none of them.
SOURCE_DIR = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("deep_puppets", "rules", "workflow_scripts", "tests", "envs", "profiles", "scripts", "docs", "report", "benchmarks", ".git")
HASH_BYTES = 1 << 20  # videos of equal size whose first MB agree are taken for the same file


def check_yaml_file(path) -> None:
    """A YAML (or JSON) config file that does not parse: one line ``PATH line N: problem`` (ConfigError).

    Snakemake's own message names neither the file nor the line."""
    try:
        with open(path, encoding="utf-8") as f:
            yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None


def schema_path() -> Path:
    return Path(str(resources.files("deep_puppets") / "schemas" / SCHEMA))


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return schema_path().read_text()


def load_schema() -> dict:
    """The config schema (a fresh copy: callers may change it), parsed with libyaml where PyYAML has it."""
    return yaml.load(_schema_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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

    schema = load_schema()
    config = coerce_by_schema(copy.deepcopy(config) if config else {}, schema, strict=False)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    apply_preset(config)
    # snakemake's validate fills the defaults, including those of nested objects created from `default: {}`.
    validate(config, str(schema_path()), set_default=True)
    for pair in config.get("pairs", []):
        pair.setdefault("mode", "pose+expression")
    return config


# ------------------------------------------------------------------ values typed by the schema (--set, --config)

_NULL = ("null", "none", "~", "")
# booleans only as `true`/`false` (YAML 1.2): "yes" or "1" for `model.allow_pickle` must stay an error, not consent
_TRUE, _FALSE = ("true",), ("false",)
_TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
               "null": "null", "array": "a list", "object": "a mapping"}


def schema_node(key: str, schema: dict | None = None) -> dict:
    """The schema of the dotted config key ``key`` (``gan.iterations``, ``videos.alice``); a one-line ConfigError
    naming the key when the schema has no such key."""
    node = load_schema() if schema is None else schema
    done = []
    for part in key.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict) and node.get("type") == "object":
            node = node["additionalProperties"]
        else:
            where = f" in '{'.'.join(done)}'" if done else ""
            known = ", ".join(sorted(props))
            raise ConfigError(f"'{key}': unknown key {part!r}{where}" + (f" (known: {known})" if known else ""))
        done.append(part)
    return node


def _types(node: dict) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def coerce_value(value, node: dict, key: str, strict: bool = True):
    """``value`` as the type the schema ``node`` declares, where it is a string (from a command line): integer,
    number, boolean, null where allowed, enum members, lists and mappings (YAML, or ``a,b`` for a list); other
    values are returned as they are. A string that is none of the allowed types is a one-line ConfigError
    naming the key (``'gan.iterations': 'ten' is not an integer``)."""
    if not isinstance(value, str):
        if isinstance(value, dict) and ("properties" in node or "additionalProperties" in node):
            return coerce_by_schema(value, node, key, strict)
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [coerce_value(v, node["items"], f"{key}[{i}]", strict) for i, v in enumerate(value)]
        return value
    text = value.strip()
    if "enum" in node:
        for member in node["enum"]:
            if text == str(member) or (isinstance(member, bool) and text.lower() in (_TRUE if member else _FALSE)):
                return member
        raise ConfigError(f"'{key}': {value!r} is not one of {', '.join(str(m).lower() if isinstance(m, bool) else str(m) for m in node['enum'])}")
    types = _types(node)
    if not types:
        return value
    low = text.lower()
    for t in types:
        if t == "null" and low in _NULL:
            return None
        if t == "boolean" and low in _TRUE + _FALSE:
            return low in _TRUE
        if t == "integer":
            try:
                return int(text)
            except ValueError:
                pass
        if t == "number":
            try:
                number = float(text)
                return int(number) if number.is_integer() and "." not in text and "e" not in low else number
            except ValueError:
                pass
        if t in ("array", "object"):
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = None
            if t == "array" and not isinstance(parsed, list):
                parsed = [v.strip() for v in text.split(",") if v.strip()]
            if isinstance(parsed, list if t == "array" else dict):
                return coerce_value(parsed, node, key)
        if t == "string":
            return value
    raise ConfigError(f"'{key}': {value!r} is not {' or '.join(_TYPE_WORDS.get(t, t) for t in types)}")


def coerce_by_schema(config: dict, schema: dict | None = None, prefix: str = "", strict: bool = True) -> dict:
    """A copy of ``config`` whose string values are typed by the schema (:func:`coerce_value`): what
    ``snakemake --config 'gan={iterations: 10}'`` passes ('10', a string) becomes 10. Keys the schema does not
    know are left for the validation to name; so are values that fit no allowed type unless ``strict``."""
    schema = load_schema() if schema is None else schema
    out = {}
    for k, v in (config or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        props = schema.get("properties", {})
        node = props.get(k) if k in props else (schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None)
        try:
            out[k] = v if node is None else coerce_value(v, node, key, strict)
        except ConfigError:
            if strict:
                raise
            out[k] = v
    return out


def set_value(config: dict, assignment: str, schema: dict | None = None) -> dict:
    """Apply one ``key=value`` (dotted key, ``gan.iterations=10``) to ``config`` in place, the value typed by the
    schema; returns ``config``. An unknown key or a bad value is a one-line ConfigError naming the key."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{assignment!r}: expected key=value (e.g. gan.iterations=10)")
    typed = coerce_value(value, schema_node(key, schema), key)
    *parents, last = key.split(".")
    node = config
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = typed
    return config


def load_presets() -> dict:
    return yaml.safe_load((schema_path().parent / PRESETS).read_text())


def apply_preset(config: dict) -> str:
    """Fill ``config`` (validated, defaults not yet filled) with its preset's values where it sets none itself;
    ``config["preset"]`` becomes the preset's name (``auto`` resolved). Returns that name."""
    name = config.get("preset", "auto")
    if name == "auto":
        demo = config.get("demo", {}).get("enabled", "auto")
        name = "demo" if (not config.get("videos") and demo != False) else "cpu"  # noqa: E712 (auto/true/false)
    given = set(config.get("gan", {}))
    for section, values in load_presets()[name].items():
        target = config.setdefault(section, {})
        for key, value in values.items():
            target.setdefault(key, copy.deepcopy(value))
    gan = config.get("gan", {})
    if "neural_texture" not in given and "correspondence" not in gan.get("streams", ("correspondence",)):
        gan["neural_texture"] = 0  # the preset's texture is read through the correspondence image the config left out
    config["preset"] = name
    return name


def resolve(path, base_dir) -> Path:
    """A config path: absolute (``~`` expanded) or relative to ``base_dir`` (where snakemake runs)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def check_results_folder(results, base_dir, source_dir=SOURCE_DIR) -> str:
    """``results`` with ``~`` expanded (and trailing ``/`` dropped); a one-line ConfigError when it is empty, the
    filesystem root, the repository itself or one of its source folders, or cannot be written."""
    value = "" if results is None else str(results)
    if not value.strip():
        raise ConfigError("'results' is empty: give the folder outputs go to (e.g. results)")
    expanded = os.path.expanduser(value)
    expanded = expanded.rstrip("/") or "/"
    where = resolve(expanded, base_dir).resolve()
    if where == Path(where.anchor):
        raise ConfigError(f"'results': {value!r} is the filesystem root")
    source = Path(source_dir).resolve()
    if where == source:
        raise ConfigError(f"'results': {value!r} is the repository itself ({source}); use a folder of its own (e.g. results)")
    for name in SOURCE_FOLDERS:
        folder = source / name
        if where == folder or folder in where.parents:
            raise ConfigError(f"'results': {value!r} is inside the repository's source folder {name}/ ({where}); use a folder of its own (e.g. results)")
    check_writable_folder(expanded, base_dir)
    return expanded


def file_identity(path: Path) -> tuple:
    """What makes two video paths the same file: the same resolved path, or the same size and first MB."""
    with open(path, "rb") as f:
        head = f.read(HASH_BYTES)
    return path.stat().st_size, hashlib.sha256(head).hexdigest()


def warn_duplicate_videos(videos: dict, base_dir) -> list[tuple[str, ...]]:
    """Warn once for every group of video names that point to the same file (it would be computed twice)."""
    groups: dict = {}
    for name in sorted(videos):
        p = resolve(videos[name], base_dir)
        try:
            key = file_identity(p)
        except OSError:  # unreadable: the probe reports it
            key = ("path", str(p.resolve()))
        groups.setdefault(key, []).append(name)
    same = [tuple(names) for names in groups.values() if len(names) > 1]
    for names in same:
        keys = " and ".join(f"'videos.{n}' ({videos[n]})" for n in names)
        log.warning("config warning: %s are the same file; it will be processed %d times", keys, len(names))
    return same


def default_slurm_logdir(executor_settings, results: str, base_dir=".") -> None:
    """Point the SLURM executor's job logs at ``{results}/logs/slurm`` unless ``--slurm-logdir`` was given.

    snakemake-executor-plugin-slurm reads ``executor_settings.logdir`` when its executor starts (after the
    Snakefile is parsed and the DAG built); unset, it would use ``.snakemake/slurm_logs``. Other executors'
    settings have no ``logdir`` and are left alone."""
    if executor_settings is None or not hasattr(executor_settings, "logdir") or executor_settings.logdir:
        return
    executor_settings.logdir = resolve(results, base_dir).resolve() / "logs" / "slurm"


def check_writable_folder(folder: str, base_dir: Path) -> None:
    """``folder`` exists as a writable directory or can be created: else a one-line ConfigError."""
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


# Keys added to a stage's section after results had been computed without them, each at the value that reproduces
# that earlier computation exactly. A rule's params leave such a key out while it holds that value (:func:`job_params`),
# so an upgrade reruns no job whose result would come out the same (a fit, and the generator trained on it).
NEUTRAL_ADDITIONS = {"fit": {"activation_bounds": 0}, "transfer": {"pose_range": None}, "gan": {"lambda_eyes": 0}}


def job_params(config: dict, section: str) -> dict:
    """``config[section]`` for a rule's ``params``, without the :data:`NEUTRAL_ADDITIONS` that hold their neutral
    value (the job's settings fill them back in with that value, their default)."""
    neutral = NEUTRAL_ADDITIONS.get(section, {})
    return {k: v for k, v in config[section].items() if not (k in neutral and v == neutral[k])}


def model_params(config: dict) -> dict:
    """``config['model']`` for the fit rules' ``params``, with the provider's fit revision where it has one
    (:data:`deep_puppets.models.registry.FIT_REVISIONS`): fits made by an earlier loader of that provider rerun."""
    from .models.registry import FIT_REVISIONS

    revision = FIT_REVISIONS.get(config["model"]["type"])
    return dict(config["model"]) if revision is None else {**config["model"], "fit_revision": revision}


def prepare(config: dict, base_dir: str | Path = ".", source_dir: str | Path = SOURCE_DIR) -> dict:
    """Validate, fill defaults, add the demo when enabled, and check cross-references and files.

    The returned config has ``results``, ``videos`` and ``model.path`` with ``~`` expanded (use these, never
    the user's strings), ``videos`` (name -> path, the demo's generated paths included) and ``pairs`` with
    every field set. ``source_dir`` is the checkout, where ``results`` may not go.
    """
    config = validate_schema(config)
    base_dir = Path(base_dir)
    seg = config["segments"]
    if seg["overlap"] >= seg["length"]:
        raise ConfigError(f"'segments.overlap' ({seg['overlap']}) must be smaller than 'segments.length' ({seg['length']})")
    results = config["results"] = check_results_folder(config["results"], base_dir, source_dir)
    videos = {name: os.path.expanduser(path) for name, path in config["videos"].items()}
    for name, path in videos.items():
        problem = path_problem(resolve(path, base_dir))
        if problem:
            raise ConfigError(f"'videos.{name}': file {path!r} {problem}")
    warn_duplicate_videos(videos, base_dir)
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
        model["path"] = os.path.expanduser(model["path"])
        if not resolve(model["path"], base_dir).exists():
            raise ConfigError(f"'model.path': {model['path']!r} does not exist")
    config["videos"] = videos
    config["pairs"] = pairs
    return config


def is_demo_video(name: str, config: dict) -> bool:
    """Whether video ``name`` is one of the demo's generated clips (the demo enabled): it has a known-motion truth file."""
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
