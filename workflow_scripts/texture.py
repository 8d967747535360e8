from deep_puppets.jobs import texture
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: texture.texture(
        model_cfg=sm.params.model,
        model_file=sm.input.model,
        track_file=sm.input.track,
        video_path=sm.input.video,
        probe_json=sm.input.probe,
        out=sm.output.h5,
        n_frames=sm.params.texture["frames"],
        smooth=sm.params.texture["smooth"],
    ),
)
