# Conditioning input synthesis: colour, correspondence and eye-gaze images rendered with ModernGL (EGL),
# for each target's own track (training, self-reenactment) and for every source -> target pair.

from deep_puppets.render.conditioning_file import STREAMS


rule render_track:
    input:
        model=model_file,
        params=f"{RESULTS}/videos/{{video}}/track.h5",
        texture=f"{RESULTS}/videos/{{video}}/texture.h5",
    output:
        h5=f"{RESULTS}/videos/{{video}}/conditioning.h5",
        previews=expand(
            f"{RESULTS}/videos/{{{{video}}}}/conditioning_{{stream}}.mp4",
            stream=STREAMS,
        ),
    log:
        f"{LOGS}/render_track/{{video}}.log",
    benchmark:
        f"{BENCH}/render_track/{{video}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        model=config["model"],
        render=config["render"],
        framing=config["framing"],
        kind="track",
    script:
        "../workflow_scripts/render.py"


rule render_pair:
    input:
        model=pair_model_file("target"),
        params=f"{RESULTS}/pairs/{{pair}}/transfer.h5",
        texture=pair_file("target", "texture.h5"),
    output:
        h5=f"{RESULTS}/pairs/{{pair}}/conditioning.h5",
        previews=expand(f"{RESULTS}/pairs/{{{{pair}}}}/conditioning_{{stream}}.mp4", stream=STREAMS),
    log:
        f"{LOGS}/render_pair/{{pair}}.log",
    benchmark:
        f"{BENCH}/render_pair/{{pair}}.tsv"
    conda:
        "../envs/deep-puppets.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        model=config["model"],
        render=config["render"],
        framing=config["framing"],
        kind="transfer",
    script:
        "../workflow_scripts/render.py"
