# Shared set-up: config validation (before any job starts), paths, wildcard constraints, input functions.
import sys

sys.path.insert(0, workflow.basedir)

from deep_puppets.workflow import export_pythonpath

# Jobs (local, conda or SLURM) import the package from this checkout even where it is not pip-installed.
export_pythonpath(workflow.basedir)

from snakemake.exceptions import WorkflowError

from deep_puppets import config as dp_config
from deep_puppets.errors import ConfigError
from deep_puppets.ingest import segments_for

try:
    config.update(dp_config.prepare(config))
except ConfigError as e:
    raise WorkflowError(f"config error: {e}")

RESULTS = config["results"]
VIDEOS = sorted(config["videos"])
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"


wildcard_constraints:
    video=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    seg=r"\d\d\d+",
    demo="|".join(dp_config.DEMO_VIDEOS),


def video_path(wildcards):
    """The input video of a configured name (the demo's generated clip for the demo names)."""
    return config["videos"][wildcards.video]


def probe_json(wildcards):
    return checkpoints.probe.get(video=wildcards.video).output.json


def segment_plan(wildcards):
    seg = config["segments"]
    return segments_for(probe_json(wildcards), seg["length"], seg["overlap"])


def landmark_segment_files(wildcards):
    return [
        f"{RESULTS}/videos/{wildcards.video}/landmarks/seg{s.index:03d}.h5"
        for s in segment_plan(wildcards)
    ]
