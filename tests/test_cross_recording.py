"""Cross-recording self-reenactment: the `cross_recording` section checked at parse time, retrieval across
recordings, the table, one workflow run on a copy of the tiny run (scored on the other demo clip: the same photo,
other motion), and the job given the target's own clip as the other recording, whose held-out frames must score
as in the target's own held-out evaluation."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from deep_puppets import config as dp_config
from deep_puppets import cross_recording as cr
from deep_puppets.errors import ConfigError, InputError
from deep_puppets.jobs.cross_recording import cross_recording, cross_recording_table
from deep_puppets.models import facemesh

from .conftest import TINY_FULL, copy_run, merged, run_workflow


def plan_of(section, videos=None):
    return cr.plan(dp_config.prepare({"videos": videos or {}, "cross_recording": section}))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([{"train": "nobody", "test": ["demo_source"]}], "'cross_recording[0].train': unknown video 'nobody' (known: demo_source, demo_target)"),
        ([{"train": "demo_target", "test": ["demo_source", "ghost"]}], "'cross_recording[0].test[1]': unknown video 'ghost'"),
        ([{"train": "demo_target", "test": ["demo_target"]}], "'cross_recording[0].test[0]': 'demo_target' is the training recording itself"),
        ([{"train": "demo_target", "test": ["demo_source"]}, {"train": "demo_target", "test": ["demo_source"]}],
         "'cross_recording[1].test[0]': 'demo_target' -> 'demo_source' is listed twice"),
    ],
)
def test_bad_entries_are_one_line_naming_the_key(section, message):
    with pytest.raises(ConfigError) as e:
        plan_of(section)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("entry", [{"train": "demo_target"}, {"train": "demo_target", "test": []}, {"train": "demo_target", "test": ["demo_source"], "x": 1}])
def test_malformed_entries_are_refused_by_the_schema(entry):
    with pytest.raises(ConfigError, match=r"cross_recording"):
        plan_of([entry])


def test_plan_expands_entries_in_order():
    assert plan_of([]) == []
    videos = {"a": "a.mp4", "b": "b.mp4", "c": "c.mp4"}
    runs = cr.plan({"videos": videos, "cross_recording": [{"train": "b", "test": ["c", "a"]}, {"train": "a", "test": ["b"]}]})
    assert runs == [("b", "c"), ("b", "a"), ("a", "b")]


def test_retrieval_across_recordings_picks_the_training_frame_with_the_same_signals():
    rng = np.random.default_rng(0)
    library = rng.normal(size=(30, 4)) * [1.0, 10.0, 0.1, 3.0]  # columns of very different scales
    train = np.arange(20)  # frames 20-29 are the library's held-out part: never retrieved
    picks = rng.choice(30, size=12)
    query = library[picks] + rng.normal(scale=1e-3, size=(12, 4)) * [1.0, 10.0, 0.1, 3.0]
    got = cr.nearest_across(library, train, query)
    assert ((got < 20) & np.isin(got, train)).all()
    in_train = picks < 20
    assert (got[in_train] == picks[in_train]).all()
    # a query row without a face (NaN) still gets a training frame
    assert cr.nearest_across(library, train, np.full((1, 4), np.nan))[0] in train


def test_retrieval_features_are_the_named_signals_nan_without_a_face():
    face = np.array(facemesh.canonical_face(), dtype=float) * [1, -1, 1]  # model space (y up) to image (y down)
    pts = np.stack([face, face])
    f = cr.retrieval_features(pts, np.array([True, False]))
    assert f.shape == (2, len(cr.SIGNALS)) and np.isfinite(f[0]).all() and np.isnan(f[1]).all()


def _summary(face_gan, face_nn, gain_nn):
    methods = ("gan", "nearest", "alpha", "mean")
    mean = {m: {r: {"psnr": 20.0, "ssim": 0.5, "e_col": 0.1} for r in ("frame", "head", "face")} for m in methods}
    mean["gan"]["face"]["psnr"], mean["nearest"]["face"]["psnr"] = face_gan, face_nn
    return {"n_frames": 10, "mean": mean, "gan_improvement_db": {"region": "face", "nearest": gain_nn, "alpha": None, "mean": 1.0}}


def test_table_job_puts_each_run_beside_its_training_recordings_own_evaluation(tmp_path):
    paths = {}
    for name, s in {"ab": _summary(22.0, 20.5, 1.5), "ac": _summary(21.0, 20.0, 1.0), "own": _summary(25.0, 23.0, 2.0)}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(s))
    df = cross_recording_table(runs=[["a", "b"], ["a", "c"]], summaries=[paths["ab"], paths["ac"]], within={"a": paths["own"]},
                               out_csv=tmp_path / "t.csv", out_html=tmp_path / "t.html")
    t = pd.read_csv(tmp_path / "t.csv")
    assert list(t["test"]) == ["b", "c"] and list(t["gan_face_psnr"]) == [22.0, 21.0] and list(t["gan_gain_db_over_nearest"]) == [1.5, 1.0]
    assert list(t["within_gan_face_psnr"]) == [25.0, 25.0] and t["gan_gain_db_over_alpha"].isna().all()  # null in the summary
    page = (tmp_path / "t.html").read_text()
    assert page.count("<tr>") == 3 and "+1.50" in page and "25.00" in page and "–" in page
    assert df.shape[0] == 2
    with pytest.raises(Exception, match="is missing"):
        cross_recording_table(runs=[["a", "b"]], summaries=[tmp_path / "none.json"], within={}, out_csv=tmp_path / "u.csv", out_html=tmp_path / "u.html")


@pytest.mark.slow
def test_cross_recording_target_on_the_tiny_run(tiny_full_run, tmp_path):
    """On a copy of the tiny run, `cross_recording` reuses the target's generator (unchanged: no training, no flow,
    no evaluation again) and scores it on the other demo clip (the same photo, other motion), retrieving only from
    the target's training part."""
    work = copy_run(tiny_full_run, tmp_path / "run")
    config = merged(TINY_FULL, {"cross_recording": [{"train": "demo_target", "test": ["demo_source"]}]})
    generator = work / "results" / "videos" / "demo_target" / "gan" / "generator.pt"
    before = generator.read_bytes()
    r = run_workflow(work, "--cores", "2", "cross_recording", config=config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    ran = {line.split()[1].rstrip(":") for line in (r.stdout + r.stderr).splitlines() if line.startswith(("rule ", "localrule "))}
    assert ran == {"cross_recording_render", "cross_recording_evaluate", "cross_recording_table", "cross_recording"}, ran
    assert generator.read_bytes() == before
    out = work / "results" / "cross_recording"
    t = pd.read_csv(out / "table.csv")
    own = json.loads((work / "results" / "videos" / "demo_target" / "evaluation" / "summary.json").read_text())
    s = json.loads((out / "demo_target" / "demo_source" / "summary.json").read_text())
    assert list(zip(t["train"], t["test"], strict=True)) == [("demo_target", "demo_source")]
    assert np.isclose(t["within_gan_face_psnr"][0], own["mean"]["gan"]["face"]["psnr"]) and np.isclose(t["gan_face_psnr"][0], s["mean"]["gan"]["face"]["psnr"])
    assert s["n_frames"] == s["frames"]["test"] == 40 and (out / "demo_target" / "demo_source" / "side_by_side.mp4").stat().st_size > 0
    assert all(0 <= f < own["held_out_frames"][0] for f in s["nearest_frames"])  # retrieval only from the training part
    assert len(set(s["nearest_frames"])) > 1
    # the source's track drawn with the target's texture: the source's own motion and boxes, the target's colours
    with h5py.File(out / "demo_target" / "demo_source" / "conditioning.h5") as f, \
         h5py.File(work / "results" / "videos" / "demo_target" / "conditioning.h5") as g:  # fmt: skip
        assert f["box"].shape[0] == 40 and not np.allclose(f["box"][()], g["box"][()])
    for m in ("gan", "nearest", "alpha", "mean"):  # outside the mask every method is the real frame
        assert s["mean"][m]["frame"]["psnr"] > s["mean"][m]["face"]["psnr"]


@pytest.mark.slow
def test_the_targets_own_clip_as_another_recording_scores_as_its_held_out_evaluation(tiny_full_run, tmp_path):
    """The job given the target's own recording as the test recording: on the held-out frames the generator sees the
    same conditioning and is pasted over the same real frames as in the target's own evaluation, so its scores there
    must be the evaluation's; retrieval (by landmark signals instead of fitted parameters) picks training frames."""
    results = tiny_full_run / "results"
    video = results / "videos" / "demo_target"
    landmarks = sorted((video / "landmarks").glob("seg*.h5"))
    outs = {"csv": tmp_path / "m.csv", "json": tmp_path / "s.json", "side_mp4": tmp_path / "side.mp4"}
    summary = cross_recording(generator=video / "gan" / "generator.pt", train_flow=video / "gan" / "flow.h5", train_track=video / "track.h5",
                              train_landmarks=landmarks, conditioning_file=video / "conditioning.h5", track_file=video / "track.h5",
                              landmarks=landmarks, video_path=results / "demo" / "demo_target.mp4", probe_json=video / "probe.json",
                              outs=outs, composite_cfg=dp_config.prepare({})["composite"], names=("demo_target", "twin"), device="cpu")
    own = json.loads((video / "evaluation" / "summary.json").read_text())
    n_train = own["held_out_frames"][0]
    assert summary["n_frames"] == 40 and all(0 <= f < n_train for f in summary["nearest_frames"])
    cross = pd.read_csv(outs["csv"])
    mine = pd.read_csv(video / "evaluation" / "metrics.csv")
    key = ["frame", "region"]
    b = mine[mine.method == "gan"].set_index(key).sort_index()
    a = cross[cross.method == "gan"].set_index(key).sort_index().loc[b.index]
    assert len(b) == 3 * (40 - n_train)
    assert np.allclose(a["psnr"], b["psnr"], atol=0.05) and np.allclose(a["e_col"], b["e_col"], atol=1e-3), (a - b).abs().max()
    # on its own training frames, retrieval by landmark signals finds the frame itself
    picks = dict(zip(summary["frames"]["scored_frames"], summary["nearest_frames"], strict=True))
    assert all(picks[f] == f for f in picks if f < n_train), picks


def test_a_texture_of_another_mesh_is_refused_in_one_line(monkeypatch, tmp_path):
    """The training recording's texture is drawn on the scored recording's mesh only when both models share it."""
    from deep_puppets.jobs import render

    from .synthetic_faces import synthetic_model

    models = {"test.h5": synthetic_model(seed=0), "train.h5": synthetic_model(seed=1)}  # other points: another triangulation
    assert not np.array_equal(models["test.h5"].triangles, models["train.h5"].triangles)
    monkeypatch.setattr(render, "load_video_model", lambda cfg, f: models[str(f)])
    monkeypatch.setattr(render, "read_track", lambda f: (None, {}))
    monkeypatch.setattr(render, "check_model", lambda attrs, model, f: None)
    with pytest.raises(InputError) as e:
        render.render_cross(model_cfg={}, model_file="test.h5", track_file="track.h5", texture_file="texture.h5", texture_model_file="train.h5",
                            out=tmp_path / "c.h5", previews={}, render_cfg={"size": 64})
    assert str(e.value) == "train.h5: has another mesh than test.h5: its texture cannot be drawn on that model"
    assert not (tmp_path / "c.h5").exists()
