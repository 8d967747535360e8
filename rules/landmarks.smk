# Landmarks: face finding + MediaPipe FaceMesh (478 points) per segment, then a per-video summary.


rule landmarks:
    input:
        video=video_path,
        probe=probe_json,
    output:
        h5=f"{RESULTS}/videos/{{video}}/landmarks/seg{{seg}}.h5",
    log:
        f"{LOGS}/landmarks/{{video}}/seg{{seg}}.log",
    benchmark:
        f"{BENCH}/landmarks/{{video}}/seg{{seg}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        segments=config["segments"],
        settings=config["landmarks"],
    script:
        "../workflow_scripts/landmarks.py"


rule landmarks_summary:
    input:
        segments=landmark_segment_files,
    output:
        json=f"{RESULTS}/videos/{{video}}/landmarks/summary.json",
    log:
        f"{LOGS}/landmarks_summary/{{video}}.log",
    benchmark:
        f"{BENCH}/landmarks_summary/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        min_valid_fraction=config["landmarks"]["min_valid_fraction"],
        min_faces=model_min_faces(config["model"]),
        video_path=video_path,
    script:
        "../workflow_scripts/landmarks_summary.py"
