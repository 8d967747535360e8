# The embedded demo: two short clips made from a real face photo (skimage's astronaut) with known motion.


rule demo_clip:
    output:
        video=f"{RESULTS}/demo/{{demo}}.mp4",
        truth=f"{RESULTS}/demo/{{demo}}_truth.h5",
    log:
        f"{LOGS}/demo_clip/{{demo}}.log",
    benchmark:
        f"{BENCH}/demo_clip/{{demo}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        demo=config["demo"],
    script:
        "../workflow_scripts/demo_clip.py"
