from deep_puppets.jobs import export
from deep_puppets.workflow import run_script


def main(sm):
    kw = {
        "model_cfg": sm.params.model,
        "model_file": sm.input.model,
        "kind": sm.wildcards.kind,
        "name": sm.wildcards.name,
        "data_file": sm.input.data,
    }
    if sm.rule == "export_arkit":
        export.export_arkit(out=sm.output.csv, **kw)
    elif sm.rule == "export_meshes":
        export.export_meshes(out=sm.output.folder, fmt=sm.params.meshes, **kw)
    else:
        export.export_face(
            outs={"glb": sm.output.glb, "csv": sm.output.csv, "json": sm.output.json},
            **kw,
        )


run_script(snakemake, main)
