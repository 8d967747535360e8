from deep_puppets import jobs
from deep_puppets.workflow import run_script


def main(sm):
    args = (sm.params.model, sm.input.model, sm.wildcards.kind, sm.wildcards.name, sm.input.data)
    if sm.rule == "export_arkit":
        jobs.export_arkit(*args, sm.output.csv)
    elif sm.rule == "export_meshes":
        jobs.export_meshes(*args, sm.output.folder, sm.params.meshes)
    else:
        jobs.export_face(*args, {"glb": sm.output.glb, "csv": sm.output.csv, "json": sm.output.json})


run_script(snakemake, main)
