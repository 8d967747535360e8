# Evaluation: self-reenactment of each target on its held-out frames (never trained on), at full resolution:
# the GAN and the baselines (nearest-neighbour retrieval, alpha compositing, the mean training crop) pasted with
# the same face mask over the real frames - E_col (seed report), PSNR and SSIM on the whole frame, the head crop
# and the face mask, and the error at the blend seam; the flicker of every method against the real video's flow,
# and each held-out frame's parameter distance to the training frames against its error.


rule evaluate:
    input:
        generator=f"{RESULTS}/videos/{{video}}/gan/generator.pt",
        conditioning=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        flow=f"{RESULTS}/videos/{{video}}/gan/flow.h5",
        track=f"{RESULTS}/videos/{{video}}/track.h5",
        model=model_file,
        video=video_path,
        probe=probe_json,
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
        seam_plot=report(
            f"{RESULTS}/videos/{{video}}/evaluation/seam.png",
            caption="../report/seam.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "error at the blend seam"},
        ),
        flicker_plot=report(
            f"{RESULTS}/videos/{{video}}/evaluation/flicker.png",
            caption="../report/flicker.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "flicker"},
        ),
        distance_plot=report(
            f"{RESULTS}/videos/{{video}}/evaluation/distance_vs_error.png",
            caption="../report/distance_vs_error.rst",
            category="Self-reenactment",
            subcategory="{video}",
            labels={"target": "{video}", "figure": "distance to training vs error"},
        ),
        heat_mp4=f"{RESULTS}/videos/{{video}}/evaluation/heat_map.mp4",
        side_mp4=f"{RESULTS}/videos/{{video}}/evaluation/side_by_side.mp4",
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
    params:
        composite=config["composite"],
        model=config["model"],
        device=config["gan"]["device"],
    script:
        "../workflow_scripts/evaluate.py"


# Motion fidelity of each pair's output: the landmark detector on the re-enactment, its named signals against the
# conditioning it was asked to follow and against the source (README "Motion fidelity of the output").
rule output_fidelity:
    input:
        video=f"{RESULTS}/pairs/{{pair}}/reenactment.mp4",
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        landmarks=pair_landmark_files("source"),
        target_model=pair_model_file("target"),
    output:
        json=f"{RESULTS}/pairs/{{pair}}/output_fidelity/summary.json",
        png=report(
            f"{RESULTS}/pairs/{{pair}}/output_fidelity/output_fidelity.png",
            caption="../report/output_fidelity.rst",
            category="Transfer",
            subcategory="{pair}",
            labels={"pair": "{pair}", "figure": "motion fidelity of the output"},
        ),
    log:
        f"{LOGS}/output_fidelity/{{pair}}.log",
    benchmark:
        f"{BENCH}/output_fidelity/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        model=config["model"],
        landmarks=config["landmarks"],
    script:
        "../workflow_scripts/output_fidelity.py"


# Out-of-distribution frames of a pair: how far each transferred frame's expression and head rotation are from
# every frame the target's generator trained on, beside the target's own held-out frames.
rule pair_ood:
    input:
        transfer=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        target_track=pair_file("target", "track.h5"),
        target_model=pair_model_file("target"),
    output:
        json=f"{RESULTS}/pairs/{{pair}}/ood.json",
        png=report(
            f"{RESULTS}/pairs/{{pair}}/ood.png",
            caption="../report/pair_ood.rst",
            category="Transfer",
            subcategory="{pair}",
            labels={"pair": "{pair}", "figure": "distance to the target's training frames"},
        ),
    log:
        f"{LOGS}/pair_ood/{{pair}}.log",
    benchmark:
        f"{BENCH}/pair_ood/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=config["model"],
        held_out_fraction=config["gan"]["held_out_fraction"],
    script:
        "../workflow_scripts/pair_ood.py"


# Cross-recording self-reenactment (config section `cross_recording`, deep_puppets/cross_recording.py): the
# generator of one recording given another recording of the same person's motion (its own track, drawn with the
# training recording's texture), pasted over its real frames and scored like the held-out evaluation;
# `snakemake cross_recording` runs them (not `rule all`).
rule cross_recording_render:
    input:
        model=cross_input("test", model_file),
        params=f"{RESULTS}/videos/{{test}}/track.h5",
        texture=f"{RESULTS}/videos/{{train}}/texture.h5",
        texture_model=cross_input("train", model_file),
    output:
        h5=f"{CROSS_DIR}/conditioning.h5",
        previews=[f"{CROSS_DIR}/conditioning_{s}.mp4" for s in STREAMS],
    log:
        f"{LOGS}/cross_recording_render/{{train}}/{{test}}.log",
    benchmark:
        f"{BENCH}/cross_recording_render/{{train}}/{{test}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        model=config["model"],
        render=config["render"],
        framing=config["framing"],
    script:
        "../workflow_scripts/cross_recording_render.py"


rule cross_recording_evaluate:
    input:
        generator=f"{RESULTS}/videos/{{train}}/gan/generator.pt",
        train_flow=f"{RESULTS}/videos/{{train}}/gan/flow.h5",
        train_track=f"{RESULTS}/videos/{{train}}/track.h5",
        train_landmarks=cross_input("train", landmark_segment_files),
        conditioning=f"{CROSS_DIR}/conditioning.h5",
        track=f"{RESULTS}/videos/{{test}}/track.h5",
        landmarks=cross_input("test", landmark_segment_files),
        video=cross_input("test", video_path),
        probe=cross_input("test", probe_json),
    output:
        csv=f"{CROSS_DIR}/metrics.csv",
        json=f"{CROSS_DIR}/summary.json",
        side_mp4=report(
            f"{CROSS_DIR}/side_by_side.mp4",
            caption="../report/cross_recording.rst",
            category="Cross-recording",
            subcategory="{train} -> {test}",
            labels={"train": "{train}", "test": "{test}", "figure": "real | GAN | error (head crop)"},
        ),
    log:
        f"{LOGS}/cross_recording/{{train}}/{{test}}.log",
    benchmark:
        f"{BENCH}/cross_recording/{{train}}/{{test}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        composite=config["composite"],
        device=config["gan"]["device"],
    script:
        "../workflow_scripts/cross_recording.py"


rule cross_recording_table:
    input:
        summaries=[f"{RESULTS}/cross_recording/{t}/{s}/summary.json" for t, s in CROSS_RUNS],
        # each training recording's own held-out evaluation: the table's within-recording reference
        within=[f"{RESULTS}/videos/{t}/evaluation/summary.json" for t in CROSS_TRAINED],
    output:
        csv=f"{RESULTS}/cross_recording/table.csv",
        html=report(
            f"{RESULTS}/cross_recording/table.html",
            caption="../report/cross_recording.rst",
            category="Cross-recording",
            labels={"figure": "table"},
        ),
    log:
        f"{LOGS}/cross_recording/table.log",
    benchmark:
        f"{BENCH}/cross_recording/table.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        runs=CROSS_RUNS,
        trained=CROSS_TRAINED,
    script:
        "../workflow_scripts/cross_recording_table.py"
