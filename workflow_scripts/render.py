from deep_puppets.jobs import render
from deep_puppets.render.conditioning_file import STREAMS
from deep_puppets.workflow import run_script


def main(sm):
    kw = {
        "model_cfg": sm.params.model,
        "model_file": sm.input.model,
        "texture_file": sm.input.texture,
        "out": sm.output.h5,
        "previews": dict(zip(STREAMS, sm.output.previews)),
        "render_cfg": sm.params.render,
        "framing_cfg": sm.params.framing,
    }
    if sm.rule == "render_track":
        render.render_track(track_file=sm.input.params, **kw)
    else:
        render.render_pair(transfer_file=sm.input.params, **kw)


run_script(snakemake, main)
