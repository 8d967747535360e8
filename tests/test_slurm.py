"""The SLURM profile on a real one-node SLURM cluster (munge, MariaDB + slurmdbd, slurmctld, slurmd).

scripts/slurm/start.sh starts the cluster under a temporary directory, the tiny demo DAG runs with
``--profile profiles/slurm``, and the test checks that the jobs went through SLURM (sacct records, the
per-job SLURM logs named by SLURM_JOB_ID) and that the outputs equal those of a local run of the same
config; scripts/slurm/stop.sh then stops exactly the daemons start.sh started.

Needs root and the Debian packages munge slurmctld slurmd slurm-client slurmdbd mariadb-server (.ci/run
installs them). Where they are missing the test skips, unless DEEP_PUPPETS_REQUIRE_SLURM=1 (set by CI), where
it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, TINY_FULL, workflow_cmd

pytestmark = pytest.mark.slow  # every test here runs the workflow

START = REPO / "scripts" / "slurm" / "start.sh"
STOP = REPO / "scripts" / "slurm" / "stop.sh"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
# what the local run and the SLURM run must agree on (logs, benchmarks and Snakemake's records differ)
COMPARED_SUFFIXES = (".json", ".h5", ".mp4", ".png", ".pt", ".csv")
SKIPPED_DIRS = ("logs", "benchmarks")


def _require_slurm():
    why = None
    if os.geteuid() != 0:
        why = "the SLURM daemons need root"
    else:
        missing = [exe for exe in ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "mariadbd")
                   if not (shutil.which(exe) or Path("/usr/sbin", exe).exists())]
        if missing:
            why = f"SLURM is not installed here (missing {', '.join(missing)}; apt-get install munge slurmctld slurmd slurm-client slurmdbd mariadb-server)"
    if why:
        if os.environ.get("DEEP_PUPPETS_REQUIRE_SLURM") == "1":
            pytest.fail(f"DEEP_PUPPETS_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


def _alive(pid: int, comm: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except OSError:
        return False


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running cluster: yields the environment (SLURM_CONF, PATH) to talk to it; stops it afterwards."""
    _require_slurm()
    state = Path(tempfile.mkdtemp(prefix="dp-slurm-"))  # short path: unix socket names are limited
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(START), str(state)], capture_output=True, text=True, timeout=300)
    started = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
    try:
        assert r.returncode == 0, f"start.sh failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        print(f"\nSLURM cluster up in {time.monotonic() - t0:.1f} s: {started}")
        env = dict(os.environ)
        for line in (state / "env").read_text().splitlines():
            m = re.match(r"export (\w+)='([^']*)'(?::\"\$PATH\")?$", line)
            assert m, line
            env[m.group(1)] = m.group(2) + (os.pathsep + os.environ["PATH"] if line.endswith('"$PATH"') else "")
        yield env
    finally:
        s = subprocess.run(["bash", str(STOP), str(state)], capture_output=True, text=True, timeout=300)
        print(s.stdout, s.stderr)
        still = {c: p for c, p in started.items() if _alive(p, c)}
        assert s.returncode == 0 and not still, f"daemons left running: {still}\n{s.stdout}\n{s.stderr}"
        assert set(started) <= set(DAEMONS)
        shutil.rmtree(state, ignore_errors=True)


def _sacct(env, *fields) -> list[list[str]]:
    r = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--allusers", "--starttime", "now-1day",
                        f"--format={','.join(fields)}"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines() if line.strip()]


def _same_json(a, b, where):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert np.isclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _same_arrays(a, b, where):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (where, a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind in "fc":
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5, equal_nan=True), (where, float(np.nanmax(np.abs(a - b))))
    else:
        assert np.array_equal(a, b), where


def _same_file(a: Path, b: Path, where: str):
    if a.suffix == ".json":
        _same_json(json.loads(a.read_text()), json.loads(b.read_text()), where)
    elif a.suffix == ".h5":
        import h5py

        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            names_a, names_b = [], []
            fa.visit(names_a.append)
            fb.visit(names_b.append)
            assert names_a == names_b, where
            for name in names_a:
                if isinstance(fa[name], h5py.Dataset):
                    _same_arrays(fa[name][()], fb[name][()], f"{where}:{name}")
    elif a.suffix == ".mp4":
        from deep_puppets.video import iter_frames, probe_video

        fa, fb = list(iter_frames(a, 0, None, probe_video(a))), list(iter_frames(b, 0, None, probe_video(b)))
        assert len(fa) == len(fb), where
        diff = max(float(np.abs(x.astype(int) - y.astype(int)).mean()) for x, y in zip(fa, fb))
        assert diff < 1.0, (where, diff)
    elif a.suffix == ".png":
        import cv2

        _same_arrays(cv2.imread(str(a)), cv2.imread(str(b)), where)
    elif a.suffix == ".pt":
        import torch

        sa, sb = torch.load(a, map_location="cpu", weights_only=True), torch.load(b, map_location="cpu", weights_only=True)
        flat_a, flat_b = _flatten(sa), _flatten(sb)
        assert set(flat_a) == set(flat_b), where
        for k in flat_a:
            va, vb = flat_a[k], flat_b[k]
            if hasattr(va, "numpy"):
                _same_arrays(va.numpy(), vb.numpy(), f"{where}:{k}")
    else:  # csv
        assert a.read_bytes() == b.read_bytes() or _csv_close(a, b), where


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


