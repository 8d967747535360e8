from deep_puppets.demo import make_demo_clip
from deep_puppets.workflow import run_script


def main(sm):
    d = sm.params.demo
    make_demo_clip(
        sm.wildcards.demo.removeprefix("demo_"),
        sm.output.video,
        sm.output.truth,
        n_frames=d["n_frames"],
        size=d["size"],
        fps=d["fps"],
        seed=d["seed"],
    )


run_script(snakemake, main)
