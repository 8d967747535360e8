from deep_puppets.jobs import transfer
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: transfer.expression_fidelity(
        model_cfg=sm.params.model,
        landmark_files=list(sm.input.landmarks),
        source_track=sm.input.source_track,
        source_model_file=sm.input.source_model,
        target_model_file=sm.input.target_model,
        transfer_file=sm.input.transfer,
        pair=sm.wildcards.pair,
        summary_json=sm.output.json,
        figure_png=sm.output.png,
    ),
)
