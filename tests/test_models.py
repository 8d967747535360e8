"""Model providers: MediaPipe topology, person-specific model, ICT, BFM, registry."""

from __future__ import annotations

import json
import struct
import time

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.linalg import subspace_angles
from scipy.spatial.transform import Rotation

from deep_puppets.errors import ConfigError, InputError
from deep_puppets.models import bfm, facemesh, person
from deep_puppets.models.geometry import (
    apply_similarity,
    closest_point_on_triangles,
    similarity_transform,
)
from deep_puppets.models.registry import load_model

from .conftest import shared_file

CANON = facemesh.canonical_face()
MIRROR = np.array([int(np.argmin(np.linalg.norm(CANON[:468] - p * [-1, 1, 1], axis=1))) for p in CANON[:468]])


def _triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unnormalised normals ``(v1 − v0) × (v2 − v0)`` (twice the area): (..., F, 3)."""
    v = vertices[..., triangles, :]
    return np.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :])


def _edge_use(triangles: np.ndarray):
    """Directed-edge bookkeeping of a triangle list.

    Returns ``(edges, count, same_direction)``: the undirected edges (E, 2) (sorted pairs), how many
    triangles use each, and how many of those uses run in the same direction as the first use of that edge
    (a consistently oriented manifold has count 2 and same_direction 1 for every interior edge).
    """
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    forward = directed[:, 0] < directed[:, 1]
    key = np.sort(directed, axis=1)
    edges, inverse, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    first = np.full(len(edges), -1)
    order = np.arange(len(directed))
    first[inverse[::-1]] = order[::-1]  # first occurrence of each edge
    same = np.bincount(inverse, weights=(forward == forward[first[inverse]]).astype(float)).astype(int)
    return edges, count, same


# ------------------------------------------------------------------------------------------- topology
def test_facemesh_triangles_come_from_source_order_and_form_an_oriented_manifold():
    tri = facemesh.triangles()
    assert tri.shape == (852, 3) and tri.dtype == np.int32
    assert np.array_equal(np.unique(tri), np.arange(468))
    edges, count, same = _edge_use(tri)
    assert set(count) == {1, 2}
    assert (same[count == 2] == 1).all(), "every interior edge is used once in each direction"
    assert (count == 1).sum() == 88  # boundary: face oval 36 + eyes 16 + 16 + mouth 20

    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    got = {tuple(sorted(e)) for t in tri for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    assert got == {tuple(sorted(e)) for e in FACEMESH_TESSELATION}


def test_clique_search_would_find_false_triangles():
    """Why the source order matters: the edge set has 854 3-cliques, 2 more than the real triangles."""
    edges = {tuple(sorted(e)) for e in facemesh._connection_lists()["FACEMESH_TESSELATION"]}
    nbr: dict[int, set] = {}
    for a, b in edges:
        nbr.setdefault(a, set()).add(b)
        nbr.setdefault(b, set()).add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in nbr[a] & nbr[b]}
    assert len(cliques) == 854
    assert {tuple(sorted(t)) for t in facemesh.triangles()} < cliques


def test_triangles_face_the_viewer():
    tri = facemesh.triangles()
    normals = _triangle_normals(CANON, tri)
    assert (normals[:, 2] > 0).mean() > 0.95  # y up, z toward the viewer: +z normals
    # the same face in image pixels (x right, y down): negative signed area = counter-clockwise on screen
    img = CANON[:, :2] * [1, -1] * 30 + 256
    x, y = img[:, 0], img[:, 1]
    area = (x[tri[:, 1]] - x[tri[:, 0]]) * (y[tri[:, 2]] - y[tri[:, 0]]) - (x[tri[:, 2]] - x[tri[:, 0]]) * (y[tri[:, 1]] - y[tri[:, 0]])
    assert (area < 0).mean() > 0.95


def test_landmark_groups_and_iris_constants():
    assert list(facemesh.landmark_group("left_iris")) == list(facemesh.LEFT_IRIS[1:])
    assert list(facemesh.landmark_group("right_iris")) == list(facemesh.RIGHT_IRIS[1:])
    # subject's left is +x (image right) in the canonical frame
    assert CANON[facemesh.LEFT_EYE, 0].min() > 0 and CANON[facemesh.RIGHT_EYE, 0].max() < 0
    assert {33, 133} <= set(facemesh.RIGHT_EYE) and {263, 362} <= set(facemesh.LEFT_EYE)
    assert {61, 291, 0, 17} <= set(facemesh.LIPS) and 152 in facemesh.FACE_OVAL
    # canonical irises: centre inside the eye, contour order +x, +y, -x, -y
    for iris, eye in ((facemesh.RIGHT_IRIS, facemesh.RIGHT_EYE), (facemesh.LEFT_IRIS, facemesh.LEFT_EYE)):
        c, px, py, mx, my = CANON[list(iris)]
        assert np.allclose(c, CANON[eye].mean(axis=0))
        assert px[0] > c[0] > mx[0] and py[1] > c[1] > my[1]


def test_ibug_mapping_is_left_right_symmetric():
    m = facemesh.IBUG68_TO_MEDIAPIPE
    mirror_ibug = np.r_[16 - np.arange(17), 26 - np.arange(10), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                        45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                        54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]  # fmt: skip
    assert np.array_equal(MIRROR[m], m[mirror_ibug])
    assert m[30] == 4 and list(m[[36, 39, 42, 45]]) == [33, 133, 362, 263] and list(m[[48, 54]]) == [61, 291]


# ------------------------------------------------------------------------------------------- geometry
def test_closest_point_on_triangles_matches_dense_sampling():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(200, 3)) for _ in range(3))
    p = rng.normal(size=(200, 3)) * 2
    bary = closest_point_on_triangles(p, a, b, c)
    assert np.allclose(bary.sum(axis=1), 1) and (bary > -1e-9).all()
    got = np.linalg.norm(bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c - p, axis=1)
    u, v = np.meshgrid(np.linspace(0, 1, 101), np.linspace(0, 1, 101))
    keep = u + v <= 1
    w = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], axis=1)  # (S, 3)
    samples = np.einsum("sk,nkd->nsd", w, np.stack([a, b, c], axis=1))
    brute = np.linalg.norm(samples - p[:, None], axis=2).min(axis=1)
    assert (got <= brute + 1e-9).all() and (brute - got < 0.05).all()


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    rot = Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix()
    dst = 2.5 * src @ rot.T + [1, 2, 3]
    s, r, t = similarity_transform(src, dst)
    assert s == pytest.approx(2.5) and np.allclose(r, rot) and np.allclose(t, [1, 2, 3])


# ------------------------------------------------------------------------------------- person model
def _synthetic_video(rng, n_frames=400, k=4, noise_px=0.15):
    """Landmarks (pixels) of a known linear model seen under random similarity poses."""
    neutral = CANON * [1.05, 0.97, 1.0] + 0.05 * rng.normal(size=CANON.shape)  # another person
    movable = np.setdiff1d(np.arange(478), facemesh.STABLE_POINTS)
    raw = np.zeros((k, 478 * 3))
    for j in range(k):
        field = np.zeros((478, 3))
        field[movable] = rng.normal(size=(len(movable), 3))
        raw[j] = field.ravel()
    basis = np.linalg.qr(raw.T)[0].T.reshape(k, 478, 3)  # orthonormal, zero on the stable points
    sigma = np.array([6.0, 4.0, 3.0, 2.0])[:k]
    q = rng.normal(size=(n_frames, k)) * sigma
    shapes = neutral + np.tensordot(q, basis, axes=(1, 0))
    rots = Rotation.from_euler("yxz", rng.uniform([-25, -15, -10], [25, 15, 10], size=(n_frames, 3)), degrees=True).as_matrix()
    scale = rng.uniform(18, 30, n_frames)
    trans = np.c_[rng.uniform(150, 350, (n_frames, 2)), rng.uniform(-20, 20, n_frames)]
    posed = scale[:, None, None] * np.einsum("tij,tpj->tpi", rots, shapes) + trans[:, None]
    px = posed * [1, -1, -1] + rng.normal(scale=noise_px, size=posed.shape)  # y down, z into the screen
    return px, neutral, basis, sigma


@pytest.fixture(scope="module")
def synthetic_person():
    rng = np.random.default_rng(7)
    px, neutral, basis, sigma = _synthetic_video(rng)
    valid = np.ones(len(px), bool)
    valid[[5, 50, 300]] = False
    px[[5, 50, 300]] = np.nan
    px[77] = rng.uniform(0, 512, size=(478, 3))  # a garbage detection flagged valid
    model = person.build_person_model(px, valid, n_components=4, name="synthetic")
    return model, neutral, basis, sigma


def test_person_model_recovers_neutral_and_expression_subspace(synthetic_person):
    model, neutral, basis, sigma = synthetic_person
    # the model lives in the canonical frame: bring the true neutral there with a similarity on stable points
    st = facemesh.STABLE_POINTS
    s, rot, t = similarity_transform(neutral[st], CANON[st])
    true_neutral = apply_similarity(neutral, s, rot, t)
    assert np.sqrt(((model.mean - true_neutral) ** 2).sum(axis=1).mean()) < 0.05  # cm
    true_basis = (basis @ rot.T).reshape(len(basis), -1)
    angles = np.degrees(subspace_angles(model.exp_basis.reshape(model.n_exp, -1).T, true_basis.T))
    assert angles.max() < 3.0
    assert np.allclose(model.exp_std / model.exp_std[0], sigma / sigma[0], rtol=0.1)
    assert model.extra["explained_variance_ratio"].sum() > 0.98


def test_person_model_structure(synthetic_person):
    model = synthetic_person[0]
    assert model.n_vertices == 478 and model.n_id == 0 and model.unit == person.UNIT
    assert model.triangles.shape == (860, 3)
    assert np.allclose(model.landmark_points(model.mean), model.mean)  # landmark i = vertex i
    edges, count, same = _edge_use(model.triangles)
    assert (same[count == 2] == 1).all()
    assert (_triangle_normals(model.mean, model.triangles)[:, 2] > 0).mean() > 0.95
    comps = model.exp_basis.reshape(model.n_exp, -1)
    assert np.allclose(comps @ comps.T, np.eye(model.n_exp), atol=1e-8)
    build = model.extra["build"]
    assert build["n_valid"] == 397 and build["n_outliers"] >= 1
    residual = model.extra["frame_residual"]
    assert np.isnan(residual[[5, 50, 300]]).all() and residual[77] > 10 * np.nanmedian(residual)
    assert 77 not in model.extra["neutral_frames"]


def test_person_model_needs_enough_frames():
    px, *_ = _synthetic_video(np.random.default_rng(3), n_frames=10)
    with pytest.raises(ValueError, match="usable frames"):
        person.build_person_model(px, np.ones(10, bool))


def test_transfer_matrix_is_identity_between_equal_models(synthetic_person):
    model = synthetic_person[0]
    m = person.transfer_matrix(model, model, ridge=0.0)
    assert np.allclose(m, np.eye(model.n_exp), atol=1e-8)


def test_person_model_save_load_round_trip(tmp_path, synthetic_person):
    model = synthetic_person[0]
    path = person.save_model(tmp_path / "p.h5", model, {"video": "clip"})
    back = person.load_person_model(path)
    assert back.content_hash() == model.content_hash()
    for name in ("mean", "id_basis", "id_std", "exp_basis", "exp_std", "triangles", "lm_tri", "lm_bary", "lm_weight"):
        assert np.array_equal(getattr(back, name), getattr(model, name)), name
    for name in ("explained_variance_ratio", "neutral_frames"):
        assert np.array_equal(back.extra[name], model.extra[name])
    assert back.extra["attrs"]["video"] == "clip" and back.extra["build"] == model.extra["build"]
    assert back.unit == model.unit and back.name == model.name
    assert load_model({"type": "person", "path": "p.h5"}, base_dir=tmp_path).content_hash() == model.content_hash()


def test_person_model_file_errors_name_the_file(tmp_path, synthetic_person):
    path = person.save_model(tmp_path / "p.h5", synthetic_person[0])
    with h5py.File(path, "r+") as f:
        f["mean"][0, 0] += 1.0
    with pytest.raises(InputError, match="content_hash") as e:
        person.load_person_model(path)
    assert e.value.path == str(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["layout"] = "landmarks"
    with pytest.raises(InputError, match="expected layout 'person_model'"):
        person.load_person_model(other)
    with pytest.raises(InputError, match="does not exist"):
        person.load_person_model(tmp_path / "missing.h5")


# ------------------------------------------------------------------------------------------------ ICT
@pytest.fixture(scope="module")
def ict_face():
    from deep_puppets.models import ict

    path = shared_file("models/ict-facekit-light/ict_facekit_light_packed.npz")
    t0 = time.perf_counter()
    model = ict.load_ict(path)
    return model, time.perf_counter() - t0


@pytest.mark.shared
def test_ict_npz_loads_with_the_right_counts(ict_face):
    model, seconds = ict_face
    assert model.n_id == 100 and model.n_exp == 53 + 2
    assert model.exp_names[26] == "jawOpen" and model.exp_names[-2:] == ("gazeYaw", "gazePitch")
    assert np.all(model.id_std == 1) and model.unit == "cm"
    assert model.n_vertices == len(model.extra["vertex_ids"]) < 26719
    assert model.triangles.max() < model.n_vertices
    assert seconds < 10


@pytest.mark.shared
def test_ict_landmark_embedding_is_sane(ict_face):
    model = ict_face[0]
    pts = model.landmark_points(model.mean)
    lm68 = model.mean[model.extra["ibug68_vertices"]]
    pairs = {4: 30, 33: 36, 133: 39, 362: 42, 263: 45, 61: 48, 291: 54}  # nose tip, eye and mouth corners
    for mp, ib in pairs.items():
        assert np.linalg.norm(pts[mp] - lm68[ib]) < 0.1, (mp, ib)
    # ICT's neutral is left/right symmetric, so mirrored MediaPipe points must land on mirrored places
    mirrored = pts[MIRROR] * [-1, 1, 1]
    assert np.median(np.linalg.norm(pts[:468] - mirrored, axis=1)) < 0.05
    # points that are not anchors still land near their meaning: chin, forehead centre above the brows
    assert np.linalg.norm(pts[152] - lm68[8]) < 1.0
    assert pts[10, 1] > lm68[19, 1] + 2
    # irises: centres between the eye corners, contour order +x, +y, -x, -y
    for iris, (a, b) in ((facemesh.RIGHT_IRIS, (36, 39)), (facemesh.LEFT_IRIS, (42, 45))):
        c, px, py, mx, my = pts[list(iris)]
        lo, hi = sorted([lm68[a, 0], lm68[b, 0]])
        assert lo < c[0] < hi and px[0] > c[0] > mx[0] and py[1] > c[1] > my[1]
        assert np.linalg.norm(px - mx) == pytest.approx(2 * facemesh.IRIS_RADIUS_CM, rel=0.1)


@pytest.mark.shared
def test_ict_gaze_components_turn_the_irises(ict_face):
    model = ict_face[0]
    yaw, pitch = model.exp_names.index("gazeYaw"), model.exp_names.index("gazePitch")
    q = np.zeros(model.n_exp)
    q[yaw] = 0.2
    moved = model.landmark_points(model.shape(q=q)) - model.landmark_points(model.mean)
    assert (moved[list(facemesh.IRIS), 0] > 0.1).all() and np.abs(moved[:468]).max() == 0
    q[:] = 0
    q[pitch] = 0.2
    moved = model.landmark_points(model.shape(q=q)) - model.landmark_points(model.mean)
    assert (moved[list(facemesh.IRIS), 1] > 0.1).all()


@pytest.mark.shared
def test_ict_full_region_has_the_same_landmarks(ict_face):
    from deep_puppets.models import ict

    face = ict_face[0]
    full = ict.load_ict(shared_file("models/ict-facekit-light/ict_facekit_light_packed.npz"), region="full", gaze=False)
    assert full.n_vertices == 26719 and full.triangles.shape == (52220, 3) and full.n_exp == 53
    assert np.allclose(full.landmark_points(full.mean), face.landmark_points(face.mean))
    assert np.array_equal(full.mean[face.extra["vertex_ids"]], face.mean)


@pytest.mark.shared
def test_obj_reader_matches_the_packed_npz():
    from deep_puppets.models import ict

    obj = shared_file("models/ict-facekit-light/generic_neutral_mesh.obj")
    npz = np.load(shared_file("models/ict-facekit-light/ict_facekit_light_packed.npz"))
    v = ict.read_obj_vertices(obj)
    assert np.allclose(v, npz["neutral"], atol=1e-5)
    tri, mat, names, _ = ict.read_obj_faces(obj, len(v))
    assert np.array_equal(tri, npz["triangles"])
    assert np.array_equal(names[mat], npz["material_names"][npz["triangle_material"]])


def _write_obj(path, vertices, faces=(), materials=None):
    lines = [f"v {x} {y} {z}" for x, y, z in vertices]
    for i, f in enumerate(faces):
        if materials is not None:
            lines.append(f"usemtl {materials[i]}")
        lines.append("f " + " ".join(f"{j + 1}/{j + 1}" for j in f))
    path.write_text("\n".join(lines) + "\n")


def test_ict_folder_reader_on_a_tiny_synthetic_folder(tmp_path):
    from deep_puppets.models import ict

    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], float)
    _write_obj(tmp_path / ict.NEUTRAL_OBJ, v, [(0, 1, 2, 3), (1, 4, 2)], ["M_Face", "M_Teeth"])
    for i in range(2):
        _write_obj(tmp_path / f"identity{i:03d}.obj", v + 0.1 * (i + 1))
    for i, name in enumerate(["jawOpen", "eyeBlink_L"]):
        _write_obj(tmp_path / f"{name}.obj", v + [0, -0.5 * (i + 1), 0])
    (tmp_path / ict.INDEX_JSON).write_text(json.dumps({"expressions": ["jawOpen", "eyeBlink_L"], "idx_to_landmark_verts": [0] * 68}))
    a = ict.read_ict_folder(tmp_path)
    assert np.array_equal(a["triangles"], [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    assert list(a["material_names"][a["triangle_material"]]) == ["M_Face", "M_Face", "M_Teeth"]
    assert np.allclose(a["identity_deltas"][1], 0.2) and np.allclose(a["expression_deltas"][1][:, 1], -1.0)
    packed = ict.pack_ict_folder(tmp_path, tmp_path / "packed.npz")
    with np.load(packed) as z:
        assert np.array_equal(z["expression_names"], ["jawOpen", "eyeBlink_L"])
    # malformed folders name the file and the problem
    _write_obj(tmp_path / "eyeBlink_L.obj", v[:4])
    with pytest.raises(InputError, match="4 vertices") as e:
        ict.read_ict_folder(tmp_path)
    assert e.value.path.endswith("eyeBlink_L.obj")
    (tmp_path / "jawOpen.obj").unlink()
    with pytest.raises(InputError, match="missing") as e:
        ict.read_ict_folder(tmp_path)
    assert e.value.path.endswith("jawOpen.obj")


def test_ict_npz_errors_name_the_file(tmp_path):
    from deep_puppets.models import ict

    bad = tmp_path / "bad.npz"
    np.savez(bad, neutral=np.zeros((3, 3)))
    with pytest.raises(InputError, match="lacks") as e:
        ict.load_ict(bad)
    assert e.value.path == str(bad)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{k: np.array([{"a": 1}], dtype=object) for k in ict.REQUIRED_KEYS})
    with pytest.raises(InputError, match="allow_pickle"):
        ict.load_ict(pickled)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="npz"):
        ict.load_ict(tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------------------ BFM
# A tiny "face": 6 vertices in a 2 × 3 grid facing +z, 4 triangles counter-clockwise from the front.
GRID = np.array([[-1, -1, 0], [0, -1, 0.5], [1, -1, 0], [-1, 1, 0], [0, 1, 0.5], [1, 1, 0]], float)
GRID_TRI = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4]])


def _write_bfm2009(path, rng, tri=GRID_TRI):
    n, k = len(GRID), 3
    mu_um = (GRID * 1e4).reshape(-1, 1)  # 1 cm = 10^4 micrometres
    pcs = np.linalg.qr(rng.normal(size=(3 * n, k)))[0]
    ev = np.array([[3e3], [2e3], [1e3]])
    tex = rng.uniform(0, 255, size=(3 * n, 1))
    scipy.io.savemat(path, {"shapeMU": mu_um, "shapePC": pcs, "shapeEV": ev, "tl": tri + 1, "texMU": tex})
    return mu_um, pcs, ev, tex


def _write_exp_pca_bin(path, mean, comps):
    k, n3 = comps.shape
    path.write_bytes(struct.pack("<i", k) + struct.pack(f"<{n3}f", *mean) + struct.pack(f"<{k * n3}f", *comps.ravel()))


def test_bfm2009_loads_values_where_they_belong(tmp_path):
    rng = np.random.default_rng(0)
    mu_um, pcs, ev, tex = _write_bfm2009(tmp_path / "01_MorphableModel.mat", rng)
    index_1based = np.array([2, 3, 5, 6])  # the expression model covers 4 of the 6 vertices
    (tmp_path / "exp_idx.txt").write_text("\n".join(map(str, index_1based)))
    exp_mean = rng.normal(size=12).astype(np.float32)
    comps = rng.normal(size=(2, 12)).astype(np.float32)
    _write_exp_pca_bin(tmp_path / "Exp_Pca.bin", exp_mean, comps)
    (tmp_path / "std_exp.txt").write_text("5.0 7.0\n")

    m = bfm.load_bfm2009(
        tmp_path / "01_MorphableModel.mat", exp_path=tmp_path / "Exp_Pca.bin",
        exp_index_path=tmp_path / "exp_idx.txt", exp_std_path=tmp_path / "std_exp.txt",
    )  # fmt: skip
    assert m.unit == "cm" and np.allclose(m.mean, GRID)
    assert np.allclose(m.id_basis, pcs.T.reshape(3, 6, 3) * 1e-4) and np.allclose(m.id_std, ev.ravel())
    assert np.array_equal(m.triangles, GRID_TRI)  # 1-based → 0-based
    assert np.allclose(m.albedo, tex.reshape(6, 3) / 255)
    idx = index_1based - 1
    assert np.allclose(m.exp_basis[:, idx], comps.reshape(2, 4, 3) * 1e-4)
    assert np.all(m.exp_basis[:, [0, 3]] == 0) and np.allclose(m.exp_std, [5, 7])
    assert not m.lm_weight.any()  # no correspondence file: loads, but nothing to fit

    added = bfm.load_bfm2009(tmp_path / "01_MorphableModel.mat", exp_path=tmp_path / "Exp_Pca.bin",
                             exp_index_path=tmp_path / "exp_idx.txt", exp_mean="add")  # fmt: skip
    assert np.allclose(added.mean[idx], GRID[idx] + exp_mean.reshape(4, 3) * 1e-4, atol=1e-7)
    assert added.extra["exp_std_source"] == "unit" and np.all(added.exp_std == 1)


def test_bfm2009_inward_triangles_are_flipped(tmp_path):
    _write_bfm2009(tmp_path / "m.mat", np.random.default_rng(0), tri=GRID_TRI[:, ::-1])
    assert np.array_equal(bfm.load_bfm2009(tmp_path / "m.mat").triangles, GRID_TRI[:, ::-1][:, ::-1])


def test_bfm2009_malformed_files_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    mat = tmp_path / "m.mat"
    _write_bfm2009(mat, rng)
    bad_bin = tmp_path / "Exp_Pca.bin"
    _write_exp_pca_bin(bad_bin, np.zeros(18, np.float32), np.zeros((2, 18), np.float32))
    bad_bin.write_bytes(bad_bin.read_bytes()[:-4])
    with pytest.raises(InputError, match="size") as e:
        bfm.load_bfm2009(mat, exp_path=bad_bin)
    assert e.value.path == str(bad_bin)
    idx = tmp_path / "idx.txt"
    idx.write_text("0 1 2")  # 0 is not a 1-based index
    with pytest.raises(InputError, match="1-based") as e:
        bfm.load_bfm2009(mat, exp_path=bad_bin, exp_index_path=idx)
    assert e.value.path == str(idx)
    scipy.io.savemat(tmp_path / "nope.mat", {"shapeMU": np.zeros((18, 1))})
    with pytest.raises(InputError, match="shapePC") as e:
        bfm.load_bfm2009(tmp_path / "nope.mat")
    assert e.value.path == str(tmp_path / "nope.mat")
    (tmp_path / "junk.mat").write_bytes(b"garbage")
    with pytest.raises(InputError, match="MATLAB"):
        bfm.load_bfm2009(tmp_path / "junk.mat")


def _write_bfm2017(path, mean_mm, cells, rng, k_id=3, k_exp=2):
    n3 = mean_mm.size
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = mean_mm.ravel()
        f["shape/model/pcaBasis"] = np.linalg.qr(rng.normal(size=(n3, k_id)))[0]
        f["shape/model/pcaVariance"] = np.array([9.0, 4.0, 1.0])[:k_id]
        f["shape/representer/points"] = mean_mm.T
        f["shape/representer/cells"] = cells.T
        f["expression/model/mean"] = np.zeros(n3)
        f["expression/model/pcaBasis"] = np.linalg.qr(rng.normal(size=(n3, k_exp)))[0]
        f["expression/model/pcaVariance"] = np.array([16.0, 0.25])[:k_exp]
        f["color/model/mean"] = np.full(n3, 0.5)
        f["color/model/pcaBasis"] = np.zeros((n3, 1))
        f["color/model/pcaVariance"] = np.ones(1)


def test_bfm2017_loads_values_where_they_belong(tmp_path):
    rng = np.random.default_rng(0)
    _write_bfm2017(tmp_path / "bfm.h5", GRID * 10, GRID_TRI, rng)  # mm
    m = bfm.load_bfm2017(tmp_path / "bfm.h5")
    with h5py.File(tmp_path / "bfm.h5") as f:
        basis = f["shape/model/pcaBasis"][()]
        exp_basis = f["expression/model/pcaBasis"][()]
    assert np.allclose(m.mean, GRID) and np.array_equal(m.triangles, GRID_TRI)
    assert np.allclose(m.id_std, [3, 2, 1]) and np.allclose(m.exp_std, [4, 0.5])  # sqrt(variance)
    assert np.allclose(m.id_basis, basis.T.reshape(3, 6, 3) * 0.1)  # mm → cm
    assert np.allclose(m.exp_basis, exp_basis.T.reshape(2, 6, 3) * 0.1)
    assert np.allclose(m.albedo, 0.5)


def test_bfm2017_malformed_files_name_the_file(tmp_path):
    path = tmp_path / "bfm.h5"
    with h5py.File(path, "w") as f:
        f["shape/model/mean"] = np.zeros(18)
    with pytest.raises(InputError, match="pcaBasis") as e:
        bfm.load_bfm2017(path)
    assert e.value.path == str(path)
    (tmp_path / "junk.h5").write_text("no")
    with pytest.raises(InputError, match="HDF5"):
        bfm.load_bfm2017(tmp_path / "junk.h5")


def test_bfm_landmark_file_with_478_vertex_indices(tmp_path):
    rng = np.random.default_rng(0)
    _write_bfm2017(tmp_path / "bfm.h5", GRID * 10, GRID_TRI, rng)
    idx = rng.integers(0, 6, size=478).tolist()
    idx[470] = None
    (tmp_path / "lm.json").write_text(json.dumps({"mediapipe": [i + 1 if i is not None else None for i in idx], "index_base": 1}))
    m = bfm.load_bfm2017(tmp_path / "bfm.h5", landmarks_path=tmp_path / "lm.json")
    used = np.array([i is not None for i in idx])
    assert np.allclose(m.landmark_points(m.mean)[used], m.mean[np.array(idx)[used].astype(int)])
    assert m.lm_weight[470] == 0 and m.lm_weight[used].min() == 1


@pytest.mark.parametrize(
    "content, problem",
    [("{oops", "not valid JSON"), ("[1, 2, 3]", "478"), (json.dumps([99] * 68), "outside"), (json.dumps({"x": [1]}), "expected")],
)
def test_bfm_bad_landmark_files_name_the_file(tmp_path, content, problem):
    _write_bfm2017(tmp_path / "bfm.h5", GRID * 10, GRID_TRI, np.random.default_rng(0))
    (tmp_path / "lm.json").write_text(content)
    with pytest.raises(InputError, match=problem) as e:
        bfm.load_bfm2017(tmp_path / "bfm.h5", landmarks_path=tmp_path / "lm.json")
    assert e.value.path == str(tmp_path / "lm.json")


def test_68_point_file_embeds_all_landmarks(tmp_path):
    """A 'BFM' whose mean is the canonical face (in mm) with its 68 iBUG vertices: each MediaPipe landmark
    must come back on its own vertex (similarity = identity, nothing to warp)."""
    _write_bfm2017(tmp_path / "bfm.h5", CANON[:468] * 10, facemesh.triangles(), np.random.default_rng(0))
    (tmp_path / "lm68.json").write_text(json.dumps(facemesh.IBUG68_TO_MEDIAPIPE.tolist()))
    m = bfm.load_bfm2017(tmp_path / "bfm.h5", landmarks_path=tmp_path / "lm68.json")
    assert np.abs(m.landmark_points(m.mean)[:468] - CANON[:468]).max() < 1e-6
    assert (m.lm_weight[list(facemesh.IRIS)] == 0).all() and (m.lm_weight[facemesh.FACE_OVAL] < 1).all()


# ------------------------------------------------------------------------------------------- registry
def test_registry_dispatches_and_checks_the_spec(tmp_path):
    _write_bfm2017(tmp_path / "bfm.h5", GRID * 10, GRID_TRI, np.random.default_rng(0))
    (tmp_path / "lm.json").write_text(json.dumps([0] * 478))
    m = load_model({"type": "bfm2017", "path": "bfm.h5", "landmarks_path": "lm.json"}, base_dir=tmp_path)
    assert m.n_vertices == 6 and m.lm_weight.all()
    with pytest.raises(ConfigError, match="landmarks_path"):
        load_model({"type": "bfm2017", "path": "bfm.h5"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="'model.type'"):
        load_model({"type": "flame", "path": "x"})
    with pytest.raises(ConfigError, match="'region'"):
        load_model({"type": "bfm2017", "path": "bfm.h5", "region": "face"})
    with pytest.raises(ConfigError, match="path"):
        load_model({"type": "ict"})
    with pytest.raises(ConfigError, match="furlong"):
        load_model({"type": "bfm2017", "path": "bfm.h5", "unit": "furlong"}, base_dir=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_model({"type": "bfm2009", "path": "missing.mat"}, base_dir=tmp_path)


def test_registry_refuses_pickle_unless_opted_in(tmp_path):
    with pytest.raises(InputError, match="allow_pickle") as e:
        load_model({"type": "ict", "path": "model.pkl"}, base_dir=tmp_path)
    assert e.value.path == str(tmp_path / "model.pkl")
    with pytest.raises(InputError, match="no loader"):
        load_model({"type": "ict", "path": "model.pkl", "allow_pickle": True}, base_dir=tmp_path)


# ----------------------------------------------------------------------------- loaded models also fit
def _fit_and_score(model):
    """Fit a noisy synthetic sequence drawn from ``model``; return (landmark error px, rotation error °)."""
    from deep_puppets.fit_types import FitSettings
    from deep_puppets.fitting import solve_segment
    from deep_puppets.landmark_basis import projected_landmarks

    from .synthetic_faces import synthetic_sequence

    seq = synthetic_sequence(model, 40, noise_px=1.0, seed=3)
    fit = solve_segment(model, seq.landmarks, seq.valid, FitSettings(), p=seq.p)
    truth = synthetic_sequence(model, 40, noise_px=0.0, seed=3).landmarks
    used = model.lm_weight > 0 if model.lm_weight is not None else slice(None)
    err = np.linalg.norm(projected_landmarks(model, fit)[:, used, :2] - truth[:, used, :2], axis=-1).mean()
    from deep_puppets.camera import rotation_matrix

    R = rotation_matrix(fit.camera[:, :3]).transpose(0, 2, 1) @ rotation_matrix(seq.camera[:, :3])
    angle = np.degrees(np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return err, angle.max()


def test_synthetic_bfm2017_file_loads_and_fits(tmp_path):
    rng = np.random.default_rng(1)
    _write_bfm2017(tmp_path / "bfm.h5", CANON[:468] * 10, facemesh.triangles(), rng, k_id=3, k_exp=2)
    (tmp_path / "lm68.json").write_text(json.dumps(facemesh.IBUG68_TO_MEDIAPIPE.tolist()))
    model = load_model({"type": "bfm2017", "path": str(tmp_path / "bfm.h5"), "landmarks_path": str(tmp_path / "lm68.json")})
    err, angle = _fit_and_score(model)
    assert err < 1.0 and angle < 1.0


def test_synthetic_bfm2009_with_exp_pca_loads_and_fits(tmp_path):
    rng = np.random.default_rng(2)
    n = 468
    mean_um = (CANON[:n] * 1e4).reshape(-1, 1)
    pcs = np.linalg.qr(rng.normal(size=(3 * n, 3)))[0]
    scipy.io.savemat(
        tmp_path / "01_MorphableModel.mat", {"shapeMU": mean_um, "shapePC": pcs, "shapeEV": np.array([[3e3], [2e3], [1e3]]), "tl": facemesh.triangles() + 1}
    )
    comps = np.linalg.qr(rng.normal(size=(3 * n, 2)))[0].T * 1e3
    _write_exp_pca_bin(tmp_path / "Exp_Pca.bin", np.zeros(3 * n), comps)
    (tmp_path / "index.txt").write_text("\n".join(str(i + 1) for i in range(n)))
    (tmp_path / "lm.json").write_text(json.dumps(list(range(468)) + [None] * 10))
    model = load_model(
        {"type": "bfm2009", "path": str(tmp_path / "01_MorphableModel.mat"), "exp_path": str(tmp_path / "Exp_Pca.bin"),
         "exp_index_path": str(tmp_path / "index.txt"), "landmarks_path": str(tmp_path / "lm.json")}
    )
    assert model.n_exp == 2 and model.n_id == 3
    err, angle = _fit_and_score(model)
    assert err < 1.0 and angle < 1.0
