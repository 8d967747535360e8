from deep_puppets.jobs import cross_recording
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: cross_recording.cross_recording_table(
        runs=sm.params.runs,
        summaries=list(sm.input.summaries),
        within=dict(zip(sm.params.trained, sm.input.within, strict=True)),
        out_csv=sm.output.csv,
        out_html=sm.output.html,
    ),
)
