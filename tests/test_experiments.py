"""Experiments: the `experiments` section checked at parse time, its expansion into variant × seed runs, the
aggregation over seeds (mean ± spread), and one workflow run of two tiny variants on a copy of the tiny run."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from deep_puppets import config as dp_config
from deep_puppets import experiments as ex
from deep_puppets.errors import ConfigError
from deep_puppets.gan.inference import GENERATOR_FORMAT
from deep_puppets.gan.torch_files import load_verified
from deep_puppets.jobs.experiments import experiment_table

from .conftest import TINY_FULL, copy_run, merged, run_workflow


def plan_of(section: dict, targets=("demo_target",), gan=None):
    cfg = dp_config.prepare({"experiments": section, **({"gan": gan} if gan else {})})
    return cfg, ex.expand_experiments(cfg, list(targets))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"variants": {"L1": {"render": {"size": 128}}}}, "'experiments.variants.L1': unknown key 'render' - a variant changes gan settings only"),
        ({"variants": {"L1": {"gan": {"windw": 1}}}}, "'experiments.variants.L1.gan': unknown gan key 'windw'"),
        ({"variants": {"L1": {"gan": {"window": 0}}}}, "'experiments.variants.L1.gan.window': 0 is less than the minimum of 1"),
        ({"variants": {"a": {"gan": {"held_out_fraction": 0.5}}}}, "'experiments.variants.a.gan.held_out_fraction': a variant may not change it"),
        ({"variants": {"a": {"gan": {"seed": 3}}}}, "'experiments.variants.a.gan.seed': a variant may not change it (list the seeds in 'seeds')"),
        ({"variants": {"2x": {"gan": {}}}}, "'experiments.variants.2x': a variant's name must be an identifier"),
        ({"variants": {"a-b": {"gan": {}}}}, "'experiments.variants.a-b': a variant's name must be an identifier"),
        ({"variants": {"default": {"gan": {}}}}, "'experiments.variants.default': the name 'default' is reserved"),
        ({"variants": {"deep": {"gan": {"gen_depth": 9}}}}, "'experiments.variants.deep': 'render.size'"),
        ({"targets": ["nobody"]}, "'experiments.targets[0]': 'nobody' is not the target of a pair"),
        ({"seeds": [1, 1]}, "'experiments.seeds': [1, 1] lists a seed twice"),
        ({"variants": {"a": {"gan": {}, "seeds": []}}}, "'experiments.variants.a.seeds': [] is not a non-empty list of seeds"),
    ],
)
def test_bad_sections_are_one_line_naming_the_key(section, message):
    with pytest.raises(ConfigError) as e:
        plan_of(section)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_section_key_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match=r"^unknown key 'variant' in 'experiments'$"):
        dp_config.prepare({"experiments": {"variant": {}}})


def test_expansion_default_first_seeds_and_targets():
    cfg, plan = plan_of({"seeds": [0, 1], "variants": {"L5": {"gan": {"window": 5}}, "no_dv": {"gan": {"lambda_gan_video": 0}, "seeds": [7]}}},
                        targets=["b", "a"])
    assert plan["targets"] == ["a", "b"]  # default: every target
    assert list(plan["variants"]) == ["default", "L5", "no_dv"]
    assert ex.experiment_runs(plan) == [("default", 0), ("default", 1), ("L5", 0), ("L5", 1), ("no_dv", 7)]
    g = ex.variant_gan(cfg, plan, "L5", "1")
    main = dp_config.job_params(cfg, "gan")  # the main run's gan params (keys added since, at their neutral value, left out)
    assert g["window"] == 5 and g["seed"] == 1 and {k: v for k, v in g.items() if k not in ("window", "seed")} == {
        k: v for k, v in main.items() if k not in ("window", "seed")}
    # the default variant with the config's own seed is exactly the main run's generator's params
    assert ex.variant_gan(cfg, plan, "default", cfg["gan"]["seed"]) == main
    # no seeds anywhere: the gan section's seed; targets chosen explicitly
    cfg, plan = plan_of({"targets": ["a"]}, targets=["a", "b"], gan={"seed": 4})
    assert plan == {"targets": ["a"], "variants": {"default": {"overrides": {}, "seeds": [4]}}}


def summary(psnr_face, ssim_face=0.5, e_col=0.1, flicker=0.01):
    regions = {r: {"psnr": psnr_face - i, "ssim": ssim_face, "e_col": e_col} for i, r in enumerate(("face", "head", "frame"))}
    excess = {"gan": {"face": flicker, "crop": flicker / 2}, "nearest": {"face": 0.05, "crop": 0.03}}
    return {"mean": {"gan": regions, "nearest": {r: {"psnr": 10.0, "ssim": 0.3, "e_col": 0.2} for r in regions}},
            "flicker": {"excess_over_real": excess}}


def test_aggregation_mean_and_spread_over_seeds():
    records = [ex.experiment_record("default", 0, summary(20.0, flicker=0.01), 10.0), ex.experiment_record("default", 1, summary(22.0, flicker=0.03), 12.0),
               ex.experiment_record("L1", 0, summary(25.0, 0.7), 5.0)]
    t = ex.variant_table(records, {"L1": {"window": 1}})
    assert list(t["variant"]) == ["default", "L1"]
    d, one = t.iloc[0], t.iloc[1]
    assert d["n_seeds"] == 2 and d["seeds"] == "0 1"
    assert d["face_psnr"] == pytest.approx(21.0) and d["face_psnr_sd"] == pytest.approx(math.sqrt(2))
    assert d["head_psnr"] == pytest.approx(20.0) and d["minutes"] == pytest.approx(11.0) and d["minutes_sd"] == pytest.approx(math.sqrt(2))
    assert one["face_ssim"] == pytest.approx(0.7) and math.isnan(one["face_psnr_sd"]) and one["settings"] == "window=1"
    # the GAN's flicker above the real video's, per region, mean and spread like the rest
    assert d["face_flicker_excess"] == pytest.approx(0.02) and d["face_flicker_excess_sd"] == pytest.approx(math.sqrt(2) * 0.01)
    assert d["crop_flicker_excess"] == pytest.approx(0.01)
    # a baseline's row reads that method; a summary without flicker gives NaN, not an error
    base = ex.experiment_record("nearest", 0, summary(20.0), 0.0, method="nearest")
    assert base["face_psnr"] == 10.0 and base["face_flicker_excess"] == 0.05 and base["crop_flicker_excess"] == 0.03
    bare = ex.experiment_record("x", 0, {"mean": summary(20.0)["mean"]}, 1.0)
    assert bare["face_psnr"] == 20.0 and math.isnan(bare["face_flicker_excess"])
    with pytest.raises(Exception, match="mean"):
        ex.experiment_record("x", 0, {"mean": {"nearest": {}}}, 1.0)


def fidelity(mouth_r, mouth_a, eyes=(0.8, 0.9)):
    return {"vs_conditioning": {"mouth_open": {"r": mouth_r, "a": mouth_a}, "eye_aperture_left": {"r": eyes[0], "a": eyes[1]},
                                "eye_aperture_right": {"r": eyes[0] - 0.1, "a": eyes[1] + 0.1}, "yaw": {"r": 0.1, "a": 5.0}}}


def test_motion_columns_are_the_pairs_means_against_the_conditioning():
    m = ex.motion_record([fidelity(0.9, 0.8), fidelity(0.7, float("nan"))], where=["a.json", "b.json"])
    assert m["mouth_r"] == pytest.approx(0.8) and m["mouth_a"] == pytest.approx(0.8)  # a NaN pair is left out
    assert m["eyes_r"] == pytest.approx(0.75) and m["eyes_a"] == pytest.approx(0.95)  # both eyes, both pairs
    assert all(math.isnan(v) for v in ex.motion_record([]).values())
    with pytest.raises(Exception, match="b.json.*output-fidelity"):  # the file that lacks the value is named
        ex.motion_record([fidelity(0.9, 0.8), {"vs_source": {}}], where=["a.json", "b.json"])


def test_table_job_writes_csv_html_and_figure(tmp_path):
    runs = [("default", 0), ("default", 1), ("L1", 0)]
    summaries, benchmarks = [], []
    for (variant, seed), psnr, secs in zip(runs, (20.0, 22.0, 25.0), (600.0, 720.0, 300.0)):
        p = tmp_path / f"{variant}{seed}.json"
        p.write_text(json.dumps(summary(psnr)))
        b = tmp_path / f"{variant}{seed}.tsv"
        b.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{secs}\t0:10:00\t100\t{secs / 2}\n")
        summaries.append(p)
        benchmarks.append(b)
    pairs, fid = ["a__v__expr", "b__v__pose"], []
    for (variant, seed), mouth_a in zip(runs, (0.6, 0.8, 1.0)):
        for pair, r in zip(pairs, (0.9, 0.7)):
            f = tmp_path / f"{variant}{seed}_{pair}.json"
            f.write_text(json.dumps(fidelity(r, mouth_a)))
            fid.append(f)
    outs = {"csv": tmp_path / "table.csv", "html": tmp_path / "table.html", "png": tmp_path / "quality_vs_minutes.png"}
    with pytest.raises(ValueError, match="output-fidelity"):
        experiment_table(video="v", runs=runs, summaries=summaries, benchmarks=benchmarks, overrides={}, outs=outs, pairs=pairs, fidelity=fid[:-1])
    experiment_table(video="v", runs=runs, summaries=summaries, benchmarks=benchmarks, overrides={"default": {}, "L1": {"window": 1}}, outs=outs,
                     pairs=pairs, fidelity=fid)
    t = pd.read_csv(outs["csv"])
    assert t["mouth_r"].tolist() == pytest.approx([0.8, 0.8]) and t["mouth_a"].tolist() == pytest.approx([0.7, 1.0])
    assert t["mouth_a_sd"].iloc[0] == pytest.approx(math.sqrt(2) * 0.1) and "mouth_a" in outs["html"].read_text()
    assert list(t["variant"]) == ["default", "L1"] and t["minutes"].tolist() == pytest.approx([11.0, 5.0])
    assert t["cpu_minutes"].tolist() == pytest.approx([5.5, 2.5])
    assert "21.00 ± 1.41" in outs["html"].read_text() and "face_flicker_excess" in outs["html"].read_text()
    assert t["face_flicker_excess"].tolist() == pytest.approx([0.01, 0.01])
    assert outs["png"].stat().st_size > 10_000


def decoded(mp4) -> np.ndarray:
    """Every frame of a video, (T, H, W, 3) uint8."""
    import av

    with av.open(str(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def generator_state(path) -> tuple[dict, dict]:
    """(weights, settings) of a generator file."""
    state = load_verified(path, GENERATOR_FORMAT, "generator file")
    return state["G"], json.loads(state["settings"])


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_experiments_target_on_the_tiny_run(tiny_full_run, tmp_path):
    """Two tiny variants × 1 seed beside the default on a copy of the tiny run: nothing upstream reruns, the
    variants' generators differ, the default variant's equals the main run's, each run re-enacts the target's
    pairs (the default's as the main run does, the variants' differently) and the table has one row each."""
    work = copy_run(tiny_full_run, tmp_path / "run")
    config = merged(TINY_FULL, {"experiments": {"variants": {"L1": {"gan": {"window": 1, "iterations": 4}},
                                                             "no_warp": {"gan": {"lambda_warp": 0, "iterations": 4}}}}})
    default = run_workflow(work, "-n", config=config, timeout=300)  # the default run ignores the section
    assert default.returncode == 0 and "Nothing to be done" in default.stdout + default.stderr, (default.stdout + default.stderr)[-3000:]
    dry = run_workflow(work, "-n", "experiments", config=config, timeout=300)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    planned = {line.split()[1].rstrip(":") for line in dry.stdout.splitlines() if line.startswith(("rule ", "localrule "))}
    assert planned == {"experiment_train", "experiment_evaluate", "experiment_synthesize", "experiment_output_fidelity", "experiment_table",
                       "experiments"}, planned
    r = run_workflow(work, "--cores", "2", "experiments", config=config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    exp = work / "results" / "experiments" / "demo_target"
    runs = {v: generator_state(exp / v / "seed0" / "generator.pt") for v in ("default", "L1", "no_warp")}
    main, main_settings = generator_state(work / "results" / "videos" / "demo_target" / "gan" / "generator.pt")
    assert runs["default"][1] == main_settings and same_weights(runs["default"][0], main)  # same settings, same seed: same generator
    assert runs["L1"][1]["window"] == 1 and runs["no_warp"][1]["lambda_warp"] == 0 and runs["no_warp"][1]["iterations"] == 4
    assert not same_weights(runs["L1"][0], main) and not same_weights(runs["no_warp"][0], main)
    assert not same_weights(runs["L1"][0], runs["no_warp"][0])
    t = pd.read_csv(exp / "table.csv")
    assert list(t["variant"]) == ["default", "L1", "no_warp"] and (t["n_seeds"] == 1).all()
    assert t["face_psnr"].notna().all() and (t["minutes"] > 0).all() and (t["cpu_minutes"] > 0).all()
    for v in ("default", "L1", "no_warp"):  # the flicker columns are the evaluation's, run by run
        flicker = json.loads((exp / v / "seed0" / "evaluation" / "summary.json").read_text())["flicker"]["excess_over_real"]["gan"]
        assert t.set_index("variant").loc[v, "face_flicker_excess"] == pytest.approx(flicker["face"])
    assert t["face_flicker_excess"].notna().all()
    # motion fidelity of every run's re-enactments: the default's are the main run's, frame for frame
    pairs = sorted(p.name for p in (exp / "default" / "seed0" / "pairs").iterdir())
    assert pairs and all("__demo_target__" in p for p in pairs), pairs
    for p in pairs:
        main_fid = json.loads((work / "results" / "pairs" / p / "output_fidelity" / "summary.json").read_text())
        runs_fid = {v: json.loads((exp / v / "seed0" / "pairs" / p / "output_fidelity" / "summary.json").read_text()) for v in runs}
        assert runs_fid["default"]["vs_conditioning"]["mouth_open"] == main_fid["vs_conditioning"]["mouth_open"]
        frames = {v: decoded(exp / v / "seed0" / "pairs" / p / "reenactment.mp4") for v in runs}
        assert np.array_equal(frames["default"], decoded(work / "results" / "pairs" / p / "reenactment.mp4"))
        assert not np.array_equal(frames["L1"], frames["default"]) and not np.array_equal(frames["no_warp"], frames["default"])
    assert t["mouth_r"].notna().all() and t["mouth_a"].notna().all() and t["eyes_r"].notna().all()
    assert (exp / "table.html").exists() and (exp / "quality_vs_minutes.png").exists()
