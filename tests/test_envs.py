"""The conda environment (for --sdm conda) and requirements.txt pin the same packages."""

import re

import yaml

from .conftest import REPO


def pins_from_requirements():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return dict(line.split("==") for line in (raw.split("#")[0].strip() for raw in lines) if line)


def test_conda_env_matches_requirements():
    env = yaml.safe_load((REPO / "envs" / "deep-puppets.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert dict(p.split("==") for p in pip) == pins_from_requirements()
    assert "python=3.11" in env["dependencies"]


def test_every_requirement_is_pinned_exactly_and_torch_is_the_cpu_pin():
    pins = pins_from_requirements()
    assert pins["torch"] == "2.13.0"
    assert all(v and v[0].isdigit() for v in pins.values())


def test_every_rule_uses_the_env():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^(?:rule|checkpoint) \w+:", text, flags=re.M)
        assert len(rules) == text.count('"../envs/deep-puppets.yaml"'), smk


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    cmd = ".venv/bin/python -m pytest -q"
    assert cmd in readme and cmd in ci
