from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.transfer_pair(
        sm.params.model,
        sm.input.source_model,
        sm.input.target_model,
        sm.input.source_track,
        sm.input.target_track,
        sm.output.h5,
        sm.params.mode,
        sm.params.transfer,
    ),
)
