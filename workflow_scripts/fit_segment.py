from deep_puppets.jobs import fit
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: fit.fit_segment(
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        identity_file=sm.input.identity,
        landmark_file=sm.input.landmarks,
        out=sm.output.h5,
        fit_cfg=sm.params.fit,
        threads=sm.threads,
    ),
)
