"""How long the exports of one face take: glTF (.glb), parameter CSV + JSON, ARKit CSV, PLY sequence.

Synthetic motion (drawn from the model itself) of ``--frames`` frames at 30 fps for the person-model stand-in
(the MediaPipe topology, 478 vertices, 20 expression components) and, when ``../shared`` has it, the ICT model
(face region, ~12.5k vertices, 55 components). The glTF/CSV exports run in every `all`, so they must stay cheap:
target < 5 s for a 10-minute (18,000-frame) video with either model. Prints a table, then as its LAST line one
JSON object with every figure (seconds, file sizes in MB).

    .venv/bin/python benchmarks/export.py [--frames 18000] [--mesh-frames 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEP_PUPPETS_SHARED", REPO.parent / "shared"))
ICT_PATH = SHARED / "models/ict-facekit-light/ict_facekit_light_packed.npz"
sys.path.insert(0, str(REPO))


def models() -> dict:
    from tests.synthetic_faces import synthetic_model

    out = {"person": synthetic_model(n_vertices=478, k_id=0, k_exp=20, seed=0)}
    if ICT_PATH.exists():
        from deep_puppets.models.ict import load_ict

        out["ict"] = load_ict(ICT_PATH)
    return out


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return round(time.perf_counter() - t, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=18000)
    ap.add_argument("--mesh-frames", type=int, default=300)
    a = ap.parse_args()
    from deep_puppets import export
    from tests.synthetic_faces import synthetic_motion

    figures = {"frames": a.frames, "mesh_frames": a.mesh_frames, "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, model in models().items():
            p, q, cam = synthetic_motion(model, a.frames, seed=1)
            anim = export.FaceAnimation(name, model, p, q, cam, q[:, 0] == q[:, 0], 30.0, 1280, 720)
            row = {"vertices": model.n_vertices, "morph_targets": model.n_exp,
                   "glb_s": timed(lambda name=name, anim=anim: export.write_glb(tmp / f"{name}.glb", anim)),
                   "csv_s": timed(lambda name=name, anim=anim: export.write_parameters(tmp / f"{name}.csv", tmp / f"{name}.json", anim))}  # fmt: skip
            if export.has_arkit_shapes(model):
                row["arkit_s"] = timed(lambda name=name, anim=anim: export.write_arkit_csv(tmp / f"{name}-arkit.csv", anim))
            short = export.FaceAnimation(name, model, p, q[: a.mesh_frames], cam[: a.mesh_frames], anim.valid[: a.mesh_frames], 30.0, 1280, 720)
            row["ply_s"] = timed(lambda name=name, short=short: export.write_mesh_sequence(tmp / f"{name}-ply", short, "ply"))
            row["glb_mb"] = round((tmp / f"{name}.glb").stat().st_size / 1e6, 2)
            row["csv_mb"] = round((tmp / f"{name}.csv").stat().st_size / 1e6, 2)
            figures[name] = row
            print(name, row)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
