from deep_puppets.jobs import fit
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: fit.fit_identity(
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        landmark_files=list(sm.input.landmarks),
        out=sm.output.h5,
        fit_cfg=sm.params.fit,
        video=sm.wildcards.video,
        threads=sm.threads,
    ),
)
