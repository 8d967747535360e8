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
        transfer=config["transfer"],
    script:
        "../workflow_scripts/transfer.py"
