# Rendering-to-video translation: a person-specific conditional GAN per target (G, multi-scale D_I,
# temporal D_V with optical flow), trained on the target's own conditioning frames, then run on every pair: its
# crops pasted into the target's own full-resolution frames (deep_puppets/reenactment.py).


rule gan_flow:
    input:
        video=video_path,
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
    output:
        h5=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
    log:
        f"{LOGS}/gan_flow/{{video}}.log",
    benchmark:
        f"{BENCH}/gan_flow/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        gan={"flow_preset": config["gan"]["flow_preset"]},
        render=config["render"],
    script:
        "../workflow_scripts/gan_flow.py"


rule gan_train:
    input:
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        flow=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
    output:
        # Only the final generator is an output: the checkpoints beside it survive a killed run, which
        # resumes from them when the rule runs again.
        generator=f"{RESULTS}/videos/{{video}}/gan/generator.pt",
        losses=report(
            f"{RESULTS}/videos/{{video}}/gan/losses.png",
            caption="../report/losses.rst",
            category="Generator",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "training losses"},
        ),
    log:
        f"{LOGS}/gan_train/{{video}}.log",
    benchmark:
        f"{BENCH}/gan_train/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
    params:
        gan=dp_config.job_params(config, "gan"),
        render=config["render"],
    script:
        "../workflow_scripts/gan_train.py"


rule gan_synthesize:
    input:
        generator=pair_file("target", "gan/generator.pt"),
        conditioning=f"{RESULTS}/pairs/{{pair}}/conditioning.h5",
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        source=pair_video("source"),
        source_probe=pair_file("source", "probe.json"),
        # the plates: the target's own frames at full resolution, and its own head boxes and silhouettes
        target=pair_video("target"),
        target_probe=pair_file("target", "probe.json"),
        target_conditioning=pair_file("target", "conditioning.h5"),
    output:
        video=f"{RESULTS}/pairs/{{pair}}/reenactment.mp4",
        side_by_side=f"{RESULTS}/pairs/{{pair}}/side_by_side.mp4",
    log:
        f"{LOGS}/gan_synthesize/{{pair}}.log",
    benchmark:
        f"{BENCH}/gan_synthesize/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        composite=config["composite"],
    script:
        "../workflow_scripts/gan_synthesize.py"
