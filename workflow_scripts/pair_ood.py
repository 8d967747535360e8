from deep_puppets.jobs import evaluate
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: evaluate.pair_ood(
        transfer_file=sm.input.transfer,
        target_track=sm.input.target_track,
        target_model_file=sm.input.target_model,
        model_cfg=sm.params.model,
        held_out_fraction=sm.params.held_out_fraction,
        pair=sm.wildcards.pair,
        out_json=sm.output.json,
        out_png=sm.output.png,
    ),
)
