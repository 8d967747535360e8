from deep_puppets import jobs
from deep_puppets.workflow import run_script


def main(sm):
    jobs.report_page(sm.output.folder, sm.params.videos, sm.params.pairs, sm.params.targets, sm.input.exports)


run_script(snakemake, main)
