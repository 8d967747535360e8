# Evaluation: self-reenactment of each target on its held-out frames (never trained on): the GAN against
# nearest-neighbour retrieval and the mean training frame - E_col (seed report), PSNR and SSIM.


rule evaluate:
    input:
        generator=f"{RESULTS}/videos/{{video}}/gan/generator.pt",
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        flow=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
        track=f"{RESULTS}/videos/{{video}}/track.h5",
    output:
        csv=f"{RESULTS}/videos/{{video}}/evaluation/metrics.csv",
        json=f"{RESULTS}/videos/{{video}}/evaluation/summary.json",
        plot=report(
            f"{RESULTS}/videos/{{video}}/evaluation/e_col.png",
            caption="../report/e_col.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "E_col per frame"},
        ),
        heat_mp4=report(
            f"{RESULTS}/videos/{{video}}/evaluation/heat_map.mp4",
            caption="../report/heat_map.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "error heat map"},
        ),
        side_mp4=report(
            f"{RESULTS}/videos/{{video}}/evaluation/side_by_side.mp4",
            caption="../report/evaluation_side_by_side.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "real | synthesized | heat map"},
        ),
    log:
        f"{LOGS}/evaluate/{{video}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow_scripts/evaluate.py"
