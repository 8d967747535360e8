from deep_puppets import jobs
from deep_puppets.workflow import run_script

OUTS = ("csv", "json", "plot", "seam_plot", "heat_mp4", "side_mp4")


def main(sm):
    jobs.evaluate_target(
        sm.input.generator,
        sm.input.conditioning,
        sm.input.flow,
        sm.input.track,
        sm.input.video,
        sm.input.probe,
        {k: getattr(sm.output, k) for k in OUTS},
        sm.params.composite,
        device=sm.params.device,
    )


run_script(snakemake, main)
