# Exports of the fitted faces (per video, from its track) and of the re-animated targets (per pair, from the
# transfer), for tools outside the project (deep_puppets/export.py has the conventions). Target: export_all (in
# the Snakefile; the CLI's `deep-puppets export DIR` runs it; `all` includes it: an export takes about a second).
#
#   results/export/
#     videos/<video>/              one per configured video (its own motion)
#     pairs/<source>__<target>__<pose|expr>/   one per pair (the target driven by the source)
#       face.glb          glTF 2.0, binary: identity mesh, expression basis as morph targets (names in
#                         mesh.extras.targetNames), per-frame weights + head translation/rotation/scale as
#                         one animation; Y up, metres (Blender: File > Import > glTF 2.0)
#       parameters.csv    per frame: frame, time_s, valid, yaw_deg, pitch_deg, roll_deg, tx, ty, tz, scale, then the
#                         expression coefficients by name (the model's names, else expr_00 ...)
#       parameters.json   identity coefficients, model, fps, frame size, rotation convention
#       arkit.csv         Live Link Face-style ARKit blendshape CSV (model.type ict only)
#       obj/ or ply/      posed mesh per frame, frame_00000.obj ... (export.meshes: obj|ply; default none)


rule export_face:
    input:
        data=export_data,
        model=export_model,
    output:
        glb=f"{RESULTS}/export/{{kind}}/{{name}}/face.glb",
        csv=f"{RESULTS}/export/{{kind}}/{{name}}/parameters.csv",
        json=f"{RESULTS}/export/{{kind}}/{{name}}/parameters.json",
    log:
        f"{LOGS}/export_face/{{kind}}/{{name}}.log",
    benchmark:
        f"{BENCH}/export_face/{{kind}}/{{name}}.tsv"
    wildcard_constraints:
        kind="videos|pairs",
        name=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=config["model"],
    script:
        "../workflow_scripts/export.py"


rule export_arkit:
    input:
        data=export_data,
        model=export_model,
    output:
        csv=f"{RESULTS}/export/{{kind}}/{{name}}/arkit.csv",
    log:
        f"{LOGS}/export_arkit/{{kind}}/{{name}}.log",
    benchmark:
        f"{BENCH}/export_arkit/{{kind}}/{{name}}.tsv"
    wildcard_constraints:
        kind="videos|pairs",
        name=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model=config["model"],
    script:
        "../workflow_scripts/export.py"


rule export_meshes:
    input:
        data=export_data,
        model=export_model,
    output:
        folder=directory(f"{RESULTS}/export/{{kind}}/{{name}}/{{fmt}}"),
    log:
        f"{LOGS}/export_meshes/{{kind}}/{{name}}_{{fmt}}.log",
    benchmark:
        f"{BENCH}/export_meshes/{{kind}}/{{name}}_{{fmt}}.tsv"
    wildcard_constraints:
        kind="videos|pairs",
        name=r"[A-Za-z0-9][A-Za-z0-9_-]*",
        fmt="obj|ply",
    conda:
        "../envs/deep-puppets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        model=config["model"],
        meshes=lambda wc: wc.fmt,
    script:
        "../workflow_scripts/export.py"
