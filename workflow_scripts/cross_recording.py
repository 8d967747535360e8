from deep_puppets.jobs import cross_recording
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: cross_recording.cross_recording(
        generator=sm.input.generator,
        train_flow=sm.input.train_flow,
        train_track=sm.input.train_track,
        train_landmarks=list(sm.input.train_landmarks),
        conditioning_file=sm.input.conditioning,
        track_file=sm.input.track,
        landmarks=list(sm.input.landmarks),
        video_path=sm.input.video,
        probe_json=sm.input.probe,
        outs={k: getattr(sm.output, k) for k in ("csv", "json", "side_mp4")},
        composite_cfg=sm.params.composite,
        names=(sm.wildcards.train, sm.wildcards.test),
        device=sm.params.device,
    ),
)
