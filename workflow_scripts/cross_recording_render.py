from deep_puppets.jobs import render
from deep_puppets.render.conditioning_file import STREAMS
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: render.render_cross(
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        track_file=sm.input.params,
        texture_file=sm.input.texture,
        texture_model_file=sm.input.texture_model,
        out=sm.output.h5,
        previews=dict(zip(STREAMS, sm.output.previews)),
        render_cfg=sm.params.render,
        framing_cfg=sm.params.framing,
    ),
)
