from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: jobs.estimate_texture(
        sm.params.model,
        sm.input.model,
        sm.input.track,
        sm.input.video,
        sm.input.probe,
        sm.output.h5,
        sm.params.texture["frames"],
        sm.params.texture["smooth"],
    ),
)
