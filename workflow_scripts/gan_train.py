from deep_puppets.jobs import gan
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: gan.gan_train(
        conditioning_file=sm.input.conditioning,
        flow_file=sm.input.flow,
        generator_out=sm.output.generator,
        losses_png=sm.output.losses,
        gan_cfg=sm.params.gan,
        render_cfg=sm.params.render,
        threads=sm.threads,
    ),
)
