from deep_puppets.jobs import ingest
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: ingest.probe(
        video=sm.wildcards.video,
        video_path=sm.input.video,
        out=sm.output.json,
        on_truncated=sm.params.on_truncated,
        # sm.config, not params: a changed gan.clip_len must not re-probe (and so rerun) everything
        config=sm.config,
    ),
)
