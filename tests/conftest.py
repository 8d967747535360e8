"""Shared fixtures. Real clips and licensed models come from ../shared (beside the checkout) and the tests
that need them skip cleanly when it is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEP_PUPPETS_SHARED", REPO.parent / "shared"))


def shared_file(rel: str) -> Path:
    """Path of a file under ../shared, or skip the test when it is not there."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only available on development machines)")
    return p


@pytest.fixture
def real_clip():
    return shared_file("data/videos/LivePortrait__d6.mp4")


@pytest.fixture
def ict_model_path():
    return shared_file("models/ict-facekit-light/ict_facekit_light_packed.npz")


# ------------------------------------------------------------------------------------------------------------
# Whole-workflow helpers shared by tests/test_rerun.py, tests/test_faults.py and tests/test_slurm.py.

# The whole DAG (demo -> landmarks -> fits -> renders -> GAN -> synthesis -> evaluation) in about two minutes
# on 2 cores: .test/config_tiny/config.yaml, the file the README's "try it small" line runs.
TINY_CONFIG = REPO / ".test" / "config_tiny" / "config.yaml"
TINY_FULL = yaml.safe_load(TINY_CONFIG.read_text())


def merged(base: dict, change: dict) -> dict:
    """``base`` with the sections of ``change`` merged in one level deep (a copy)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in change.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def workflow_cmd(workdir, config: dict, *args) -> list[str]:
    """The snakemake command line for the workflow in ``workdir``: shipped config overridden by ``config``."""
    override = Path(workdir) / "test-config.yaml"
    override.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(REPO / "config.yaml"), str(override), *args]


def run_workflow(workdir, *args, config=TINY_FULL, timeout=900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(workflow_cmd(workdir, config, *args), capture_output=True, text=True, timeout=timeout, **kw)


def planned_jobs(workdir, config=TINY_FULL, *args) -> list[tuple[str, str]]:
    """``(rule, wildcards)`` of every job a dry run of the workflow in ``workdir`` would start."""
    r = run_workflow(workdir, "-n", *args, config=config, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    jobs, rule = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line.strip())
        if m:
            if rule is not None:
                jobs.append((rule, ""))
            rule = m.group(1)
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule is not None:
            jobs.append((rule, m.group(1)))
            rule = None
    if rule is not None:
        jobs.append((rule, ""))
    return jobs


def copy_run(src, dst) -> Path:
    """A copy of a finished run (times kept, so nothing is out of date), independent of the original."""
    shutil.copytree(src, dst, symlinks=True)
    return Path(dst)


@pytest.fixture(scope="session")
def tiny_full_run(tmp_path_factory):
    """One finished tiny run of the whole workflow (local, default profile). Never change it: copy_run it."""
    work = tmp_path_factory.mktemp("tiny_full")
    r = run_workflow(work, "--cores", "2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work


# The puppet studio's trained target (tests/test_studio_engine.py and the studio's browser test): the tiny demo
# with 128² crops and a generator trained 300 iterations with one D_I scale and no D_V or warp term; only the
# target's generator and the pair's transfer are built. MediaPipe finds the face on every generated crop and
# measures the "mouth open" control's opening on most frames (9 of 12 training frames checked, mean gain 0.12
# IOD); yaw on all. Weaker fixtures failed that: the tiny run (64², 20 iterations) and 64²/600 iterations (1 of
# 12 frames), 128²/150 iterations (5 of 12). 2m08 for the run on 2 cores shared with other jobs (training 104 s).
STUDIO_CONFIG = merged(TINY_FULL, {
    "render": {"size": 128},
    "gan": {"iterations": 300, "checkpoint_every": 300, "log_every": 25, "eval_frames": 0, "gen_depth": 5, "di_num_D": 1,
            "lambda_gan_video": 0, "lambda_warp": 0, "clip_len": 2},
})  # fmt: skip
STUDIO_TARGETS = ("results/videos/demo_target/gan/generator.pt", "results/pairs/demo_source__demo_target__pose/transfer.h5")


@pytest.fixture(scope="session")
def studio_run(tmp_path_factory):
    """The results folder of one finished studio run (above). Never change it: copy_run its parent.
    ``DEEP_PUPPETS_STUDIO_RUN=DIR`` reuses a finished one (a results folder made with STUDIO_CONFIG) while developing."""
    reuse = os.environ.get("DEEP_PUPPETS_STUDIO_RUN")
    if reuse:
        return Path(reuse)
    work = tmp_path_factory.mktemp("studio_run")
    r = run_workflow(work, "--cores", "2", *STUDIO_TARGETS, config=STUDIO_CONFIG)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work / "results"
