from deep_puppets.ingest import probe_to_json
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: probe_to_json(sm.input.video, sm.output.json, sm.wildcards.video, sm.params.on_truncated),
)
