"""Exports (issue 13, item 4): the glTF loads back with the right mesh, morph targets and animation, and its
animation reproduces the track; the parameter CSV re-applied to the model reproduces the track's posed
vertices to 1e-5 px; OBJ/PLY sequences on request; the ICT model's ARKit CSV has Live Link Face's columns."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pygltflib
import pytest
import trimesh

from deep_puppets import export
from deep_puppets.camera import project, rotation_matrix
from deep_puppets.errors import InputError
from deep_puppets.jobs.model import ScreenVertices
from deep_puppets.models.person import load_person_model

from .conftest import TINY_FULL, copy_run, merged, run_workflow
from .test_integrity import corrupt


def _world_vertices(anim: export.FaceAnimation) -> np.ndarray:
    """Posed vertices (T, N, 3) in the glTF world (metres, Y up), all frames at once: what the .glb animation
    shows at each frame, computed apart from the per-frame mesh writer."""
    return export.WorldFrame.of(anim).from_image(export.posed_vertices(anim.model, anim.p, anim.q, anim.camera))

SOURCE, TARGET, PAIR = "demo_source", "demo_target", "demo_source__demo_target__pose"
FLIP = np.diag([1.0, -1.0, -1.0])
# Live Link Face's CSV header, as the app writes it (Epic's Live Link Face for iOS, "Export take" -> CSV).
LIVE_LINK_FACE_HEADER = [
    "Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft",
    "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft",
    "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut", "HeadYaw", "HeadPitch",
    "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
]


# ------------------------------------------------------------------------------------------- helpers


def accessor_array(g: pygltflib.GLTF2, index: int) -> np.ndarray:
    """An accessor's data as (count, components) or (count,) — read independently of the writer."""
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    data = g.binary_blob()
    start = view.byteOffset + (acc.byteOffset or 0)
    a = np.frombuffer(data, dtype, acc.count * width, start)
    return a if width == 1 else a.reshape(acc.count, width)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of glTF quaternions (x, y, z, w)."""
    x, y, z, w = np.asarray(q, float).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)  # fmt: skip


def check_glb(path, model, p, q, camera, fps: float, names) -> None:
    """The .glb against the face it exports: spec invariants, mesh, morph targets, and its animation evaluated at
    every keyframe, mapped back to the image by scenes[0].extras, equals the posed vertices of the fit."""
    T = len(q)
    g = pygltflib.GLTF2().load(str(path))
    assert g.asset.version == "2.0"
    assert all(v.byteOffset % 4 == 0 for v in g.bufferViews)
    prim = g.meshes[0].primitives[0]
    assert g.bufferViews[g.accessors[prim.indices].bufferView].target == pygltflib.ELEMENT_ARRAY_BUFFER
    assert g.accessors[prim.attributes.POSITION].count == model.n_vertices
    expected = []  # one target per component in [0, 1]; otherwise the sides it uses, name+ and name-, weights in [0, 1]
    for name, qj in zip(names, np.asarray(q).T):
        expected += [name] if qj.min() >= 0 and qj.max() <= 1 else [name + "+"] * int(qj.max() > 0) + [name + "-"] * int(qj.min() < 0)
    assert len(prim.targets) == len(expected) == len(g.meshes[0].weights)
    assert g.meshes[0].extras["targetNames"] == expected
    for acc in [prim.attributes.POSITION] + [t["POSITION"] if isinstance(t, dict) else t.POSITION for t in prim.targets]:
        a = accessor_array(g, acc)
        assert g.bufferViews[g.accessors[acc].bufferView].target == pygltflib.ARRAY_BUFFER
        assert np.array_equal(g.accessors[acc].min, a.min(0)) and np.array_equal(g.accessors[acc].max, a.max(0))
    tri = accessor_array(g, prim.indices).reshape(-1, 3)
    assert np.array_equal(tri, model.triangles)

    anim = g.animations[0]
    paths = {c.target.path: anim.samplers[c.sampler] for c in anim.channels}
    assert set(paths) == {"translation", "rotation", "scale", "weights"} and all(c.target.node == 0 for c in anim.channels)
    times = accessor_array(g, paths["weights"].input)
    assert len(times) == T and g.accessors[paths["weights"].input].max == [pytest.approx((T - 1) / fps)]
    assert np.allclose(times, np.arange(T) / fps, atol=1e-6) and all(s.interpolation == "LINEAR" for s in paths.values())
    weights = accessor_array(g, paths["weights"].output).reshape(T, -1)
    assert weights.shape == (T, len(prim.targets))  # weights per keyframe = number of morph targets
    assert weights.min() >= 0 and weights.max() <= 1  # Blender clamps shape keys to their [0, 1] sliders
    parts = g.meshes[0].extras["targetComponents"]
    coefficients = np.zeros_like(np.asarray(q, float))
    for part, w in zip(parts, weights.T):
        coefficients[:, part["index"]] += part["factor"] * w
    assert np.allclose(coefficients, q, rtol=1e-6, atol=1e-6 * np.abs(q).max())  # the coefficients, recovered

    base = accessor_array(g, prim.attributes.POSITION).astype(float)
    deltas = np.stack([accessor_array(g, t["POSITION"] if isinstance(t, dict) else t.POSITION) for t in prim.targets]).astype(float)
    local = base + np.tensordot(weights.astype(float), deltas, axes=(1, 0))  # (T, N, 3) metres
    R = quaternion_matrices(accessor_array(g, paths["rotation"].output))
    s = accessor_array(g, paths["scale"].output).astype(float)
    assert np.allclose(s, s[:, :1])  # uniform scale
    world = np.einsum("tij,tnj->tni", R, local) * s[:, None, :1] + accessor_array(g, paths["translation"].output)[:, None]
    frame = g.scenes[0].extras["image_from_world"]
    image = world @ FLIP.T * frame["pixels_per_metre"] + np.asarray(frame["offset_px"])
    truth = project(model.shape(p, q), camera)
    size = np.ptp(truth[..., 0])
    err = np.abs(image - truth).max()
    assert err < 1e-6 * size, (err, size)  # float32 storage: ~1e-7 of the face's size
    assert len(trimesh.load(str(path), force="mesh").vertices) == model.n_vertices


def check_parameters(csv, meta, model, p, q, camera, names) -> None:
    """The CSV read back with pandas, re-applied to the model (identity from the sidecar JSON), reproduces the
    posed vertices of the fit to 1e-5 px."""
    table = pd.read_csv(csv)
    assert list(table.columns[:10]) == ["frame", "time_s", "valid", *export.POSE_COLUMNS]
    assert list(table.columns[10:]) == list(names)
    info = json.loads(Path(meta).read_text())
    assert info["expression_names"] == list(names) and info["n_frames"] == len(q)
    rebuilt = project(model.shape(np.array(info["identity"]), table[names].to_numpy(float)), export.cameras_from_table(table))
    screen = ScreenVertices(model, p, q, camera)
    truth = np.stack([screen[t] for t in range(len(screen))])  # what the renderer draws from the track
    err = np.abs(rebuilt - truth).max()
    assert err < 1e-5, err


# ------------------------------------------------------------------------------------------- the tiny run


@pytest.mark.slow
def test_exports_of_the_tiny_run_round_trip(tiny_full_run):
    """`all` wrote every export of both videos and the pair; each glTF and parameter CSV reproduces its face."""
    from deep_puppets.tracks import read_track
    from deep_puppets.transfer_files import read_transfer

    results = tiny_full_run / "results"
    faces = []
    for video in (SOURCE, TARGET):
        fit, attrs = read_track(results / f"videos/{video}/track.h5")
        faces.append((f"videos/{video}", video, fit.p, fit.q, fit.camera, attrs["fps"]))
    tr, attrs = read_transfer(results / f"pairs/{PAIR}/transfer.h5")
    faces.append((f"pairs/{PAIR}", TARGET, tr.p, tr.q, tr.camera, attrs["fps"]))
    assert not np.allclose(faces[2][3], faces[1][3][: len(faces[2][3])])  # the pair's target moves as the source
    for rel, model_of, p, q, camera, fps in faces:
        model = load_person_model(results / f"videos/{model_of}/model.h5")
        out = results / "export" / rel
        names = [f"expr_{j:02d}" for j in range(model.n_exp)]  # a person (PCA) model has no names
        check_glb(out / "face.glb", model, p, q, camera, fps, names)
        check_parameters(out / "parameters.csv", out / "parameters.json", model, p, q, camera, names)
        assert not (out / "arkit.csv").exists() and not (out / "ply").exists() and not (out / "obj").exists()
    log = (results / f"logs/export_face/pairs/{PAIR}.log").read_text()
    assert "no ARKit CSV" in log


@pytest.mark.slow
def test_mesh_sequence_on_request_and_a_damaged_track_is_one_line(tiny_full_run, tmp_path):
    """export.meshes: ply adds one PLY per frame (the glTF's posed mesh) and reruns nothing else; a corrupted
    track fails its exports with one line naming the file and the dataset, the other faces export."""
    from deep_puppets.tracks import read_track

    work = copy_run(tiny_full_run, tmp_path / "run")
    track = work / f"results/videos/{SOURCE}/track.h5"
    stat = track.stat()
    corrupt(track, "q")
    os.utime(track, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # damaged in place, same time stamp: nothing reruns upstream
    for f in (work / f"results/export/videos/{SOURCE}").iterdir():
        f.unlink()
    config = merged(TINY_FULL, {"export": {"meshes": "ply"}})
    r = run_workflow(work, "--cores", "2", "--keep-going", "export_all", config=config, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    errors = [line for line in out.splitlines() if re.match(r"Error in rule export_\w+: \S", line)]  # (not Snakemake's own header)
    assert len(errors) == 2 and {e.split(":")[0] for e in errors} == {"Error in rule export_face", "Error in rule export_meshes"}, errors
    assert all(f"videos/{SOURCE}/track.h5: dataset 'q' is corrupted" in e for e in errors), errors
    ran = set(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out))
    assert ran == {"export_meshes"}, ran  # the other faces' glTF/CSV were up to date

    fit, _ = read_track(work / f"results/videos/{TARGET}/track.h5")
    model = load_person_model(work / f"results/videos/{TARGET}/model.h5")
    anim = export.FaceAnimation(TARGET, model, fit.p, fit.q, fit.camera, fit.valid, 25.0, 160, 160)
    world = _world_vertices(anim)
    files = sorted((work / f"results/export/videos/{TARGET}/ply").glob("*.ply"))
    assert [f.name for f in files] == [f"frame_{t:05d}.ply" for t in range(fit.n_frames)]
    for t in (0, fit.n_frames - 1):
        mesh = trimesh.load(files[t], process=False)
        assert np.allclose(mesh.vertices, world[t], atol=1e-6) and np.array_equal(mesh.faces, model.triangles)
    assert len(list((work / f"results/export/pairs/{PAIR}/ply").glob("*.ply"))) == fit.n_frames  # the source's 40 frames
    assert not (work / f"results/export/videos/{SOURCE}/ply").exists()


def test_obj_sequence_matches_the_ply_one(tmp_path):
    from .synthetic_faces import synthetic_model, synthetic_sequence

    model = synthetic_model(n_vertices=200, k_id=3, k_exp=4, seed=0)
    seq = synthetic_sequence(model, 3, seed=1)
    anim = export.FaceAnimation("x", model, seq.p, seq.q, seq.camera, seq.valid, 30.0, 640, 480)
    export.write_mesh_sequence(tmp_path / "obj", anim, "obj")
    export.write_mesh_sequence(tmp_path / "ply", anim, "ply")
    for t in range(3):
        a = trimesh.load(tmp_path / f"obj/frame_{t:05d}.obj", process=False)
        b = trimesh.load(tmp_path / f"ply/frame_{t:05d}.ply", process=False)
        assert np.allclose(a.vertices, b.vertices, atol=1e-6) and np.array_equal(a.faces, b.faces)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj", "ply"]  # no temporary folder left


@pytest.mark.parametrize("axis, column", [(1, "yaw_deg"), (0, "pitch_deg"), (2, "roll_deg")])
def test_euler_columns_follow_the_stated_convention(axis, column):
    """A rotation about the model's y (up) axis is yaw, about x pitch, about z roll; positive yaw turns the nose
    (+z) toward +x (the subject's left), positive pitch turns it down, positive roll lifts the subject's left."""
    from .synthetic_faces import synthetic_model

    model = synthetic_model(n_vertices=50, k_id=2, k_exp=2, seed=0)
    camera = np.zeros((1, 7))
    camera[0, axis], camera[0, 6] = np.radians(20.0), 3.0
    anim = export.FaceAnimation("x", model, np.zeros(2), np.zeros((1, 2)), camera, np.ones(1, bool), 25.0, 64, 64)
    row = export.parameter_table(anim).iloc[0]
    assert row[column] == pytest.approx(20.0) and sum(abs(row[c]) for c in ("yaw_deg", "pitch_deg", "roll_deg")) == pytest.approx(20.0)
    R = rotation_matrix(camera[0, :3])
    probe = {1: (R @ [0, 0, 1])[0] > 0, 0: (R @ [0, 0, 1])[1] < 0, 2: (R @ [1, 0, 0])[1] > 0}[axis]
    assert probe


# ------------------------------------------------------------------------------------------- ICT / ARKit


@pytest.mark.shared
def test_ict_fit_exports_live_link_face_csv(ict_model_path, tmp_path):
    """A fit with the ICT model: the glTF carries its 55 named components (53 ARKit-like + 2 gaze), the
    parameter CSV round-trips, and the ARKit CSV has Live Link Face's 61 columns in order, weights in [0, 1],
    the merged shapes averaged, TongueOut 0, head angles in radians."""
    from deep_puppets.fitting import solve_segment
    from deep_puppets.models.ict import load_ict

    from .synthetic_faces import synthetic_sequence

    ict = load_ict(ict_model_path)
    seq = synthetic_sequence(ict, 12, noise_px=1.0, seed=3)
    fit = solve_segment(ict, seq.landmarks, seq.valid, p=seq.p)
    anim = export.FaceAnimation("ict", ict, fit.p, fit.q, fit.camera, fit.valid, 30.0, 640, 480)
    export.write_face_exports(anim, tmp_path / "face.glb", tmp_path / "p.csv", tmp_path / "p.json")
    check_glb(tmp_path / "face.glb", ict, fit.p, fit.q, fit.camera, 30.0, ict.exp_names)
    check_parameters(tmp_path / "p.csv", tmp_path / "p.json", ict, fit.p, fit.q, fit.camera, list(ict.exp_names))

    export.write_arkit_csv(tmp_path / "arkit.csv", anim)
    table = pd.read_csv(tmp_path / "arkit.csv")
    assert list(table.columns) == LIVE_LINK_FACE_HEADER
    shapes = table[LIVE_LINK_FACE_HEADER[2:54]].to_numpy()
    assert shapes.shape == (12, 52) and shapes.min() >= 0 and shapes.max() <= 1
    assert (table["BlendShapeCount"] == 61).all()
    assert table["Timecode"].iloc[0] == "00:00:00:00.000" and table["Timecode"].iloc[11] == "00:00:00:11.000"
    q = dict(zip(ict.exp_names, fit.q.T))
    assert np.allclose(table["JawOpen"], np.clip(q["jawOpen"], 0, 1), atol=1e-6)
    assert np.allclose(table["EyeBlinkRight"], np.clip(q["eyeBlink_R"], 0, 1), atol=1e-6)
    assert np.allclose(table["BrowInnerUp"], np.clip((q["browInnerUp_L"] + q["browInnerUp_R"]) / 2, 0, 1), atol=1e-6)
    assert (table["TongueOut"] == 0).all() and (table[["LeftEyeRoll", "RightEyeRoll"]] == 0).all().all()
    assert np.allclose(table["LeftEyeYaw"], q["gazeYaw"], atol=1e-6)
    params = pd.read_csv(tmp_path / "p.csv")
    assert np.allclose(table[["HeadYaw", "HeadPitch", "HeadRoll"]], np.radians(params[["yaw_deg", "pitch_deg", "roll_deg"]]), atol=1e-6)
    # ICT's _L shapes are on the subject's left (+x), as ARKit's Left ones
    d = np.linalg.norm(ict.exp_basis[ict.exp_names.index("eyeBlink_L")], axis=1)
    assert (ict.mean[:, 0] * d).sum() / d.sum() > 1.0


@pytest.mark.slow
def test_arkit_csv_is_refused_for_a_person_model_in_one_line(tiny_full_run):
    model = load_person_model(tiny_full_run / f"results/videos/{TARGET}/model.h5")
    anim = export.video_animation(tiny_full_run / f"results/videos/{TARGET}/track.h5", model)
    with pytest.raises(InputError, match="no ARKit-named blendshapes") as e:
        export.arkit_table(anim)
    assert "\n" not in str(e.value)
    other = load_person_model(tiny_full_run / f"results/videos/{SOURCE}/model.h5")
    with pytest.raises(InputError, match="fitted with model 'person:demo_target'"):
        export.video_animation(tiny_full_run / f"results/videos/{TARGET}/track.h5", other)
