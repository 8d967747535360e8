from deep_puppets.jobs import synthesize
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: synthesize.gan_synthesize(
        generator=sm.input.generator,
        conditioning_file=sm.input.conditioning,
        transfer_file=sm.input.transfer,
        source_video=sm.input.source,
        source_probe=sm.input.source_probe,
        target_video=sm.input.target,
        target_probe=sm.input.target_probe,
        target_conditioning=sm.input.target_conditioning,
        out_mp4=sm.output.video,
        side_mp4=sm.output.side_by_side,
        composite_cfg=sm.params.composite,
    ),
)
