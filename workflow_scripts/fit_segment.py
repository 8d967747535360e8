from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.fit_segment(
        sm.params.model,
        sm.input.model,
        sm.input.identity,
        sm.input.landmarks,
        sm.output.h5,
        sm.params.fit,
        sm.threads,
    ),
)
