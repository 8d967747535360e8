# Shared set-up: config validation (before any job starts), paths, wildcard constraints, input functions.
import sys
from types import SimpleNamespace

sys.path.insert(0, workflow.basedir)

from deep_puppets.workflow import export_pythonpath

# Jobs (local, conda or SLURM) import the package from this checkout even where it is not pip-installed.
export_pythonpath(workflow.basedir)

from snakemake.exceptions import WorkflowError

from deep_puppets import config as dp_config
from deep_puppets import cross_recording as dp_cross
from deep_puppets import experiments as dp_experiments
from deep_puppets.errors import ConfigError
from deep_puppets.ingest import segments_for
from deep_puppets.needs import check_stage_settings, model_min_faces

# Paths with `~` expanded (results, videos, model.path) replace the user's strings; every stage's settings
# are built once here, so that a bad value stops the run before any job starts.
try:
    config.update(dp_config.prepare(config, ".", workflow.basedir))
    check_stage_settings(config)
except ConfigError as e:
    raise WorkflowError(f"config error: {e}")

RESULTS = config["results"]
VIDEOS = sorted(config["videos"])
PAIRS = {dp_config.pair_id(p): p for p in config["pairs"]}
TARGETS = sorted({p["target"] for p in config["pairs"]})
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
# The `experiments` section (rules/experiments.smk): gan-setting variants x seeds, checked here like the rest.
try:
    EXPERIMENTS = dp_experiments.expand_experiments(config, TARGETS)
except ConfigError as e:
    raise WorkflowError(f"config error: {e}")
EXPERIMENT_RUNS = dp_experiments.experiment_runs(EXPERIMENTS)
EXPERIMENT_DIR = f"{RESULTS}/experiments/{{video}}/{{variant}}/seed{{seed}}"
EXPERIMENT_PAIR_DIR = f"{EXPERIMENT_DIR}/pairs/{{pair}}"  # a variant's re-enactment of a pair with its target
# The `cross_recording` section (rules/evaluate.smk): generators scored on other recordings of their person.
try:
    CROSS_RUNS = dp_cross.plan(config)
except ConfigError as e:
    raise WorkflowError(f"config error: {e}")
CROSS_DIR = f"{RESULTS}/cross_recording/{{train}}/{{test}}"
CROSS_TRAINED = list(dict.fromkeys(t for t, _ in CROSS_RUNS))  # recordings whose generators are scored


wildcard_constraints:
    video=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    train=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    test=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    seg=r"\d\d\d+",
    demo="|".join(dp_config.DEMO_VIDEOS),
    pair=r"[A-Za-z0-9_-]+__[A-Za-z0-9_-]+__(pose|expr)",


def video_path(wildcards):
    """The input video of a configured name (the demo's generated clip for the demo names)."""
    # Runs while the DAG is built, after Snakemake set the executor's settings and before the executor
    # starts: the only moment the SLURM job logs can be sent to {results}/logs/slurm (unless --slurm-logdir).
    dp_config.default_slurm_logdir(workflow.executor_settings, RESULTS)
    return config["videos"][wildcards.video]


def demo_truth(wildcards):
    """The known motion of a demo clip (its diagnostics score the fit against it); nothing for other videos."""
    if dp_config.is_demo_video(wildcards.video, config):
        return f"{RESULTS}/demo/{wildcards.video}_truth.h5"
    return []


def landmark_gate(wildcards):
    """The landmark summary: it fails when a video has too few frames with a face (the gate of every job that
    reads landmarks). A plain input, not ancient(): a rerun summary reruns what reads landmarks. Snakemake 9
    skips the own rerun reasons (a new model, changed params) of every job behind an ancient() input of a
    rerunning job, so a run stopped after the summary, reporting success (snakemake/snakemake#4166).
    """
    return f"{RESULTS}/videos/{wildcards.video}/landmarks/summary.json"


def probe_json(wildcards):
    return checkpoints.probe.get(video=wildcards.video).output.json


def segment_plan(wildcards):
    seg = config["segments"]
    return segments_for(probe_json(wildcards), seg["length"], seg["overlap"])


