from deep_puppets.jobs import fit
from deep_puppets.workflow import run_script

run_script(
    snakemake, lambda sm: fit.track(fit_files=list(sm.input.fits), out=sm.output.h5)
)
