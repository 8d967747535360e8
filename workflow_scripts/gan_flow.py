from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.gan_flow(
        sm.input.video, sm.input.conditioning, sm.output.h5, sm.params.gan, sm.params.render
    ),
)
