# Expression and pose transfer: one job per configured pair, relative to each actor's own reference.


rule transfer:
    input:
        source_track=pair_file("source", "track.h5"),
        target_track=pair_file("target", "track.h5"),
        source_model=pair_model_file("source"),
        target_model=pair_model_file("target"),
    output:
        h5=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
    log:
        f"{LOGS}/transfer/{{pair}}.log",
    benchmark:
        f"{BENCH}/transfer/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=config["model"],
        mode=lambda wc: PAIRS[wc.pair]["mode"],
        transfer=dp_config.job_params(config, "transfer"),
    script:
        "../workflow_scripts/transfer.py"


# How faithfully the expression arrives: the source's detected landmarks against the target's transferred mesh
# (its landmark vertices, projected), and against the source's own track (the ceiling); see README "Transfer".
rule expression_fidelity:
    input:
        landmarks=pair_landmark_files("source"),
        source_track=pair_file("source", "track.h5"),
        source_model=pair_model_file("source"),
        target_model=pair_model_file("target"),
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
    output:
        json=f"{RESULTS}/pairs/{{pair}}/fidelity/summary.json",
        png=report(
            f"{RESULTS}/pairs/{{pair}}/fidelity/fidelity.png",
            caption="../report/fidelity.rst",
            category="Transfer",
            subcategory="{pair}",
            labels={"pair": "{pair}", "figure": "expression fidelity"},
        ),
    log:
        f"{LOGS}/expression_fidelity/{{pair}}.log",
    benchmark:
        f"{BENCH}/expression_fidelity/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        model=config["model"],
    script:
        "../workflow_scripts/expression_fidelity.py"
