from deep_puppets.jobs import experiments
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: experiments.experiment_table(
        video=sm.wildcards.video,
        runs=sm.params.runs,
        summaries=list(sm.input.summaries),
        benchmarks=list(sm.input.benchmarks),
        overrides=sm.params.overrides,
        pairs=list(sm.params.pairs),
        fidelity=list(sm.input.fidelity),
        outs={"csv": sm.output.csv, "html": sm.output.html, "png": sm.output.png},
    ),
)
