from deep_puppets.jobs import landmarks
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: landmarks.landmarks(
        video=sm.wildcards.video,
        video_path=sm.input.video,
        probe_json=sm.input.probe,
        segments_cfg=sm.params.segments,
        seg=sm.wildcards.seg,
        out=sm.output.h5,
        landmarks_cfg=sm.params.settings,
    ),
)
