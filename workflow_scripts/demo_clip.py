from deep_puppets.jobs import demo
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: demo.demo_clip(
        demo=sm.wildcards.demo,
        video_out=sm.output.video,
        truth_out=sm.output.truth,
        demo_cfg=sm.params.demo,
    ),
)
