from deep_puppets.jobs import evaluate
from deep_puppets.workflow import run_script

OUTS = ("csv", "json", "plot", "seam_plot", "flicker_plot", "distance_plot", "heat_mp4", "side_mp4")

run_script(
    snakemake,
    lambda sm: evaluate.evaluate(
        generator=sm.input.generator,
        conditioning_file=sm.input.conditioning,
        flow_file=sm.input.flow,
        track_file=sm.input.track,
        video_path=sm.input.video,
        probe_json=sm.input.probe,
        outs={k: getattr(sm.output, k) for k in OUTS},
        composite_cfg=sm.params.composite,
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        device=sm.params.device,
    ),
)
