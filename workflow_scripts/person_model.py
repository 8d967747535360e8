from deep_puppets.jobs import fit
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: fit.person_model(
        landmark_files=list(sm.input.landmarks),
        out=sm.output.h5,
        n_components=sm.params.n_components,
        video=sm.wildcards.video,
    ),
)
