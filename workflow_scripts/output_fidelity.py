from deep_puppets.jobs import transfer
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: transfer.output_fidelity(
        model_cfg=sm.params.model,
        landmarks_cfg=sm.params.landmarks,
        landmark_files=list(sm.input.landmarks),
        target_model_file=sm.input.target_model,
        transfer_file=sm.input.transfer,
        reenactment=sm.input.video,
        pair=sm.wildcards.pair,
        summary_json=sm.output.json,
        figure_png=sm.output.png,
    ),
)
