"""Conditioning renderer: geometry against a CPU rasterisation, correspondence colours fixed to the surface,
depth test, SH shading against deep_puppets.texture, gaze discs, determinism and the HDF5 stream.

These tests need a headless OpenGL context (EGL; Debian packages libegl1 + libgl1). Without one they FAIL
with the reason: the renderer is a required part of the workflow, not an optional extra.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import trimesh

from deep_puppets import h5io
from deep_puppets.framing import frame_rectangle
from deep_puppets.mesh import (
    vertex_face_incidence,
    vertex_normals_float64,
    vertex_normals_keep_dtype,
)
from deep_puppets.render.conditioning_file import (
    CONDITIONING,
    DEFLATE_ENCODERS,
    STREAMS,
    ConditioningWriter,
    deflate_chunk,
    write_previews,
)
from deep_puppets.render.gaze import MEDIAPIPE_EYES, draw_gaze
from deep_puppets.render.geometry import (
    camera_positions,
    correspondence_colours,
    to_crop_pixels,
)
from deep_puppets.render.gl import Renderer, RenderError, create_context
from deep_puppets.render.sequence import render_sequence, write_conditioning
from deep_puppets.render.shading import (
    fibonacci_sphere,
    quadratic_basis_matrix,
    quadratic_monomials,
)
from deep_puppets.subdivision import loop_subdivision
from deep_puppets.texture.lighting import sh_basis, sh_directional, shade


def make_renderer(*args, **kw) -> Renderer:
    try:
        return Renderer(*args, **kw)
    except RenderError as e:  # a clear failure, never a skip
        pytest.fail(f"no headless OpenGL: {e}")


def rotation(rx, ry, rz) -> np.ndarray:
    return trimesh.transformations.euler_matrix(rx, ry, rz)[:3, :3]


def blob(subdivisions: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A closed, smooth, non-convex-ish mesh in model units (y up, z towards the viewer), CCW outward."""
    m = trimesh.creation.icosphere(subdivisions)
    v = m.vertices * [1.0, 1.3, 0.9]
    rng = np.random.default_rng(seed)
    v = v * (1.0 + 0.12 * np.sin(3.0 * v[:, :1] + rng.uniform(0, 6)) * np.cos(2.0 * v[:, 1:2]))
    return v, np.asarray(m.faces)


def to_screen(model_v, rot, scale, t, nearer_z="smaller"):
    """Weak perspective as deep_puppets.camera: ``scale · diag(1, -1, -1) · R · X + t`` (z away from the camera)."""
    x = scale * (model_v @ rot.T) * [1.0, -1.0, -1.0] + t
    return x if nearer_z == "smaller" else x * [1.0, 1.0, -1.0]


def crop_coords(points, box, size):
    """Frame pixels → cv2 coordinates of the output image (pixel centres at integers)."""
    return to_crop_pixels(points, box, size) - 0.5


