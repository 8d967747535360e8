from deep_puppets.landmark_sets import summarize_landmarks, write_summary
from deep_puppets.workflow import run_script


def main(sm):
    summary = summarize_landmarks(
        list(sm.input.segments),
        sm.wildcards.video,
        sm.params.video_path,
        sm.params.min_valid_fraction,
        sm.params.min_faces,
    )
    write_summary(sm.output.json, summary)


run_script(snakemake, main)
