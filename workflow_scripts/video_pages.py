from deep_puppets.jobs import report
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: report.video_pages(
        mp4s=dict(sm.input.items()), pages=dict(sm.output.items())
    ),
)
