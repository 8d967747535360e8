# The report people read in a browser. Two targets build it:
#   snakemake report_page   ->  {results}/report/index.html: a self-contained folder (page, figures, videos
#                               playing inline) that can be zipped and moved; part of `rule all`.
#   snakemake --report report.html  ->  Snakemake's own report: the figures, and every video as a small HTML
#                               page playing it inline (the *_page rules below, also part of `rule all`).


rule report_page:
    input:
        diagnostics=expand(
            f"{RESULTS}/videos/{{video}}/diagnostics/{{f}}",
            video=VIDEOS,
            f=("tracking.json", "tracking.png", "camera_smoothing.png", "overlay.mp4"),
        ),
        evaluation=expand(
            f"{RESULTS}/videos/{{video}}/evaluation/{{f}}",
            video=TARGETS,
            f=(
                "summary.json",
                "e_col.png",
                "seam.png",
                "flicker.png",
                "distance_vs_error.png",
                "heat_map.mp4",
                "side_by_side.mp4",
            ),
        ),
        losses=expand(f"{RESULTS}/videos/{{video}}/gan/losses.png", video=TARGETS),
        pairs=expand(
            f"{RESULTS}/pairs/{{pair}}/{{f}}",
            pair=PAIRS,
            f=(
                "reenactment.mp4",
                "side_by_side.mp4",
                "fidelity/summary.json",
                "fidelity/fidelity.png",
                "output_fidelity/summary.json",
                "output_fidelity/output_fidelity.png",
                "ood.json",
                "ood.png",
            ),
        ),
        exports=[e for e in export_targets() if not e.endswith(("obj", "ply"))],
    output:
        folder=directory(f"{RESULTS}/report"),
    log:
        f"{LOGS}/report_page.log",
    benchmark:
        f"{BENCH}/report_page.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        videos=VIDEOS,
        pairs=[{"name": k, **v} for k, v in PAIRS.items()],
        targets=TARGETS,
    script:
        "../workflow_scripts/report_page.py"


rule overlay_page:
    input:
        overlay=f"{RESULTS}/videos/{{video}}/diagnostics/overlay.mp4",
    output:
        overlay=report(
            f"{RESULTS}/videos/{{video}}/diagnostics/overlay.html",
            caption="../report/overlay.rst",
            category="Tracking",
            subcategory="{video}",
            labels={"video": "{video}", "figure": "fitted face overlay (video)"},
        ),
    log:
        f"{LOGS}/overlay_page/{{video}}.log",
    benchmark:
        f"{BENCH}/overlay_page/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/video_pages.py"


rule evaluation_pages:
    input:
        heat=f"{RESULTS}/videos/{{video}}/evaluation/heat_map.mp4",
        side=f"{RESULTS}/videos/{{video}}/evaluation/side_by_side.mp4",
    output:
        heat=report(
            f"{RESULTS}/videos/{{video}}/evaluation/heat_map.html",
            caption="../report/heat_map.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "error heat map (video)"},
        ),
        side=report(
            f"{RESULTS}/videos/{{video}}/evaluation/side_by_side.html",
            caption="../report/evaluation_side_by_side.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={
                "target": "{video}",
                "figure": "real | GAN pasted | error (video)",
            },
        ),
    log:
        f"{LOGS}/evaluation_pages/{{video}}.log",
    benchmark:
        f"{BENCH}/evaluation_pages/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/video_pages.py"


rule reenactment_pages:
    input:
        video=f"{RESULTS}/pairs/{{pair}}/reenactment.mp4",
        side=f"{RESULTS}/pairs/{{pair}}/side_by_side.mp4",
    output:
        video=report(
            f"{RESULTS}/pairs/{{pair}}/reenactment.html",
            caption="../report/reenactment.rst",
            category="Re-enactment",
            subcategory="{pair}",
            labels={"pair": "{pair}", "video": "re-enactment"},
        ),
        side=report(
            f"{RESULTS}/pairs/{{pair}}/side_by_side.html",
            caption="../report/side_by_side.rst",
            category="Re-enactment",
            subcategory="{pair}",
            labels={"pair": "{pair}", "video": "source | conditioning | output"},
        ),
    log:
        f"{LOGS}/reenactment_pages/{{pair}}.log",
    benchmark:
        f"{BENCH}/reenactment_pages/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/video_pages.py"