TIMING_COLUMNS = {"elapsed_s", "it_per_s"}  # wall-clock figures in the training log


def _csv_close(a: Path, b: Path) -> bool:
    ra, rb = a.read_text().splitlines(), b.read_text().splitlines()
    if len(ra) != len(rb) or not ra or ra[0] != rb[0]:
        return False
    keep = [i for i, name in enumerate(ra[0].split(",")) if name not in TIMING_COLUMNS]
    for x, y in zip(ra[1:], rb[1:]):
        xs, ys = x.split(","), y.split(",")
        if len(xs) != len(ys):
            return False
        for i in keep:
            u, v = xs[i], ys[i]
            try:
                if not np.isclose(float(u), float(v), rtol=1e-5, atol=1e-6, equal_nan=True):
                    return False
            except ValueError:
                if u != v:
                    return False
    return True


SLURM_TARGETS = ("pairs/demo_source__demo_target__pose/reenactment.mp4", "videos/demo_target/evaluation/summary.json",
                 "videos/demo_source/diagnostics/tracking.json")


def compared_outputs(results: Path) -> list[Path]:
    return sorted(p.relative_to(results) for p in results.rglob("*")
                  if p.is_file() and p.suffix in COMPARED_SUFFIXES and p.relative_to(results).parts[0] not in SKIPPED_DIRS
                  and "checkpoints" not in p.parts)


def test_demo_dag_runs_through_slurm_and_matches_a_local_run(slurm_cluster, tiny_full_run, tmp_path):
    env = slurm_cluster
    work = tmp_path / "slurm_run"
    work.mkdir()
    cmd = workflow_cmd(work, TINY_FULL, "--profile", str(REPO / "profiles" / "slurm"),
                       # test-only: check job states after 2 s, not the plugin's 40 s; ask sacct (accounting)
                       "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
                       "--slurm-status-command", "sacct", "--slurm-no-account",
                       # the stages up to the videos and the scores (the reports and exports after them are local,
                       # cheap jobs, tested elsewhere): every cluster rule, without their per-job overhead
                       *[f"results/{t}" for t in SLURM_TARGETS])
    t0 = time.monotonic()
    # the plugin waits for job states for ever if they never come: always under a hard time limit
    r = subprocess.run(["timeout", "-k", "20", "1200", *cmd], cwd=work, env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"snakemake through SLURM failed ({r.returncode}) after {took:.0f} s:\n{out[-6000:]}"
    assert "executor slurm" in out.lower() or "SLURM run ID" in out, out[-3000:]

    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", out))
    assert submitted, out[-3000:]
    rows = _sacct(env, "JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "AllocTRES", "Comment")
    mine = {row[0]: row for row in rows if row[0] in submitted}
    lines = ["|".join(row) for row in rows if row[0] in submitted]
    (work / "sacct.txt").write_text("\n".join(lines) + "\n")
    print(f"\nsnakemake through SLURM took {took:.0f} s, {len(submitted)} SLURM jobs; sacct:\n" + "\n".join(lines))
    assert set(mine) == set(submitted), (sorted(submitted), rows)
    assert all(row[2] == "COMPLETED" and row[3] == "0:0" for row in mine.values()), lines

    # every job's own SLURM log (named by its SLURM_JOB_ID) shows Snakemake running the rule inside the job
    rules_seen = set()
    for jobid, log in submitted.items():
        log = Path(log)
        assert log.name == f"{jobid}.log" and log.is_file(), log
        text = log.read_text()
        assert "--executor slurm-jobstep" in text, log
        rules_seen.add(log.parent.parent.name.removeprefix("rule_"))
    assert {"probe", "landmarks", "fit_segment", "render_track", "gan_train", "gan_synthesize",
            "evaluate"} <= rules_seen, rules_seen
    # local rules stayed on the submitting machine, and ran
    assert not rules_seen & {"demo_clip", "landmarks_summary", "track"}, rules_seen
    assert re.search(r"^localrule demo_clip:$", out, re.M) and re.search(r"^localrule track:$", out, re.M), out[-3000:]
    # the training job got a GPU from SLURM (the test cluster's GRES stands in for one)
    train_ids = [j for j, log in submitted.items() if "/rule_gan_train/" in log]
    assert train_ids and all("gres/gpu=1" in mine[j][5] for j in train_ids), [mine[j] for j in train_ids]

    # the same outputs as the local run of the same config
    local, remote = tiny_full_run / "results", work / "results"
    files = compared_outputs(remote)
    assert len(files) > 25 and set(files) <= set(compared_outputs(local)), set(files) - set(compared_outputs(local))
    assert {Path(t) for t in SLURM_TARGETS} <= set(files), SLURM_TARGETS
    for rel in files:
        _same_file(local / rel, remote / rel, str(rel))

    # and a second run through SLURM schedules nothing
    r = subprocess.run(["timeout", "-k", "20", "300", *cmd, "-n"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
