# Experiments (config section `experiments`, deep_puppets/experiments.py): variants of the gan settings, each
# trained with every seed on a target's own conditioning and flow (shared with the main run) and evaluated on
# the same held-out frames; one table per target. `snakemake experiments` runs them; `rule all` does not.
# Each run also re-enacts every pair with that target (the pair's own conditioning and plates) and measures its
# output's motion fidelity, as the main generator's pairs are.
# The section is checked and expanded in rules/common.smk (EXPERIMENTS, EXPERIMENT_RUNS).


wildcard_constraints:
    variant=r"[A-Za-z_][A-Za-z0-9_]*",
    seed=r"\d+",


rule experiment_train:
    input:
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        flow=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
    output:
        generator=f"{EXPERIMENT_DIR}/generator.pt",
        losses=f"{EXPERIMENT_DIR}/losses.png",
    log:
        f"{LOGS}/experiment_train/{{video}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/experiment_train/{{video}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
    params:
        gan=lambda w: dp_experiments.variant_gan(config, EXPERIMENTS, w.variant, w.seed),
        render=config["render"],
    script:
        "../workflow_scripts/gan_train.py"


rule experiment_evaluate:
    input:
        generator=f"{EXPERIMENT_DIR}/generator.pt",
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        flow=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
        track=f"{RESULTS}/videos/{{video}}/track.h5",
        model=model_file,
        video=video_path,
        probe=probe_json,
    output:
        csv=f"{EXPERIMENT_DIR}/evaluation/metrics.csv",
        json=f"{EXPERIMENT_DIR}/evaluation/summary.json",
        plot=f"{EXPERIMENT_DIR}/evaluation/e_col.png",
        seam_plot=f"{EXPERIMENT_DIR}/evaluation/seam.png",
        flicker_plot=f"{EXPERIMENT_DIR}/evaluation/flicker.png",
        distance_plot=f"{EXPERIMENT_DIR}/evaluation/distance_vs_error.png",
        heat_mp4=f"{EXPERIMENT_DIR}/evaluation/heat_map.mp4",
        side_mp4=f"{EXPERIMENT_DIR}/evaluation/side_by_side.mp4",
    log:
        f"{LOGS}/experiment_evaluate/{{video}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/experiment_evaluate/{{video}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        composite=config["composite"],
        model=config["model"],
        device=config["gan"]["device"],
    script:
        "../workflow_scripts/evaluate.py"


use rule gan_synthesize as experiment_synthesize with:
    input:
        generator=f"{EXPERIMENT_DIR}/generator.pt",
        conditioning=f"{RESULTS}/pairs/{{pair}}/conditioning.h5",
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        source=pair_video("source"),
        source_probe=pair_file("source", "probe.json"),
        target=pair_video("target"),
        target_probe=pair_file("target", "probe.json"),
        target_conditioning=pair_file("target", "conditioning.h5"),
    output:
        video=f"{EXPERIMENT_PAIR_DIR}/reenactment.mp4",
        side_by_side=f"{EXPERIMENT_PAIR_DIR}/side_by_side.mp4",
    log:
        f"{LOGS}/experiment_synthesize/{{video}}/{{variant}}/seed{{seed}}/{{pair}}.log",
    benchmark:
        f"{BENCH}/experiment_synthesize/{{video}}/{{variant}}/seed{{seed}}/{{pair}}.tsv"


use rule output_fidelity as experiment_output_fidelity with:
    input:
        video=f"{EXPERIMENT_PAIR_DIR}/reenactment.mp4",
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        landmarks=pair_landmark_files("source"),
        target_model=pair_model_file("target"),
    output:
        json=f"{EXPERIMENT_PAIR_DIR}/output_fidelity/summary.json",
        png=f"{EXPERIMENT_PAIR_DIR}/output_fidelity/output_fidelity.png",
    log:
        f"{LOGS}/experiment_output_fidelity/{{video}}/{{variant}}/seed{{seed}}/{{pair}}.log",
    benchmark:
        f"{BENCH}/experiment_output_fidelity/{{video}}/{{variant}}/seed{{seed}}/{{pair}}.tsv"


rule experiment_table:
    input:
        summaries=experiment_files("evaluation/summary.json"),
        benchmarks=experiment_benchmarks,
        fidelity=experiment_pair_files("output_fidelity/summary.json"),
    output:
        csv=f"{RESULTS}/experiments/{{video}}/table.csv",
        html=report(
            f"{RESULTS}/experiments/{{video}}/table.html",
            caption="../report/experiments.rst",
            category="Experiments",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "variants table"},
        ),
        png=report(
            f"{RESULTS}/experiments/{{video}}/quality_vs_minutes.png",
            caption="../report/experiments.rst",
            category="Experiments",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "quality against training minutes"},
        ),
    log:
        f"{LOGS}/experiment_table/{{video}}.log",
    benchmark:
        f"{BENCH}/experiment_table/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        runs=EXPERIMENT_RUNS,
        pairs=lambda w: target_pairs(w.video),
        overrides={name: v["overrides"] for name, v in EXPERIMENTS["variants"].items()},
    script:
        "../workflow_scripts/experiment_table.py"
