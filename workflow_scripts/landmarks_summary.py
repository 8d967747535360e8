from deep_puppets.jobs import landmarks
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: landmarks.landmarks_summary(
        segment_files=list(sm.input.segments),
        video=sm.wildcards.video,
        video_path=sm.params.video_path,
        min_valid_fraction=sm.params.min_valid_fraction,
        min_faces=sm.params.min_faces,
        out=sm.output.json,
    ),
)
