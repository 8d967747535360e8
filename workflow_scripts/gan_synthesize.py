from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.gan_synthesize(
        sm.input.generator,
        sm.input.conditioning,
        sm.input.transfer,
        sm.input.source,
        sm.input.source_probe,
        sm.input.target,
        sm.input.target_probe,
        sm.input.target_conditioning,
        sm.output.video,
        sm.output.side_by_side,
        sm.params.composite,
    ),
)
