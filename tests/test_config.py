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
        if not key.startswith(("pairs[].", "cross_recording[].")):  # an entry's required keys
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


@pytest.mark.slow
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
        ("fit", "deep_puppets.fit_types:FitSettings"),
        ("transfer", "deep_puppets.transfer:TransferSettings"),
        ("gan", "deep_puppets.gan.settings:TrainSettings"),
    ],
)
def test_schema_defaults_are_the_code_defaults(section, factory):
    """The schema's defaults (what users read) and the settings classes' defaults (what runs) agree."""
    import dataclasses
    import importlib

    module, name = factory.split(":")
    cls = getattr(importlib.import_module(module), name)
    cfg = dp_config.prepare({})
    defaults = cfg[section]
    from_preset = dp_config.load_presets()[cfg["preset"]].get(section, {})  # the preset's values, not defaults
    code = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in defaults.items():
        if key in code and key not in from_preset:
            want = list(code[key]) if isinstance(code[key], tuple) else code[key]
            assert value == pytest.approx(want) if isinstance(want, float) else value == want, f"{section}.{key}"
    settings = cls.from_config({k: v for k, v in defaults.items() if k in code})
    for key in from_preset:
        if key in code:
            assert getattr(settings, key) == defaults[key] or key == "size", f"{section}.{key}"


# ------------------------------------------------------------------------------------ paths: results, ~ (item 7)


@pytest.mark.parametrize(
    "results,match",
    [
        ("", "'results' is empty"),
        ("   ", "'results' is empty"),
        (".", "is the repository itself"),
        ("deep_puppets", "inside the repository's source folder deep_puppets/"),
        ("rules/out", "inside the repository's source folder rules/"),
        (".git/results", r"inside the repository's source folder \.git/"),
        ("/", "is the filesystem root"),
    ],
)
def test_results_path_is_refused_where_it_would_land_in_the_wrong_place(results, match):
    with pytest.raises(ConfigError, match=match) as e:
        dp_config.prepare({"results": results}, REPO, REPO)
    assert "\n" not in str(e.value)


def test_tilde_is_expanded_once_for_results_videos_and_model(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "clips").mkdir(parents=True)
    (home / "clips" / "a.mp4").write_bytes(b"a")
    (home / "m.npz").write_bytes(b"m")
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    cfg = dp_config.prepare(
        {"results": "~/out/", "videos": {"a": "~/clips/a.mp4"}, "pairs": [{"source": "a", "target": "a"}],
         "model": {"type": "ict", "path": "~/m.npz"}},
        work,
    )
    assert cfg["results"] == f"{home}/out"
    assert cfg["videos"] == {"a": f"{home}/clips/a.mp4"}
    assert cfg["model"]["path"] == f"{home}/m.npz"
    assert not (work / "~").exists()


def test_slurm_logdir_follows_results_unless_given(tmp_path):
    """The plugin (2.6.x) reads executor_settings.logdir when its executor starts; the profile sets none."""
    slurm = pytest.importorskip("snakemake_executor_plugin_slurm")
    assert "slurm-logdir" not in yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    settings = slurm.ExecutorSettings()
    dp_config.default_slurm_logdir(settings, "elsewhere", tmp_path)

    class Workflow:  # what _select_logdir reads
        executor_settings, workdir_init = settings, str(tmp_path)

    assert slurm._select_logdir(Workflow) == tmp_path / "elsewhere" / "logs" / "slurm"
    given = slurm.ExecutorSettings(logdir="/scratch/logs")
    dp_config.default_slurm_logdir(given, "elsewhere", tmp_path)
    assert given.logdir == "/scratch/logs"
    dp_config.default_slurm_logdir(None, "elsewhere", tmp_path)  # dry runs and local runs: nothing to set


# ------------------------------------------------------------------------- stage settings, frame needs (item 10)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"render": {"size": 100}}, r"^'render.size': 100 is not divisible by 2\*\*gan.gen_depth = 32"),
        ({"render": {"size": 64}, "gan": {"gen_depth": 4, "di_num_D": 3}}, r"^gan.di_num_D = 3 is invalid"),
        ({"model": {"options": {"region": "face"}}}, r"^'model.options': unknown option 'region' for type person"),
    ],
)
def test_stage_settings_are_built_at_config_time(change, match):
    from deep_puppets.needs import check_stage_settings

    cfg = dp_config.prepare(change)
    with pytest.raises(ConfigError, match=match) as e:
        check_stage_settings(cfg)
    assert "\n" not in str(e.value)


