from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.gan_train(
        sm.input.conditioning,
        sm.input.flow,
        sm.output.generator,
        sm.output.losses,
        sm.params.gan,
        sm.params.render,
        sm.threads,
    ),
)