def reference_silhouette(vertices, faces, box, size) -> np.ndarray:
    """CPU rasterisation: every projected triangle filled at pixel centres (cv2, 4 sub-pixel bits)."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(crop_coords(vertices, box, size) * 16).astype(np.int32)
    for tri in pts[faces]:  # one by one: fillPoly of many polygons fills by crossing parity
        cv2.fillConvexPoly(mask, tri, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def bilinear(img, xy):
    """Sample an (H, W, C) image at cv2 coordinates ``xy`` (K, 2) bilinearly."""
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    fx, fy = (xy[:, 0] - x0)[:, None], (xy[:, 1] - y0)[:, None]
    im = img.astype(np.float64)
    return (
        im[y0, x0] * (1 - fx) * (1 - fy)
        + im[y0, x0 + 1] * fx * (1 - fy)
        + im[y0 + 1, x0] * (1 - fx) * fy
        + im[y0 + 1, x0 + 1] * fx * fy
    )


def test_egl_context():
    try:
        ctx = create_context()
    except RenderError as e:
        pytest.fail(str(e))
    assert ctx.version_code >= 330
    ctx.release()


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("subdivisions", [0, 1])
def test_silhouette_matches_cpu_rasterisation(subdivisions):
    v, f = blob()
    size = (200, 150)  # non-square output, off-centre crop box of the same aspect
    box = (310.0, 95.0, 510.0, 245.0)
    screen = to_screen(v, rotation(0.3, -0.5, 0.2), 55.0, [420.0, 170.0, 900.0])
    r = make_renderer(f, v, size=size, subdivisions=subdivisions)
    img = r.render(screen, box).colour
    rendered = img.max(axis=2) > 0
    ref = reference_silhouette(r.surface(screen), r.faces, box, size)
    iou = (rendered & ref).sum() / (rendered | ref).sum()
    assert 0.2 < ref.mean() < 0.8  # the mesh fills a good part of the image and is cropped nowhere
    assert iou >= 0.97, f"IoU {iou:.4f}"
    # row 0 is the top of the image: the mesh's top (model +y) is near the top rows
    top_row = np.flatnonzero(rendered.any(axis=1))[0]
    assert abs(top_row - np.flatnonzero(ref.any(axis=1))[0]) <= 1
    r.close()


def test_frame_rectangle_and_crop_agree():
    """The same face through the full frame and through a crop: the crop is a resampled window. Two
    renderers (two GL contexts) used in turn do not disturb each other."""
    v, f = blob(2)
    screen = to_screen(v, np.eye(3), 40.0, [100.0, 80.0, 0.0])
    full = make_renderer(f, v, size=(200, 160), subdivisions=0)
    a = full.render(screen, frame_rectangle(200, 160)).colour
    crop = make_renderer(f, v, size=(100, 80), subdivisions=0)
    b = crop.render(screen, (50.0, 40.0, 150.0, 120.0)).colour
    assert np.array_equal(a[40:120, 50:150] > 0, b > 0)
    assert np.array_equal(full.render(screen, frame_rectangle(200, 160)).colour, a)  # contexts interleave
    full.close()
    crop.close()


def test_depth_test_nearer_triangle_wins():
    # two overlapping triangles: A (red albedo) at depth za, B (blue) at depth zb
    tri = np.array([[0, 1, 2], [3, 4, 5]])
    base = np.array([[10.0, 10.0], [60.0, 10.0], [35.0, 60.0]])
    mean = np.concatenate([np.c_[base, np.zeros(3)], np.c_[base, np.ones(3)]])
    albedo = np.array([[1.0, 0, 0]] * 3 + [[0, 0, 1.0]] * 3)
    for nearer_z in ("smaller", "larger"):
        r = make_renderer(tri, mean, size=(64, 64), subdivisions=0, nearer_z=nearer_z, albedo=albedo)
        for za, zb in ((5.0, 9.0), (9.0, 5.0)):
            v = np.concatenate([np.c_[base, np.full(3, za)], np.c_[base + [2.0, 1.0], np.full(3, zb)]])
            px = r.render(v, (0, 0, 64, 64)).colour[30, 35]
            a_nearer = (za < zb) == (nearer_z == "smaller")
            assert tuple(px) == ((255, 0, 0) if a_nearer else (0, 0, 255)), (nearer_z, za, zb, px)
        r.close()


def test_non_finite_vertices_give_an_invalid_black_frame():
    v, f = blob(1)
    r = make_renderer(f, v, size=(32, 32), subdivisions=0)
    bad = to_screen(v, np.eye(3), 10.0, [16, 16, 0])
    bad[3] = np.nan
    frame = r.render(bad, (0, 0, 32, 32))
    assert not frame.valid and not frame.colour.any() and not frame.correspondence.any()
    r.close()


# ------------------------------------------------------------------------------------------ correspondence


def test_correspondence_colour_is_fixed_to_the_surface():
    """A surface point has the same colour in every pose and for every actor (±1/255 away from edges)."""
    mean, f = blob(3)
    rng = np.random.default_rng(1)
    actors = [mean, mean * [1.1, 0.9, 1.05] + 0.05 * np.sin(4 * mean[:, [1, 2, 0]])]  # same topology, other shape
    poses = [
        (rotation(0.0, 0.0, 0.0), 90.0, [128, 128, 0]),
        (rotation(0.25, -0.4, 0.1), 75.0, [120, 140, 30]),
        (rotation(-0.2, 0.35, -0.15), 105.0, [135, 120, -50]),
    ]
    size, box = (256, 256), (0.0, 0.0, 256.0, 256.0)
    r = make_renderer(f, mean, size=size, subdivisions=1)
    expected = 255.0 * (r.S @ correspondence_colours(mean))  # refined-vertex attribute, fixed
    errors = []
    for actor in actors:
        for rot, scale, t in poses:
            screen = to_screen(actor, rot, scale, t)
            surf = r.surface(screen)
            n = vertex_normals_float64(surf, r.faces)  # camera frame: front-facing has n_z < 0
            pick = np.flatnonzero(n[:, 2] < -0.8)
            pick = rng.choice(pick, size=min(200, len(pick)), replace=False)
            img = r.render(screen, box).correspondence
            got = bilinear(img, crop_coords(surf[pick], box, size))
            errors.append(np.abs(got - expected[pick]).max())
    assert max(errors) <= 1.0, errors
    r.close()


# ------------------------------------------------------------------------------------------ shading


def flat_quads(normals, centres, half=9.0):
    """Screen-space quads (4 vertices, 2 CCW triangles each) with unit camera-frame ``normals``."""
    verts, tris = [], []
    for k, (n, c) in enumerate(zip(normals, centres)):
        e1 = np.cross(n, [0.0, 1.0, 0.0] if abs(n[1]) < 0.9 else [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(n, e1)  # e1 × e2 = n
        corners = [
            c - half * e1 - half * e2,
            c + half * e1 - half * e2,
            c + half * e1 + half * e2,
            c - half * e1 + half * e2,
        ]
        verts += corners
        tris += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
    return np.array(verts), np.array(tris)


@pytest.mark.parametrize("nearer_z", ["smaller", "larger"])
def test_colour_matches_texture_shading(nearer_z):
    rng = np.random.default_rng(2)
    k = 36
    n = rng.normal(size=(k, 3))
    n[:, 2] = -np.abs(n[:, 2]) - 0.6  # facing the camera (camera frame: z away from the camera)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    centres = np.array([[20.0 + 36 * (i % 6), 20.0 + 36 * (i // 6), 50.0 + i] for i in range(k)])
    v, tri = flat_quads(n, centres)
    albedo = np.repeat(rng.uniform(0.3, 0.9, size=(k, 3)), 4, axis=0)
    sh = sh_directional([0.4, -0.5, -0.8], color=[0.8, 0.7, 0.6], ambient=0.35)
    sh[4:] += rng.normal(scale=0.05, size=(5, 3))  # exercise the order-2 terms too
    screen = v if nearer_z == "smaller" else v * [1.0, 1.0, -1.0]
    r = make_renderer(tri, v, size=(216, 216), subdivisions=1, nearer_z=nearer_z, albedo=albedo)
    img = r.render(screen, (0, 0, 216, 216), sh=sh).colour
    expected = 255.0 * np.clip(shade(albedo[::4], n, sh), 0.0, 1.0)
    got = img[centres[:, 1].astype(int), centres[:, 0].astype(int)].astype(float)
    assert np.abs(got - expected).max() <= 2.0, np.abs(got - expected).max()
    assert expected.std() > 10  # the lighting does vary over the normals
    r.close()


def test_normals_point_out_of_the_surface():
    v, f = blob(2)
    inc = vertex_face_incidence(f, len(v), np.float32)
    for nearer_z in ("smaller", "larger"):
        screen = to_screen(v, rotation(0.2, 0.3, 0.0), 50.0, [100, 100, 7], nearer_z)
        n = vertex_normals_keep_dtype(camera_positions(screen, nearer_z), f, inc)
        outward = camera_positions(screen, nearer_z) - camera_positions(screen, nearer_z).mean(axis=0)
        assert (np.einsum("ij,ij->i", n, outward) > 0).mean() > 0.99


def test_sh_basis_is_read_off_any_quadratic_basis():
    m = quadratic_basis_matrix(sh_basis)
    n = fibonacci_sphere(50)
    assert np.allclose(quadratic_monomials(n) @ m, sh_basis(n))
    with pytest.raises(ValueError, match="quadratic"):
        quadratic_basis_matrix(lambda n: np.concatenate([n[:, :1] ** 3, sh_basis(n)[:, 1:]], axis=1))


# ------------------------------------------------------------------------------------------ gaze


def eye_points(
    centres=((80.0, 100.0), (170.0, 100.0)), half_width=22.0, half_height=9.0, iris_radius=8.0, gaze=(0.0, 0.0)
):
    """478 landmark points with MediaPipe eye contours (ellipses) and irises; the rest far away."""
    p = np.full((478, 3), -1000.0)
    for c, lids, ic, rim in zip(centres, MEDIAPIPE_EYES.eyelids, MEDIAPIPE_EYES.iris_centre, MEDIAPIPE_EYES.iris_rim):
        t = np.linspace(np.pi, -np.pi, len(lids), endpoint=False)  # any closed order
        p[list(lids), :2] = np.c_[c[0] + half_width * np.cos(t), c[1] + half_height * np.sin(t)]
        ctr = np.add(c, gaze)
        p[ic, :2] = ctr
        p[list(rim), :2] = ctr + iris_radius * np.array([[1, 0], [0, -1], [-1, 0], [0, 1]])
    return p


def test_gaze_image_draws_eye_openings_and_clipped_irises():
    size, box = (256, 200), (0.0, 0.0, 256.0, 200.0)
    img = draw_gaze(eye_points(iris_radius=12.0, gaze=(6.0, 0.0)), box, size)
    red, white = (255, 0, 0), (255, 255, 255)
    assert tuple(img[100, 86]) == red and tuple(img[100, 176]) == red  # iris centres (gaze to image right)
    assert tuple(img[100, 62]) == white  # eye opening beside the iris
    assert not img[100 - 11, 86].any()  # inside the iris circle but above the eyelid: clipped
    assert not img[150, 128].any() and not img[100, 125].any()
    assert set(map(tuple, img.reshape(-1, 3))) <= {(0, 0, 0), red, white}
    only_iris = draw_gaze(eye_points(iris_radius=12.0), box, size, eye_colour=None)
    assert tuple(only_iris[100 - 11, 80]) == red and not only_iris[100, 62].any()
    # the crop maps the same drawing (scaled by 2) into a window
    zoom = draw_gaze(eye_points(), (40.0, 60.0, 168.0, 160.0), size)
    assert tuple(zoom[80, 80]) == red


# ------------------------------------------------------------------------------------------ sequences


def sequence(t=6):
    v, f = blob(3)  # 642 vertices: enough for the 478 landmark indices of the gaze layout
    rots = [rotation(0.1 * np.sin(i), 0.3 * np.sin(i / 2), 0.0) for i in range(t)]
    verts = np.stack([to_screen(v, rots[i], 40.0 + i, [96 + 2 * i, 100, 0]) for i in range(t)])
    verts[min(3, t - 1)] = np.nan  # a failed fit
    eyes = np.stack([eye_points(((70.0, 90.0), (122.0, 90.0)), 12, 5, 4, (i - 3.0, 0)) for i in range(t)])
    boxes = np.array([[0.0, 0.0, 192.0, 192.0]] * t)
    sh = sh_directional([0.3, -0.4, -0.8], 0.6, 0.4)
    return v, f, verts, boxes, sh, eyes


def test_sequence_is_deterministic_and_hdf5_reads_back(tmp_path):
    mean, f, verts, boxes, sh, eyes = sequence()
    paths = []
    for run in range(2):  # two renderers (two contexts), as two jobs would
        r = make_renderer(f, mean, size=(96, 96), subdivisions=1)
        paths.append(
            write_conditioning(
                tmp_path / f"c{run}.h5",
                r,
                verts,
                boxes,
                frame_index=np.arange(10, 16),
                sh=sh,
                eye_points=eyes,
                source="test",
            )
        )
        if run == 0:
            frames = list(render_sequence(r, verts, boxes, sh, eyes))
        r.close()
    assert paths[0].read_bytes() == paths[1].read_bytes()  # identical files, not only identical images
    (a, attrs), (b, _) = (h5io.read(p, CONDITIONING) for p in paths)
    for s in STREAMS:
        assert a[s].dtype == np.uint8 and a[s].shape == (6, 96, 96, 3)
        assert a[s].tobytes() == b[s].tobytes()
        assert np.array_equal(a[s], np.stack([getattr(fr, s) for fr in frames]))
        assert a[s][[0, 1, 2, 4, 5]].any(axis=(1, 2, 3)).all()
    assert a["valid"].tolist() == [True, True, True, False, True, True]
    assert not a["colour"][3].any()
    assert a["frame_index"].tolist() == list(range(10, 16))
    assert attrs["source"] == "test" and attrs["renderer"]
    assert '"subdivisions": 1' in attrs["settings"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_writer_is_atomic_and_lzf_reads_back(tmp_path):
    mean, f, verts, boxes, sh, eyes = sequence(3)  # frame 2 invalid
    r = make_renderer(f, mean, size=(32, 32), subdivisions=0)
    with pytest.raises(RuntimeError, match="boom"), ConditioningWriter(
        tmp_path / "x.h5", 3, (32, 32), {"renderer": "r", "settings": "{}", "source": "", "framing": "null"}
    ) as w:
        w.append(r.render(verts[0], boxes[0]), 0, boxes[0])
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
    p = write_conditioning(tmp_path / "y.h5", r, verts, boxes, compression="lzf")
    arrays, _ = h5io.read(p, CONDITIONING)
    assert np.array_equal(arrays["colour"][0], r.render(verts[0], boxes[0]).colour)
    assert arrays["valid"].tolist() == [True, True, False]
    empty, _ = h5io.read(write_conditioning(tmp_path / "z.h5", r, verts[:0], boxes[:0]), CONDITIONING)
    assert empty["gaze"].shape == (0, 32, 32, 3)
    r.close()


@pytest.mark.parametrize("encoder", DEFLATE_ENCODERS)
def test_deflate_encoders_write_standard_gzip_chunks(tmp_path, encoder):
    """Both encoders' chunks inflate with zlib and read back through h5py's own gzip filter, frame for frame."""
    import zlib

    import h5py

    mean, f, verts, boxes, sh, eyes = sequence(3)
    r = make_renderer(f, mean, size=(48, 48), subdivisions=0)
    frames = list(render_sequence(r, verts, boxes, sh, eyes))
    for s in STREAMS:
        image = getattr(frames[0], s)
        chunk = deflate_chunk(image, None, encoder, s)  # the encoder's default level
        assert zlib.decompress(chunk) == image.tobytes()
        assert len(chunk) < image.nbytes / 2  # compressed, not stored
    p = write_conditioning(tmp_path / "c.h5", r, verts, boxes, sh=sh, eye_points=eyes, encoder=encoder)
    r.close()
    with h5py.File(p, "r") as h:
        assert h["colour"].compression == "gzip" and h["colour"].chunks == (1, 48, 48, 3)
        for s in STREAMS:
            assert np.array_equal(h[s][:], np.stack([getattr(fr, s) for fr in frames]))


def test_unknown_encoder_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="encoder must be one of"):
        attrs = {"renderer": "", "settings": "{}", "source": "", "framing": "null"}
        ConditioningWriter(tmp_path / "x.h5", 1, (8, 8), attrs, encoder="lz4")
    assert not list(tmp_path.iterdir())


def test_previews(tmp_path):
    from deep_puppets.video import probe_video

    mean, f, verts, boxes, sh, eyes = sequence(4)
    r = make_renderer(f, mean, size=(64, 64), subdivisions=0)
    p = write_conditioning(tmp_path / "c.h5", r, verts, boxes, sh=sh, eye_points=eyes)
    r.close()
    n = write_previews(p, {s: tmp_path / f"{s}.mp4" for s in STREAMS}, fps=25)
    assert n == {s: 4 for s in STREAMS}
    assert probe_video(tmp_path / "gaze.mp4").n_frames == 4


# ------------------------------------------------------------------------------------------ subdivision


def test_loop_subdivision_matches_trimesh_on_a_closed_mesh():
    from scipy.spatial import cKDTree

    v, f = blob(1)
    S, faces = loop_subdivision(f, len(v), 2)
    tv, tf = trimesh.remesh.subdivide_loop(v, f, 2)
    assert S.shape == (len(tv), len(v)) and len(faces) == len(tf)
    assert cKDTree(tv).query(S @ v)[0].max() < 1e-9
    assert np.allclose(np.asarray(S.sum(axis=1)).ravel(), 1.0)
    assert trimesh.Trimesh(S @ v, faces, process=False).volume > 0  # winding kept (outward)


def test_loop_subdivision_boundary_follows_the_curve_rule():
    # an open fan: the boundary of the refined mesh depends on boundary vertices only (cubic B-spline rule)
    v, f = blob(1)
    keep = f[(v[f][:, :, 2] > -0.2).all(axis=1)]
    S, faces = loop_subdivision(keep, len(v), 1)
    edges = np.sort(np.concatenate([keep[:, [0, 1]], keep[:, [1, 2]], keep[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    boundary_vertices = np.unique(uniq[counts == 1])
    rows = S[boundary_vertices]
    assert set(rows.indices) <= set(boundary_vertices)
    assert np.allclose(np.asarray(S[boundary_vertices, boundary_vertices]).ravel(), 0.75)