def test_default_and_shipped_stage_settings_pass():
    from deep_puppets.needs import check_stage_settings

    check_stage_settings(dp_config.prepare({}))
    check_stage_settings(dp_config.prepare(yaml.safe_load((REPO / "config.yaml").read_text()), REPO))


def run_dry(workdir, *args):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--directory", str(workdir), "-s", str(REPO / "Snakefile"), *args],
        capture_output=True, text=True, timeout=120,
    )


def test_render_size_not_divisible_stops_snakemake_before_any_job(tmp_path):
    (tmp_path / "c.yaml").write_text("render: {size: 100}\n")
    r = run_dry(tmp_path, "--configfile", str(REPO / "config.yaml"), str(tmp_path / "c.yaml"))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "config error: 'render.size': 100 is not divisible by 2**gan.gen_depth = 32" in out, out[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "n_frames,change,match",
    [
        (20, {}, r"^v \(clip.mp4\): 20 frames; at least 30 frames with a face needed"),
        (40, {"model": {"n_components": 50}}, r"^v \(clip.mp4\): 40 frames; at least 51 frames with a face needed"),
        (40, {"gan": {"clip_len": 30}}, r"^v \(clip.mp4\): 40 frames, 27 of them for training .*'gan.clip_len' 30 needs"),
        (40, {"gan": {"held_out_fraction": 0.01}}, r"^v \(clip.mp4\): 'gan.held_out_fraction' 0.01 holds out none of its 40 frames"),
    ],
)
def test_video_length_limits_name_the_video_and_the_key(tmp_path, n_frames, change, match):
    from deep_puppets.errors import InputError
    from deep_puppets.needs import check_video_length

    (tmp_path / "clip.mp4").write_bytes(b"x")
    cfg = dp_config.prepare({"videos": {"v": "clip.mp4"}, "pairs": [{"source": "v", "target": "v"}], **change}, tmp_path)
    with pytest.raises(InputError, match=match):
        check_video_length("v", "clip.mp4", n_frames, cfg)
    check_video_length("v", "clip.mp4", 400, cfg)  # long enough for every case


def test_faces_needed_is_the_fraction_or_what_the_model_needs():
    from deep_puppets.needs import faces_needed, model_min_faces

    assert model_min_faces({"type": "person", "n_components": 20}) == 30
    assert model_min_faces({"type": "person", "n_components": 40}) == 41
    assert model_min_faces({"type": "ict", "n_components": 20}) == 1
    assert faces_needed(100, 0.05, 30) == 30
    assert faces_needed(1000, 0.05, 30) == 50
    assert faces_needed(1001, 0.05, 1) == 51


# ------------------------------------------------------------------ YAML syntax, one file under two names (item 12)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "config.yaml").write_text("videos: {}\nrender:\n  size: 64\n gan: {}\n")
    r = run_dry(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith("config error:")]
    assert lines == ["config error: config.yaml line 4: expected <block end>, but found '<block mapping start>'"], out[-3000:]