def landmark_segment_files(wildcards):
    return [f"{RESULTS}/videos/{wildcards.video}/landmarks/seg{s.index:03d}.h5" for s in segment_plan(wildcards)]


def model_path(video):
    """The model a video is fitted with: its own person model, or the configured model file."""
    if config["model"]["type"] == "person":
        return f"{RESULTS}/videos/{video}/model.h5"
    return config["model"]["path"]


def model_file(wildcards):
    return model_path(wildcards.video)


def fit_segment_files(wildcards):
    return [f"{RESULTS}/videos/{wildcards.video}/fit/seg{s.index:03d}.h5" for s in segment_plan(wildcards)]


def pair_model_file(role):
    """Input function: the model file of a pair's source or target video."""

    def f(wildcards):
        return model_path(PAIRS[wildcards.pair][role])

    return f


def pair_file(role, name):
    """Input function: ``results/videos/{video}/{name}`` of a pair's source or target."""

    def f(wildcards):
        return f"{RESULTS}/videos/{PAIRS[wildcards.pair][role]}/{name}"

    return f


def pair_landmark_files(role):
    """Input function: the landmark segment files of a pair's source or target video."""

    def f(wildcards):
        return landmark_segment_files(SimpleNamespace(video=PAIRS[wildcards.pair][role]))

    return f


def pair_video(role):
    """Input function: the input video of a pair's source or target."""

    def f(wildcards):
        return config["videos"][PAIRS[wildcards.pair][role]]

    return f


def export_data(wildcards):
    """What an export reads: a video's track, or a pair's transfer (the target re-animated by the source)."""
    if wildcards.kind == "videos":
        return f"{RESULTS}/videos/{wildcards.name}/track.h5"
    return f"{RESULTS}/pairs/{wildcards.name}/transfer.h5"


def export_model(wildcards):
    """The model of an export: the video's, or the pair's target's."""
    if wildcards.kind == "videos":
        return model_path(wildcards.name)
    return model_path(PAIRS[wildcards.name]["target"])


def export_targets():
    """Every export of every configured video and pair (rule export_all)."""
    names = {"videos": VIDEOS, "pairs": sorted(PAIRS)}
    files = ["face.glb", "parameters.csv", "parameters.json"]
    if config["model"]["type"] == "ict":
        files.append("arkit.csv")
    if config["export"]["meshes"] != "none":
        files.append(config["export"]["meshes"])
    return [f"{RESULTS}/export/{kind}/{name}/{f}" for kind, group in names.items() for name in group for f in files]


def experiment_files(name):
    """Input function: ``name`` (under each run's folder) of every variant and seed of a target, in table order."""

    def f(wildcards):
        return [f"{RESULTS}/experiments/{wildcards.video}/{v}/seed{s}/{name}" for v, s in EXPERIMENT_RUNS]

    return f


def target_pairs(video):
    """The configured pairs whose target is ``video``, sorted."""
    return sorted(name for name, p in PAIRS.items() if p["target"] == video)


def experiment_pair_files(name):
    """Input function: ``name`` (under each run's ``pairs/{pair}`` folder) of every variant and seed of a target
    and every pair with that target, runs in table order, pairs sorted within each run."""

    def f(wildcards):
        return [f"{RESULTS}/experiments/{wildcards.video}/{v}/seed{s}/pairs/{p}/{name}" for v, s in EXPERIMENT_RUNS for p in target_pairs(wildcards.video)]

    return f


def experiment_benchmarks(wildcards):
    """The training benchmark of every variant and seed of a target (their wall-clock minutes), in table order."""
    return [f"{BENCH}/experiment_train/{wildcards.video}/{v}/seed{s}.tsv" for v, s in EXPERIMENT_RUNS]


def cross_input(role, fn):
    """Input function: ``fn`` (an input function of ``{video}``) for the cross-recording run's ``train`` or
    ``test`` recording."""

    def f(wildcards):
        return fn(SimpleNamespace(video=getattr(wildcards, role)))

    return f
