from deep_puppets.jobs import diagnostics
from deep_puppets.workflow import run_script

OUTS = ("json", "camera_png", "tracking_png", "overlay_mp4")

run_script(
    snakemake,
    lambda sm: diagnostics.diagnostics(
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        track_file=sm.input.track,
        identity_file=sm.input.identity,
        landmark_files=list(sm.input.landmarks),
        video_path=sm.input.video,
        probe_json=sm.input.probe,
        outs={k: getattr(sm.output, k) for k in OUTS},
        fit_cfg=sm.params.fit,
        window=sm.params.window,
        truth_file=sm.input.truth or None,
    ),
)
