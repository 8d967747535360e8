from deep_puppets import jobs
from deep_puppets.workflow import run_script


def main(sm):
    jobs.video_pages(dict(sm.input.items()), dict(sm.output.items()))


run_script(snakemake, main)
