from deep_puppets.ingest import probe_to_json
from deep_puppets.needs import check_video_length
from deep_puppets.workflow import run_script


def main(sm):
    info = probe_to_json(sm.input.video, sm.output.json, sm.wildcards.video, sm.params.on_truncated)
    # sm.config, not params: a changed gan.clip_len must not re-probe (and so rerun) everything
    check_video_length(sm.wildcards.video, sm.input.video, info.n_frames, sm.config)


run_script(snakemake, main)
