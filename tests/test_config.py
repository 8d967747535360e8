"""Config validation: defaults filled, every key described, one-line errors naming the key."""

import subprocess
import sys

import pytest
import yaml

from deep_puppets import config as dp_config
from deep_puppets.errors import ConfigError

from .conftest import REPO


def walk(schema, path=""):
    if schema.get("type") == "object" or "properties" in schema:
        for k, sub in schema.get("properties", {}).items():
            yield f"{path}.{k}".lstrip("."), sub
            yield from walk(sub, f"{path}.{k}")
    if "items" in schema:
        yield from walk(schema["items"], path + "[]")


def test_every_key_has_a_description_and_a_default():
    schema = dp_config.load_schema()
    for key, sub in walk(schema):
        assert sub.get("description"), f"{key} has no description"
        if not key.startswith("pairs[]."):
            assert "default" in sub, f"{key} has no default"


def test_defaults_fill_and_demo_is_added():
    cfg = dp_config.prepare({})
    assert cfg["segments"] == {"length": 300, "overlap": 30}
    assert set(cfg["videos"]) == {"demo_source", "demo_target"}
    assert cfg["pairs"] == [{"source": "demo_source", "target": "demo_target", "mode": "pose+expression"}]
    assert cfg["landmarks"]["crop_scale"] == 1.5


def test_shipped_config_is_valid():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    dp_config.prepare(cfg, REPO)


def test_user_videos_replace_demo(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    cfg = dp_config.prepare(
        {"videos": {"alice": "a.mp4", "bob": "b.mp4"}, "pairs": [{"source": "alice", "target": "bob", "mode": "expression"}]},
        tmp_path,
    )
    assert set(cfg["videos"]) == {"alice", "bob"}
    assert cfg["pairs"][0]["mode"] == "expression"


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"sgments": {}}, "unknown key 'sgments'"),
        ({"segments": {"lenght": 10}}, "unknown key 'lenght' in 'segments'"),
        ({"segments": {"length": -5}}, "'segments.length': -5 is less than the minimum"),
        ({"segments": {"length": 20, "overlap": 20}}, "'segments.overlap' .* smaller"),
        ({"demo": {"size": "big"}}, "'demo.size': 'big' is not of type 'integer'"),
        ({"pairs": [{"source": "ghost", "target": "demo_target"}]}, r"'pairs\[0\].source': unknown video 'ghost'"),
        ({"pairs": [{"source": "demo_source", "target": "demo_target", "mode": "dance"}]}, r"'pairs\[0\].mode': 'dance' is not one of"),
        ({"videos": {"x": "missing/file.mp4"}}, "'videos.x': file 'missing/file.mp4' does not exist"),
        ({"videos": {"bad name": "a.mp4"}}, "'videos': name 'bad name'"),
    ],
)
def test_errors_are_one_line_and_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match) as e:
        dp_config.prepare(cfg)
    assert "\n" not in str(e.value)


def test_snakemake_stops_before_any_job_with_the_key(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"),
         "--configfile", str(REPO / "config.yaml"), "--config", "pairs=[{'source':'ghost','target':'demo_target'}]"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0
    assert "config error: 'pairs[0].source': unknown video 'ghost'" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "section,factory",
    [
        ("landmarks", "deep_puppets.landmarks:LandmarkSettings"),
        ("fit", "deep_puppets.fitting:FitSettings"),
        ("transfer", "deep_puppets.transfer:TransferSettings"),
        ("gan", "deep_puppets.gan.train:TrainSettings"),
    ],
)
def test_schema_defaults_are_the_code_defaults(section, factory):
    """The schema's defaults (what users read) and the settings classes' defaults (what runs) agree."""
    import dataclasses
    import importlib

    module, name = factory.split(":")
    cls = getattr(importlib.import_module(module), name)
    defaults = dp_config.prepare({})[section]
    code = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in defaults.items():
        if key in code:
            want = list(code[key]) if isinstance(code[key], tuple) else code[key]
            assert value == pytest.approx(want) if isinstance(want, float) else value == want, f"{section}.{key}"
    settings = cls.from_config({k: v for k, v in defaults.items() if k in code})
    assert settings is not None
