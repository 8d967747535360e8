from deep_puppets import jobs
from deep_puppets.workflow import run_script

run_script(snakemake, lambda sm: jobs.merge_track(list(sm.input.fits), sm.output.h5))
