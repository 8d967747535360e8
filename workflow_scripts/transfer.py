from deep_puppets.jobs import transfer
from deep_puppets.workflow import run_script

run_script(
    snakemake,
    lambda sm: transfer.transfer(
        model_cfg=sm.params.model,
        source_model_file=sm.input.source_model,
        target_model_file=sm.input.target_model,
        source_track=sm.input.source_track,
        target_track=sm.input.target_track,
        out=sm.output.h5,
        mode=sm.params.mode,
        transfer_cfg=sm.params.transfer,
    ),
)
