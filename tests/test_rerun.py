"""Only what changed reruns. One finished tiny run (shared, see conftest.tiny_full_run) is copied for each
scenario and the change is judged by a dry run: the jobs Snakemake would start, by rule and wildcards."""

import hashlib
import json
import re
from collections import Counter

import h5py
import pytest
import torch

from .conftest import TINY_FULL, copy_run, merged, planned_jobs, run_workflow

pytestmark = pytest.mark.slow  # every test here runs the workflow

UPSTREAM_OF_FITS = {"demo_clip", "probe", "landmarks", "landmarks_summary", "person_model"}
REPORTS = {"overlay_page", "evaluation_pages", "reenactment_pages", "report_page"}  # rules/report.smk
FITS_AND_DOWNSTREAM = {"fit_identity", "fit_segment", "track", "texture", "diagnostics", "transfer", "render_track",
                       "render_pair", "gan_flow", "gan_train", "gan_synthesize", "evaluate", "export_face",
                       "expression_fidelity", "output_fidelity", "pair_ood"} | REPORTS


@pytest.fixture
def run_copy(tiny_full_run, tmp_path):
    return copy_run(tiny_full_run, tmp_path / "run")


def rules_of(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs if rule != "all")


def test_nothing_changed_schedules_nothing(run_copy):
    assert planned_jobs(run_copy) == []


def test_gan_parameter_reruns_only_training_synthesis_and_reports(run_copy):
    jobs = planned_jobs(run_copy, merged(TINY_FULL, {"gan": {"lambda_l1": 5.0}}))
    assert rules_of(jobs) == Counter({"gan_train": 1, "gan_synthesize": 1, "evaluate": 1, "output_fidelity": 1, "evaluation_pages": 1, "reenactment_pages": 1,
                                      "report_page": 1}), jobs


def test_smoothing_weight_reruns_fits_and_everything_downstream_not_landmarks(run_copy):
    jobs = planned_jobs(run_copy, merged(TINY_FULL, {"fit": {"lambda_q": 2.0}}))
    rules = set(rules_of(jobs))
    assert not rules & UPSTREAM_OF_FITS, jobs
    assert rules == FITS_AND_DOWNSTREAM, jobs
    # both videos are refitted: 40 frames in segments of 24 with overlap 6 -> 2 segments each
    assert rules_of(jobs)["fit_segment"] == 4 and rules_of(jobs)["track"] == 2


def test_new_model_refits_in_one_run_though_the_landmark_gate_reruns_first(run_copy, ict_model_path):
    """A new model changes the landmark gate's params (its faces needed) and the fits': one snakemake call
    reruns the gate AND refits (an ancient() gate made Snakemake stop after the gate, reporting success)."""
    config = merged(TINY_FULL, {"model": {"type": "ict", "path": str(ict_model_path)}})
    target = "results/export/videos/demo_source/arkit.csv"  # an ARKit export reads a track fitted with ICT
    r = run_workflow(run_copy, "--cores", "2", target, config=config)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert re.search(r"^localrule landmarks_summary:$", out, re.M), out[-5000:]
    assert (run_copy / target).exists(), out[-5000:]
    with h5py.File(run_copy / "results/videos/demo_source/track.h5") as f:
        assert f.attrs["model"].startswith("ict-facekit-light"), dict(f.attrs)
    assert planned_jobs(run_copy, config, target) == []


TARGET_DIR = "results/videos/demo_target"
GENERATOR = f"{TARGET_DIR}/gan/generator.pt"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _training_log(work) -> str:
    return (work / "results" / "logs" / "gan_train" / "demo_target.log").read_text()


def _assert_trained_from_scratch(log: str, iterations: int = TINY_FULL["gan"]["iterations"]) -> None:
    assert "resuming from" not in log, log[-3000:]
    every = TINY_FULL["gan"]["log_every"]
    assert [int(i) for i in re.findall(rf"iter (\d+)/{iterations}\b", log)] == list(range(every, iterations + 1, every)), log[-3000:]
    assert "final generator" in log and f"(iteration {iterations})" in log, log[-3000:]


def test_fit_weight_change_retrains_the_generator_on_the_new_conditioning(run_copy):
    """Upstream change (a fit weight): the generator is trained afresh, all iterations, on the new conditioning and
    flow; the run folder records their content hashes; the superseded run folder is gone."""
    gan = run_copy / TARGET_DIR / "gan"
    old = torch.load(gan / "generator.pt", weights_only=True)
    old_runs = set(gan.glob("train-*"))
    config = merged(TINY_FULL, {"fit": {"lambda_q": 2.0}})
    r = run_workflow(run_copy, "--cores", "2", GENERATOR, config=config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    _assert_trained_from_scratch(_training_log(run_copy))
    new = torch.load(gan / "generator.pt", weights_only=True)
    assert any(not torch.equal(old["G"][k], new["G"][k]) for k in old["G"])
    inputs = {"conditioning": _sha256(run_copy / TARGET_DIR / "conditioning.h5"), "flow": _sha256(gan / "flow.h5")}
    assert inputs != json.loads(old["inputs"])
    runs = list(gan.glob("train-*"))
    assert len(runs) == 1 and runs[0] not in old_runs, (runs, old_runs)  # the superseded folder was removed
    assert json.loads((runs[0] / "done.json").read_text())["inputs"] == inputs == json.loads(new["inputs"])
    assert planned_jobs(run_copy, config, GENERATOR) == []


def test_forcerun_gan_train_trains_again(run_copy):
    r = run_workflow(run_copy, "--cores", "2", "--forcerun", "gan_train", GENERATOR)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    log = _training_log(run_copy)
    assert "completed before (iteration 20): training afresh" in log, log[-3000:]
    _assert_trained_from_scratch(log)


def test_new_source_video_runs_only_its_branch_and_its_pair(run_copy):
    clip = run_copy / "extra" / "new_source.mp4"
    clip.parent.mkdir()
    clip.write_bytes((run_copy / "results" / "demo" / "demo_source.mp4").read_bytes())
    config = merged(TINY_FULL, {
        "videos": {"new_src": str(clip)},
        "pairs": [{"source": "demo_source", "target": "demo_target"}, {"source": "new_src", "target": "demo_target"}],
    })
    jobs = [(rule, wc) for rule, wc in planned_jobs(run_copy, config) if rule != "all"]
    assert ("probe", "video=new_src") in jobs, jobs
    # its segment jobs appear once probe (a checkpoint) has counted the frames: run it, plan again
    r = run_workflow(run_copy, "--cores", "1", "results/videos/new_src/probe.json", config=config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = [(rule, wc) for rule, wc in planned_jobs(run_copy, config) if rule != "all"]
    for rule, wildcards in jobs:
        if rule == "report_page":  # the report shows every video and pair: it is rewritten
            continue
        assert re.search(r"\b(video|pair|name)=new_src(__demo_target__pose)?\b", wildcards), (rule, wildcards, jobs)
    rules = set(rules_of(jobs))
    # the new source's own branch ...
    assert {"landmarks", "landmarks_summary", "person_model", "fit_identity", "fit_segment", "track",
            "diagnostics"} <= rules
    assert rules_of(jobs)["landmarks"] == 2 and rules_of(jobs)["fit_segment"] == 2
    # ... and its pair; the target's generator is reused, not retrained
    assert {"transfer", "render_pair", "gan_synthesize"} <= rules
    assert not rules & {"demo_clip", "gan_flow", "gan_train", "render_track", "evaluate"}, jobs
