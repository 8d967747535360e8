from deep_puppets.jobs import report
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: report.report_page(
        out_dir=sm.output.folder,
        videos=sm.params.videos,
        pairs=sm.params.pairs,
        targets=sm.params.targets,
        exports=sm.input.exports,
    ),
)
