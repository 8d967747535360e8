"""The workflow results folder the studio opens: which targets have a track (and a trained generator), each
target's files and model, the pairs driving it; :class:`StudioError` for everything the user can get wrong.

Nothing here accepts a path from outside the results folder: targets and pairs are names checked against what
the folder holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..errors import InputError

VIDEO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # video names (rules/common.smk's wildcard constraint)


class StudioError(InputError):
    """A one-line user error of the studio (no such target, no results, bad control name or value)."""


@dataclass(frozen=True)
class TargetFiles:
    """The files of one target video in a results folder (``generator`` None until it is trained)."""

    name: str
    folder: Path
    track: Path
    texture: Path
    conditioning: Path
    probe: Path
    model: Path | None  # its person model, or None (a configured model: see :func:`model_spec`)
    generator: Path | None


def _video_folder(results: Path, name: str) -> Path:
    if not VIDEO_NAME.match(name or ""):
        raise StudioError(results, f"{name!r} is not a video name")
    return results / "videos" / name


def target_files(results, name: str) -> TargetFiles:
    """The files of target ``name``; StudioError naming what is missing."""
    results = Path(results)
    folder = _video_folder(results, name)
    files = {k: folder / f for k, f in (("track", "track.h5"), ("texture", "texture.h5"), ("conditioning", "conditioning.h5"),
                                        ("probe", "probe.json"))}  # fmt: skip
    missing = [str(p.relative_to(results)) for p in files.values() if not p.is_file()]
    if missing:
        raise StudioError(results, f"target {name!r} lacks {', '.join(missing)}: run the workflow up to its conditioning render first")
    model = folder / "model.h5"
    generator = folder / "gan" / "generator.pt"
    return TargetFiles(name, folder, **files, model=model if model.is_file() else None,
                       generator=generator if generator.is_file() else None)  # fmt: skip


def list_targets(results) -> list[str]:
    """Videos of ``results`` with a track and a conditioning render: those with a trained generator first, by name."""
    results = Path(results)
    videos = results / "videos"
    if not videos.is_dir():
        raise StudioError(results, "is not a workflow results folder (no videos/ in it)")
    names = sorted(p.name for p in videos.iterdir() if VIDEO_NAME.match(p.name) and (p / "track.h5").is_file() and (p / "conditioning.h5").is_file())
    return sorted(names, key=lambda n: not (videos / n / "gan" / "generator.pt").is_file())


def choose_target(results, target: str | None) -> str:
    """``target`` when the folder has it; None: the first target with a generator, else the only target."""
    names = list_targets(results)
    if target is not None:
        if target not in names:
            raise StudioError(results, f"no target {target!r} with a track and conditioning render (targets: {', '.join(names) or 'none'})")
        return target
    if not names:
        raise StudioError(results, "has no video with a track and conditioning render yet: run the workflow first")
    trained = [n for n in names if (Path(results) / "videos" / n / "gan" / "generator.pt").is_file()]
    if trained or len(names) == 1:
        return (trained or names)[0]
    raise StudioError(results, f"has several targets and none is trained yet: choose one of {', '.join(names)}")


def pair_folders(results, target: str) -> dict[str, Path]:
    """``{pair name: folder}`` of the pairs driving ``target`` that have a transfer file."""
    pairs = Path(results) / "pairs"
    if not pairs.is_dir():
        return {}
    out = {}
    for p in sorted(pairs.iterdir()):
        parts = p.name.split("__")
        if len(parts) == 3 and parts[1] == target and (p / "transfer.h5").is_file():
            out[p.name] = p
    return out


def run_section(results, name: str) -> tuple[dict, Path] | None:
    """Section ``name`` of the run's config and the folder of that config: ``config.yaml`` beside the results
    folder (the ``deep-puppets`` command's output folder) or inside it, the first that has the section as a
    mapping; None when there is none."""
    results = Path(results).resolve()
    for cfg in (results.parent / "config.yaml", results / "config.yaml"):
        if cfg.is_file():
            try:
                data = yaml.safe_load(cfg.read_text()) or {}
            except yaml.YAMLError as e:
                raise StudioError(cfg, f"is not valid YAML ({e})") from None
            section = data.get(name) if isinstance(data, dict) else None
            if isinstance(section, dict):
                return section, cfg.parent
    return None


def model_spec(results) -> dict | None:
    """The ``model`` section of the run's config (:func:`run_section`; for targets fitted with a configured model,
    e.g. ICT); None when there is none."""
    found = run_section(results, "model")
    return None if found is None else {**found[0], "_base": str(found[1])}


def composite_settings(results):
    """The run's compositing (its config's ``composite`` section, :func:`run_section`; the defaults without one),
    without audio (a studio clip takes the target's own sound, not a source's)."""
    from ..reenactment import CompositeSettings

    found = run_section(results, "composite")
    return replace(CompositeSettings.from_config(found[0] if found else None), audio=False)


def load_target_model(results, files: TargetFiles, model_cfg: dict | None = None):
    """The model the target was fitted with: its person model file, else ``model_cfg`` (a config ``model`` section),
    else the run's config (:func:`model_spec`). The caller checks the track's model hash against it."""
    from ..models.person import load_person_model
    from ..models.registry import load_model

    if files.model is not None and model_cfg is None:
        return load_person_model(files.model)
    spec = dict(model_cfg or model_spec(results) or {})
    if not spec:
        raise StudioError(files.folder, "has no person model (model.h5) and no config.yaml beside the results names the model it was fitted with")
    base = spec.pop("_base", ".")
    spec = {"type": spec.get("type"), "path": spec.get("path"), "allow_pickle": spec.get("allow_pickle", False), **dict(spec.get("options") or {})}
    return load_model(spec, base_dir=base)


def resolve_video(results, path: str) -> Path:
    """A probe's video path (relative to the workflow's directory, e.g. ``results/demo/x.mp4``) as a file."""
    p = Path(path)
    results = Path(results).resolve()
    candidates = [p] if p.is_absolute() else [results.parent / p, results / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise StudioError(results, f"cannot find the target video {path} (looked beside the results folder)")
