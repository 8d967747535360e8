# Ingest: decode each video once (real frame count, size, rate, time stamps). A checkpoint, because the
# number of segment jobs depends on the frame count.


checkpoint probe:
    input:
        video=video_path,
    output:
        json=f"{RESULTS}/videos/{{video}}/probe.json",
    log:
        f"{LOGS}/probe/{{video}}.log",
    benchmark:
        f"{BENCH}/probe/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        on_truncated=config["input"]["on_truncated"],
    script:
        "../workflow_scripts/probe.py"
