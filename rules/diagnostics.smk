# Tracking diagnostics per video: landmark error and jitter of the fit, the camera with and without
# smoothing (the report's comparison), an overlay video of the fitted face's outlines and, for the demo's clips,
# the fitted head rotation scored against the clips' known motion.


rule diagnostics:
    input:
        model=model_file,
        track=f"{RESULTS}/videos/{{video}}/track.h5",
        identity=f"{RESULTS}/videos/{{video}}/fit/identity.h5",
        gate=landmark_gate,
        landmarks=landmark_segment_files,
        video=video_path,
        probe=probe_json,
        truth=demo_truth,
    output:
        json=f"{RESULTS}/videos/{{video}}/diagnostics/tracking.json",
        camera_png=report(
            f"{RESULTS}/videos/{{video}}/diagnostics/camera_smoothing.png",
            caption="../report/camera_smoothing.rst",
            category="Tracking",
            subcategory="{video}",
            labels={"video": "{video}", "figure": "camera smoothing"},
        ),
        tracking_png=report(
            f"{RESULTS}/videos/{{video}}/diagnostics/tracking.png",
            caption="../report/tracking.rst",
            category="Tracking",
            subcategory="{video}",
            labels={"video": "{video}", "figure": "landmark error and jitter"},
        ),
        overlay_mp4=f"{RESULTS}/videos/{{video}}/diagnostics/overlay.mp4",
    log:
        f"{LOGS}/diagnostics/{{video}}.log",
    benchmark:
        f"{BENCH}/diagnostics/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        model=config["model"],
        fit=dp_config.job_params(config, "fit"),
        window=config["diagnostics"]["smoothing_window"],
    script:
        "../workflow_scripts/diagnostics.py"
