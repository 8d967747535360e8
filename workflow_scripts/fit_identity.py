from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.fit_identity(
        sm.params.model,
        sm.input.model,
        list(sm.input.landmarks),
        sm.output.h5,
        sm.params.fit,
        sm.wildcards.video,
        sm.threads,
    ),
)
