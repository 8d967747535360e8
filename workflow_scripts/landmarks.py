from deep_puppets.ingest import read_probe, segment_of
from deep_puppets.landmarks import LandmarkSettings, run_segment
from deep_puppets.workflow import run_script


def main(sm):
    info = read_probe(sm.input.probe)
    run_segment(
        sm.wildcards.video,
        sm.input.video,
        info,
        segment_of(info, sm.params.segments, sm.wildcards.seg),
        sm.output.h5,
        LandmarkSettings.from_config(sm.params.settings),
    )


run_script(snakemake, main)
