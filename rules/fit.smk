# Monocular face reconstruction: the morphable model, the identity per video, the per-segment fits
# (expression + camera per frame, smoothed in time) and their merge into one seamless track per video.


rule person_model:
    input:
        gate=landmark_gate,
        landmarks=landmark_segment_files,
    output:
        h5=f"{RESULTS}/videos/{{video}}/model.h5",
    log:
        f"{LOGS}/person_model/{{video}}.log",
    benchmark:
        f"{BENCH}/person_model/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_components=config["model"]["n_components"],
    script:
        "../workflow_scripts/person_model.py"


rule fit_identity:
    input:
        model=model_file,
        gate=landmark_gate,
        landmarks=landmark_segment_files,
    output:
        h5=f"{RESULTS}/videos/{{video}}/fit/identity.h5",
    log:
        f"{LOGS}/fit_identity/{{video}}.log",
    benchmark:
        f"{BENCH}/fit_identity/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        model=dp_config.model_params(config),
        fit=dp_config.job_params(config, "fit"),
    script:
        "../workflow_scripts/fit_identity.py"


rule fit_segment:
    input:
        model=model_file,
        identity=f"{RESULTS}/videos/{{video}}/fit/identity.h5",
        gate=landmark_gate,
        landmarks=f"{RESULTS}/videos/{{video}}/landmarks/seg{{seg}}.h5",
    output:
        h5=f"{RESULTS}/videos/{{video}}/fit/seg{{seg}}.h5",
    log:
        f"{LOGS}/fit_segment/{{video}}/seg{{seg}}.log",
    benchmark:
        f"{BENCH}/fit_segment/{{video}}/seg{{seg}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        model=dp_config.model_params(config),
        fit=dp_config.job_params(config, "fit"),
    script:
        "../workflow_scripts/fit_segment.py"


rule track:
    input:
        fits=fit_segment_files,
    output:
        h5=f"{RESULTS}/videos/{{video}}/track.h5",
    log:
        f"{LOGS}/track/{{video}}.log",
    benchmark:
        f"{BENCH}/track/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/track.py"


rule texture:
    input:
        model=model_file,
        track=f"{RESULTS}/videos/{{video}}/track.h5",
        video=video_path,
        probe=probe_json,
    output:
        h5=f"{RESULTS}/videos/{{video}}/texture.h5",
    log:
        f"{LOGS}/texture/{{video}}.log",
    benchmark:
        f"{BENCH}/texture/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        model=config["model"],
        texture=config["texture"],
    script:
        "../workflow_scripts/texture.py"
