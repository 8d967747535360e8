from deep_puppets import jobs
from deep_puppets.render.conditioning_file import STREAMS
from deep_puppets.workflow import run_script


def main(sm):
    jobs.render_conditioning(
        sm.params.model,
        sm.input.model,
        sm.input.params,
        sm.input.texture,
        sm.output.h5,
        dict(zip(STREAMS, sm.output.previews)),
        sm.params.render,
        sm.params.kind,
        sm.params.framing,
    )


run_script(snakemake, main)
