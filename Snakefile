# Deep Puppets: video -> landmarks -> fits -> tracks -> transfer -> conditioning -> generator -> videos -> reports
#
# Run:  snakemake --cores N            (workstation; profiles/default is picked up automatically)
# Config: config.yaml, validated against deep_puppets/schemas/config.schema.yaml before any job starts.

import os
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from deep_puppets.config import check_yaml_file
from deep_puppets.errors import ConfigError

# Snakemake's own YAML error names neither the file nor the line: parse config.yaml first. (A --configfile
# is read by Snakemake's command line before this file runs, so its syntax errors keep Snakemake's wording.)
if os.path.exists("config.yaml"):
    try:
        check_yaml_file("config.yaml")
    except ConfigError as e:
        raise WorkflowError(f"config error: {e}")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/landmarks.smk"
include: "rules/fit.smk"
include: "rules/transfer.smk"
include: "rules/render.smk"
include: "rules/diagnostics.smk"
include: "rules/gan.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
include: "rules/report.smk"
include: "rules/experiments.smk"


# Cheap bookkeeping jobs (and the exports and the demo's two clips: seconds each) run on the submitting machine,
# not as cluster jobs.
localrules:
    demo_clip,
    landmarks_summary,
    track,
    report_page,
    overlay_page,
    evaluation_pages,
    reenactment_pages,
    export_face,
    export_arkit,
    experiment_table,


rule all:
    default_target: True
    input:
        landmark_summaries=expand(f"{RESULTS}/videos/{{video}}/landmarks/summary.json", video=VIDEOS),
        tracks=expand(f"{RESULTS}/videos/{{video}}/track.h5", video=VIDEOS),
        diagnostics=expand(f"{RESULTS}/videos/{{video}}/diagnostics/tracking.json", video=VIDEOS),
        target_renders=expand(f"{RESULTS}/videos/{{video}}/conditioning.h5", video=TARGETS),
        pair_renders=expand(f"{RESULTS}/pairs/{{pair}}/conditioning.h5", pair=PAIRS),
        fidelity=expand(f"{RESULTS}/pairs/{{pair}}/fidelity/summary.json", pair=PAIRS),
        ood=expand(f"{RESULTS}/pairs/{{pair}}/ood.json", pair=PAIRS),
        # Requested itself: a training killed after its new settings were written leaves no generator, and
        # without this the finished videos of the old one would count as up to date (Snakemake rebuilds a
        # missing intermediate file only for a job that runs anyway).
        generators=expand(f"{RESULTS}/videos/{{video}}/gan/generator.pt", video=TARGETS),
        reenactments=expand(f"{RESULTS}/pairs/{{pair}}/reenactment.mp4", pair=PAIRS),
        evaluations=expand(f"{RESULTS}/videos/{{video}}/evaluation/summary.json", video=TARGETS),
        output_fidelity=expand(f"{RESULTS}/pairs/{{pair}}/output_fidelity/summary.json", pair=PAIRS),
        exports=export_targets(),
        report=f"{RESULTS}/report",
        overlay_pages=expand(f"{RESULTS}/videos/{{video}}/diagnostics/overlay.html", video=VIDEOS),
        evaluation_pages=expand(f"{RESULTS}/videos/{{video}}/evaluation/side_by_side.html", video=TARGETS),
        reenactment_pages=expand(f"{RESULTS}/pairs/{{pair}}/reenactment.html", pair=PAIRS),


# The experiments section's tables (rules/experiments.smk): `snakemake experiments`; not part of `all`.
rule experiments:
    input:
        expand(f"{RESULTS}/experiments/{{video}}/table.csv", video=EXPERIMENTS["targets"]),
        expand(f"{RESULTS}/experiments/{{video}}/quality_vs_minutes.png", video=EXPERIMENTS["targets"]),


# The cross_recording section's table (rules/evaluate.smk): `snakemake cross_recording`; not part of `all`.
rule cross_recording:
    input:
        f"{RESULTS}/cross_recording/table.csv" if CROSS_RUNS else [],


# Every export of every configured video and pair (rules/export.smk); `deep-puppets export DIR` runs it.
rule export_all:
    input:
        export_targets(),
