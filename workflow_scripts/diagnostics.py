from deep_puppets import jobs
from deep_puppets.workflow import run_script

OUTS = ("json", "camera_png", "tracking_png", "overlay_mp4")


def main(sm):
    jobs.tracking_diagnostics(
        sm.params.model,
        sm.input.model,
        sm.input.track,
        sm.input.identity,
        list(sm.input.landmarks),
        sm.input.video,
        sm.input.probe,
        {k: getattr(sm.output, k) for k in OUTS},
        sm.params.fit,
        sm.params.window,
        truth_file=sm.input.truth or None,
    )


run_script(snakemake, main)