def test_same_file_under_two_names_warns_once_naming_both(tmp_path, caplog):
    import shutil

    (tmp_path / "a.mp4").write_bytes(b"video" * 1000)
    shutil.copyfile(tmp_path / "a.mp4", tmp_path / "copy.mp4")
    (tmp_path / "b.mp4").write_bytes(b"other" * 1000)
    videos = {"alice": "a.mp4", "again": "./a.mp4", "copy": "copy.mp4", "bob": "b.mp4"}
    with caplog.at_level("WARNING", logger="deep_puppets.config"):
        dp_config.prepare({"videos": videos, "pairs": [{"source": "alice", "target": "bob"}]}, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "same file" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "'videos.again'" in warnings[0] and "'videos.alice'" in warnings[0] and "'videos.copy'" in warnings[0]
    assert "'videos.bob'" not in warnings[0]


# ------------------------------------------------------------------------------------------------- presets


def test_preset_auto_is_demo_for_the_demo_and_cpu_for_own_videos(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    demo = dp_config.prepare({}, tmp_path, tmp_path)
    own = dp_config.prepare({"videos": {"a": str(clip)}}, tmp_path, tmp_path)
    presets = dp_config.load_presets()
    assert demo["preset"] == "demo" and own["preset"] == "cpu"
    for cfg, name in ((demo, "demo"), (own, "cpu")):
        for section, values in presets[name].items():
            assert {k: cfg[section][k] for k in values} == values, (name, section)
    assert own["render"]["size"] > demo["render"]["size"]
    # the cpu preset's neural texture is read through the correspondence image: it yields when the config leaves
    # that stream out (rather than refusing a value the user never set), and a value the config sets wins
    assert own["gan"]["neural_texture"] > 0
    from deep_puppets.needs import check_stage_settings

    check_stage_settings(own)
    colour = dp_config.prepare({"videos": {"a": str(clip)}, "gan": {"streams": ["colour", "gaze"]}}, tmp_path, tmp_path)
    assert colour["gan"]["neural_texture"] == 0 and colour["gan"]["di_frames"] == presets["cpu"]["gan"]["di_frames"]
    check_stage_settings(colour)
    mine = dp_config.prepare({"videos": {"a": str(clip)}, "gan": {"streams": ["colour"], "neural_texture": 8}}, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="neural_texture"):
        check_stage_settings(mine)


def test_config_values_win_over_the_preset_and_every_preset_passes_the_stage_checks(tmp_path):
    from deep_puppets.needs import check_stage_settings

    cfg = dp_config.prepare({"preset": "gpu", "gan": {"iterations": 7}, "render": {"size": 256}}, tmp_path, tmp_path)
    assert cfg["gan"]["iterations"] == 7 and cfg["render"]["size"] == 256
    assert cfg["gan"]["gen_depth"] == dp_config.load_presets()["gpu"]["gan"]["gen_depth"]
    for name in ("demo", "cpu", "gpu"):
        check_stage_settings(dp_config.prepare({"preset": name}, tmp_path, tmp_path))
    with pytest.raises(ConfigError, match="preset"):
        dp_config.prepare({"preset": "huge"}, tmp_path, tmp_path)


def test_job_params_leave_out_keys_added_at_their_neutral_value():
    """A key added to a section after results existed (fit.activation_bounds, transfer.pose_range, gan.lambda_eyes) is left out of
    the rules' params while it holds the value that reproduces the earlier computation, so an upgrade reruns
    nothing; any other value is passed on. The jobs' settings are the same either way."""
    from deep_puppets.fit_types import FitSettings
    from deep_puppets.transfer import TransferSettings

    cfg = dp_config.validate_schema({"videos": {}, "pairs": []})
    fit, transfer = dp_config.job_params(cfg, "fit"), dp_config.job_params(cfg, "transfer")
    assert "activation_bounds" not in fit and "pose_range" not in transfer
    assert set(fit) == set(cfg["fit"]) - {"activation_bounds"} and set(transfer) == set(cfg["transfer"]) - {"pose_range"}
    assert FitSettings.from_fit_section(fit) == FitSettings.from_fit_section(cfg["fit"])
    assert TransferSettings.from_config(transfer) == TransferSettings.from_config(cfg["transfer"])
    from deep_puppets.gan.settings import TrainSettings

    gan = dp_config.job_params(cfg, "gan")
    assert set(gan) == set(cfg["gan"]) - {"lambda_eyes"} and TrainSettings.from_config(gan) == TrainSettings.from_config(cfg["gan"])
    cfg = dp_config.validate_schema({"videos": {}, "pairs": [], "fit": {"activation_bounds": 100}, "transfer": {"pose_range": 0}})
    assert dp_config.job_params(cfg, "fit")["activation_bounds"] == 100
    assert dp_config.job_params(cfg, "transfer")["pose_range"] == 0  # 0 is a limit (clip), not the neutral null
    assert FitSettings.from_fit_section(dp_config.job_params(cfg, "fit")).activation_bounds == 100


def test_model_params_carry_a_providers_fit_revision():
    """The fit rules' model params: a person model's are its section as it was (an upgrade reruns nothing); ICT's
    carry its fit revision, so fits made before its loader changed (the lid-skin ring's weight) rerun."""
    from deep_puppets.models.registry import FIT_REVISIONS

    person = dp_config.validate_schema({"videos": {}, "pairs": []})
    assert dp_config.model_params(person) == person["model"] and "fit_revision" not in dp_config.model_params(person)
    ict = dp_config.validate_schema({"videos": {}, "pairs": [], "model": {"type": "ict", "path": "ict.npz"}})
    params = dp_config.model_params(ict)
    assert params["fit_revision"] == FIT_REVISIONS["ict"] >= 1
    assert {k: v for k, v in params.items() if k != "fit_revision"} == ict["model"]
