from deep_puppets.jobs import gan
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: gan.gan_flow(
        video_path=sm.input.video,
        conditioning_file=sm.input.conditioning,
        out=sm.output.h5,
        gan_cfg=sm.params.gan,
        render_cfg=sm.params.render,
    ),
)
