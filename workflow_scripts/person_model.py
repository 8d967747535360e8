from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.build_person_model(
        list(sm.input.landmarks), sm.output.h5, sm.params.n_components, sm.wildcards.video
    ),
)
