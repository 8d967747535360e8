"""Albedo + SH lighting estimation (deep_puppets.texture): conventions, geometry and a synthetic round trip."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from deep_puppets.mesh import vertex_normals_float64
from deep_puppets.texture.albedo import (
    bake_uv_texture,
    estimate_albedo_and_lighting,
    sample_colors,
)
from deep_puppets.texture.lighting import (
    SH_A_HAT,
    SH_BAND,
    SH_DC_UNIT,
    SH_IRRADIANCE_CONST,
    sh_basis,
    sh_directional,
    sh_light_direction,
    shade,
)
from deep_puppets.texture.texture_file import TRACK_DATASETS
from deep_puppets.texture.visibility import (
    CAMERA_FORWARD,
    PIXEL_CENTER,
    facing_cosine,
    rasterize,
    visible_vertices,
)

# --- helpers ---------------------------------------------------------------------------------------------


def fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly uniform unit directions (equal-area quadrature weights 4π/n)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = np.pi * (1 + 5**0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rx @ ry


def project(v: np.ndarray, f: float, size: int) -> np.ndarray:
    """Pinhole projection (OpenCV axes) to image coordinates with the principal point at the centre."""
    return np.stack([f * v[:, 0] / v[:, 2] + size / 2, f * v[:, 1] / v[:, 2] + size / 2], 1)


def grid_plane(x0, x1, y0, y1, z, n):
    """A planar grid at depth z, triangles counter-clockwise as seen from the camera (normals towards it)."""
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    v = np.stack([xs.ravel(), ys.ravel(), np.full(n * n, float(z))], 1)
    k = np.arange(n * n).reshape(n, n)
    a, b, c, d = k[:-1, :-1].ravel(), k[:-1, 1:].ravel(), k[1:, :-1].ravel(), k[1:, 1:].ravel()
    # On screen (y down) a → c is downwards and a → b rightwards: (a, c, b) runs counter-clockwise.
    return v, np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def face_like_mesh(subdivisions: int = 3):
    """Unit icosphere with a 'nose' bump towards −z (the camera side): self-occlusion when turned."""
    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = np.asarray(m.vertices, dtype=np.float64)
    bump = np.exp(-((np.linalg.norm(v - [0, 0, -1], axis=1) / 0.25) ** 2))
    return v * (1 + 0.35 * bump)[:, None], np.asarray(m.faces)


def render(vertices_cam, triangles, colors, f, size):
    """Float image (size, size, 3): per-vertex colours interpolated over the visible triangles, black background."""
    p = project(vertices_cam, f, size)
    _, tri_id, bary = rasterize(p - PIXEL_CENTER, triangles, (size, size), z=vertices_cam[:, 2])
    img = np.zeros((size, size, 3))
    cov = tri_id >= 0
    img[cov] = np.einsum("pk,pkc->pc", bary[cov], colors[triangles[tri_id[cov]]])
    return img


def synthetic_video(n_frames=10, noise=0.01, size=256, f=300.0, seed=0, subdivisions=3):
    """A spatially textured face-like mesh turning (yaw and pitch) under a coloured directional + ambient light."""
    rng = np.random.default_rng(seed)
    v0, tri = face_like_mesh(subdivisions)
    albedo = np.clip(
        0.55 + 0.2 * np.stack([np.sin(3 * v0[:, 0] + k) * np.cos(2 * v0[:, 1] + 0.5 * k) for k in range(3)], 1), 0, 1
    )
    sh = sh_directional([-0.5, -0.6, -0.6], color=[0.7, 0.65, 0.6], ambient=0.5)
    gauge = sh[0] / SH_DC_UNIT  # express the ground truth in the estimator's gauge
    sh, albedo = sh / gauge, albedo * gauge
    frames, pts, nrm, verts = [], [], [], []
    for t in range(n_frames):
        r = rotation(-35 + 70 * t / max(n_frames - 1, 1), 20 * np.sin(2 * np.pi * t / n_frames))
        v = v0 @ r.T + [0, 0, 4.0]
        n = vertex_normals_float64(v, tri)
        img = render(v, tri, shade(albedo, n, sh), f, size) + rng.normal(0, noise, (size, size, 3))
        frames.append(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
        pts.append(project(v, f, size))
        nrm.append(n)
        verts.append(v)
    return dict(
        frames=frames,
        points=np.array(pts),
        normals=np.array(nrm),
        vertices=np.array(verts),
        triangles=tri,
        albedo=albedo,
        sh=sh,
        size=size,
    )


def angle_deg(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


# --- spherical harmonics ---------------------------------------------------------------------------------


def test_sh_constants_are_ramamoorthi_hanrahan():
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708
    k = SH_IRRADIANCE_CONST
    assert k[0] == pytest.approx(c4, abs=1e-5)
    assert k[1:4] == pytest.approx([2 * c2] * 3, abs=1e-5)
    assert k[[4, 5, 7]] == pytest.approx([2 * c1] * 3, abs=1e-5)
    assert k[6] == pytest.approx(c5, abs=1e-5)  # times (3z² − 1): c3 z² − c5 with c3 = 3 c5
    assert 3 * k[6] == pytest.approx(c3, abs=1e-5)
    assert k[8] == pytest.approx(c1, abs=1e-5)
    assert SH_DC_UNIT * k[0] == pytest.approx(1.0)


def test_sh_unfolded_basis_is_orthonormal():
    n = fibonacci_sphere(20000)
    y = sh_basis(n, irradiance=False)
    gram = y.T @ y * (4 * np.pi / len(n))
    np.testing.assert_allclose(gram, np.eye(9), atol=1e-3)
    np.testing.assert_allclose(sh_basis(n) / SH_A_HAT[SH_BAND], y, rtol=1e-12)


def test_sh_irradiance_matches_numerical_integration():
    # A band-limited (order ≤ 2) radiance: its order-2 irradiance is exact, so quadrature must agree.
    w = fibonacci_sphere(40000)
    radiance = 1.0 + 0.5 * w[:, 0] - 0.3 * w[:, 2] + 0.4 * w[:, 1] * w[:, 2] + 0.2 * (w[:, 0] ** 2 - w[:, 1] ** 2)
    da = 4 * np.pi / len(w)
    coeffs = sh_basis(w, irradiance=False).T @ radiance * da  # projection onto Y_lm
    normals = fibonacci_sphere(50)
    exact = np.array([(radiance * np.maximum(w @ n, 0)).sum() * da for n in normals])
    np.testing.assert_allclose(sh_basis(normals) @ coeffs, exact, atol=2e-3)


def test_ambient_light_shades_constant():
    n = fibonacci_sphere(500)
    sh = sh_directional([0, 0, -1], color=0.0, ambient=[0.8, 1.0, 1.2])
    shading = sh_basis(n) @ sh
    np.testing.assert_allclose(shading, np.broadcast_to([0.8, 1.0, 1.2], shading.shape), atol=1e-12)
    np.testing.assert_allclose(shade(np.full((500, 3), 0.5), n, sh)[:, 1], 0.5, atol=1e-12)


def test_directional_light_brightens_the_side_facing_it():
    d = np.array([0.3, -0.5, -0.8])
    d /= np.linalg.norm(d)
    sh = sh_directional(d, color=1.0)
    toward, away = sh_basis(np.stack([d, -d])) @ sh[:, 0]
    assert toward > 0.9 and toward > away + 0.8
    n = fibonacci_sphere(5000)
    approx = sh_basis(n) @ sh[:, 0]
    assert np.abs(approx - np.maximum(n @ d, 0)).mean() < 0.04  # order-2 fit of the clamped cosine
    assert angle_deg(sh_light_direction(sh), d) < 1e-6


# --- normals and visibility ------------------------------------------------------------------------------


def test_vertex_normals_of_a_sphere_point_outward():
    m = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
    centre = np.array([0.5, -1.0, 7.0])
    v = np.asarray(m.vertices) + centre
    n = vertex_normals_float64(v, m.faces)
    radial = (v - centre) / np.linalg.norm(v - centre, axis=1, keepdims=True)
    assert n.shape == v.shape
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    assert (np.einsum("ij,ij->i", n, radial) > 0.99).all()
    # batched over frames, and flipping the winding flips the normals
    batch = vertex_normals_float64(np.stack([v, 2 * v]), m.faces)
    np.testing.assert_allclose(batch[0], n, atol=1e-12)
    np.testing.assert_allclose(batch[1], n, atol=1e-12)
    np.testing.assert_allclose(vertex_normals_float64(v, m.faces[:, ::-1]), -n, atol=1e-12)


def test_vertex_normal_of_unused_vertex_is_zero():
    v, tri = grid_plane(-1, 1, -1, 1, 3.0, 3)
    v = np.vstack([v, [[0.0, 0.0, 3.0]]])
    n = vertex_normals_float64(v, tri)
    assert np.all(n[-1] == 0)


def test_camera_convention_ccw_on_screen_faces_the_camera():
    v, tri = grid_plane(-1, 1, -1, 1, 3.0, 4)
    p = project(v, 100.0, 64)[tri]
    signed = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (
        p[:, 1, 1] - p[:, 0, 1]
    )
    assert (signed < 0).all()  # counter-clockwise on screen (y down) = negative signed area
    n = vertex_normals_float64(v, tri)
    np.testing.assert_allclose(n, np.broadcast_to(-CAMERA_FORWARD, n.shape), atol=1e-12)
    assert (facing_cosine(v, n, perspective=True) > 0.9).all() and (facing_cosine(v, n) == 1).all()


def test_sphere_front_half_visible_back_half_not():
    m = trimesh.creation.icosphere(subdivisions=4)
    v = np.asarray(m.vertices) + [0.2, -0.1, 5.0]
    n = vertex_normals_float64(v, m.faces)
    p = project(v, 400.0, 320)
    vis = visible_vertices(v, n, m.faces, (320, 320), p, perspective=True)
    cos = facing_cosine(v, n, perspective=True)
    assert vis[cos > 0.3].all()
    assert not vis[cos < 0.0].any()
    assert vis.sum() > 0.8 * (cos > 0.1).sum()  # only a thin rim near the silhouette is lost to the margin
    no_margin = visible_vertices(v, n, m.faces, (320, 320), p, margin=0, perspective=True)
    assert (no_margin == (cos > 0.1)).all()
    # batched over frames, and the orthographic variant agrees on a distant sphere
    both = visible_vertices(
        np.stack([v, v]), np.stack([n, n]), m.faces, (320, 320), np.stack([p, p]), perspective=True
    )
    assert both.shape == (2, len(v)) and (both == vis).all()
    ortho = visible_vertices(v, n, m.faces, (320, 320), p)
    assert (ortho == vis).mean() > 0.97


def test_vertex_behind_another_surface_is_invisible():
    front, tf = grid_plane(-0.5, 0.5, -0.5, 0.5, 2.0, 6)  # small plane nearer to the camera
    back, tb = grid_plane(-1.5, 1.5, -1.5, 1.5, 3.0, 25)  # large plane behind it
    v = np.vstack([front, back])
    tri = np.vstack([tf, tb + len(front)])
    n = vertex_normals_float64(v, tri)
    size, f = 256, 150.0
    p = project(v, f, size)
    vis = visible_vertices(v, n, tri, (size, size), p, perspective=True)
    is_back = np.arange(len(v)) >= len(front)
    assert vis[~is_back].all()
    ring = np.abs(p - size / 2).max(1)  # the front plane covers ring < 0.5 / 2 * f pixels
    hidden = is_back & (ring < 0.5 / 2.0 * f - 3)
    exposed = is_back & (ring > 0.5 / 2.0 * f + 3) & (np.abs(v[:, :2]).max(1) < 1.4)  # away from both outlines
    assert hidden.sum() > 10 and exposed.sum() > 100
    assert not vis[hidden].any()
    assert vis[exposed].all()
    # a vertex right at the outer silhouette samples background: removed by the margin, kept without it
    rim = is_back & (np.abs(v[:, :2]).max(1) > 1.49)
    assert not vis[rim].any()
    assert visible_vertices(v, n, tri, (size, size), p, margin=0, perspective=True)[rim].all()


def test_visibility_in_the_fitters_weak_perspective_screen_space():
    # deep_puppets.camera.project gives (u, v, d) pixels, smaller d nearer, any sign: the default camera model.
    from deep_puppets import camera

    v0, tri = face_like_mesh(3)
    model = v0 @ camera.FLIP  # model frame: y up, nose towards +z (the viewer)
    cam = np.array([0.1, 0.5, 0.05, 160.0, 120.0, -500.0, 60.0])  # turned ~30°, depths all negative
    screen = camera.project(model, cam)
    assert (screen[:, 2] < 0).all()
    n = vertex_normals_float64(screen, tri)
    vis = visible_vertices(screen, n, tri, (240, 320))  # projections = screen[:, :2]
    assert not vis[n[:, 2] > 0].any()  # facing away
    front = n[:, 2] < -0.5
    assert vis[front].mean() > 0.9
    np.testing.assert_array_equal(visible_vertices(screen, n, tri, (240, 320), screen[:, :2]), vis)
    # z-buffer with negative screen depths: a small plane at d = −520 hides the middle of one at d = −480
    front, tf = grid_plane(120, 200, 80, 160, -520.0, 6)
    back, tb = grid_plane(40, 280, 20, 220, -480.0, 25)
    planes, ptri = np.vstack([front, back]), np.vstack([tf, tb + len(front)])
    vis = visible_vertices(planes, vertex_normals_float64(planes, ptri), ptri, (240, 320))
    is_back = np.arange(len(planes)) >= len(front)
    under = is_back & (np.abs(planes[:, 0] - 160) < 37) & (np.abs(planes[:, 1] - 120) < 37)
    assert vis[~is_back].all() and under.sum() > 10 and not vis[under].any()
    assert vis[is_back & ~under & (np.abs(planes[:, 0] - 160) < 110) & (np.abs(planes[:, 1] - 120) < 90)].mean() > 0.85


def test_rasterize_depth_is_perspective_correct():
    # A tilted plane z = 4 + 0.5 x: the depth at each covered pixel centre is the ray's intersection.
    v, tri = grid_plane(-1, 1, -1, 1, 0.0, 2)
    v[:, 2] = 4.0 + 0.5 * v[:, 0]
    f, size = 60.0, 64
    p = project(v, f, size)
    depth, tri_id, bary = rasterize(p - PIXEL_CENTER, tri, (size, size), z=v[:, 2])
    cov = tri_id >= 0
    rows, cols = np.nonzero(cov)
    rx = (cols + PIXEL_CENTER - size / 2) / f  # ray direction x / z
    np.testing.assert_allclose(depth[cov], 4.0 / (1 - 0.5 * rx), rtol=1e-9)
    np.testing.assert_allclose(bary[cov].sum(1), 1.0, atol=1e-9)
    quad = p[[0, 1, 3, 2]]  # the projected outline (a trapezoid): covered pixel count ≈ its area
    area = 0.5 * abs(np.dot(quad[:, 0], np.roll(quad[:, 1], 1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], 1)))
    perimeter = np.linalg.norm(quad - np.roll(quad, 1, axis=0), axis=1).sum()
    assert abs(cov.sum() - area) < perimeter / 2
    assert np.isinf(depth[~cov]).all() and (tri_id[~cov] == -1).all()
    # processing in small chunks gives the same buffers
    small = rasterize(p - PIXEL_CENTER, tri, (size, size), z=v[:, 2], max_pairs=50)
    np.testing.assert_array_equal(small[0], depth)
    np.testing.assert_array_equal(small[1], tri_id)


# --- colour sampling -------------------------------------------------------------------------------------


def test_sample_colors_is_bilinear_with_pixel_centres_at_half_integers():
    h, w = 20, 30
    rows, cols = np.mgrid[0:h, 0:w]
    frame = np.stack([5 * cols + 2 * rows, 3 * rows + 10, np.full((h, w), 128)], -1).astype(np.uint8)
    pts = np.array([[0.5, 0.5], [10.25, 7.75], [29.5, 19.5], [3.0, 4.0], [np.nan, 1.0]])
    out = sample_colors(frame, pts)
    col, row = pts[:4, 0] - 0.5, pts[:4, 1] - 0.5
    np.testing.assert_allclose(out[:4, 0], (5 * col + 2 * row) / 255, atol=1e-6)
    np.testing.assert_allclose(out[:4, 1], (3 * row + 10) / 255, atol=1e-6)
    np.testing.assert_allclose(out[:4, 2], 128 / 255, atol=1e-6)
    assert np.isnan(out[4]).all()
    # outside the image: clamped to the border
    np.testing.assert_allclose(sample_colors(frame, np.array([[-5.0, -5.0]]))[0], frame[0, 0] / 255, atol=1e-6)


# --- estimation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video():
    return synthetic_video()


def test_round_trip_recovers_albedo_and_lighting(video):
    size = video["size"]
    vis = visible_vertices(
        video["vertices"], video["normals"], video["triangles"], (size, size), video["points"], perspective=True
    )
    # an extra garbage frame, flagged invalid, must be skipped
    junk = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = [junk] + video["frames"]
    pts = np.concatenate([video["points"][:1] + 7.0, video["points"]])
    nrm = np.concatenate([-video["normals"][:1], video["normals"]])
    vis_all = np.concatenate([vis[:1], vis])
    valid = np.array([False] + [True] * len(video["frames"]))

    albedo, sh, stats = estimate_albedo_and_lighting(
        frames, pts, nrm, vis_all, triangles=video["triangles"], valid=valid
    )
    assert albedo.shape == video["albedo"].shape and albedo.dtype == np.float32
    assert sh.shape == (9, 3) and sh.dtype == np.float32
    assert stats["frames_used"] == list(range(1, 11))
    np.testing.assert_allclose(sh[0], SH_DC_UNIT, rtol=1e-5)  # the documented gauge

    # the estimate reproduces the observed colours
    observed = np.stack([sample_colors(fr, p) for fr, p in zip(video["frames"], video["points"])])
    pred = shade(albedo, video["normals"], sh)
    assert np.abs(pred - observed)[vis].mean() < 0.02
    assert stats["mae"] < 0.02

    # albedo matches the ground truth (same gauge, so no free scale) where it was seen
    seen = vis.any(0)
    truth = video["albedo"]
    for k in range(3):
        assert np.corrcoef(albedo[seen, k], truth[seen, k])[0, 1] > 0.95
    assert np.median(albedo[seen] / truth[seen], axis=0) == pytest.approx([1, 1, 1], abs=0.1)

    # the light comes from the right direction
    assert angle_deg(sh_light_direction(sh), sh_light_direction(video["sh"])) < 10

    # never-visible vertices (the back of the head) are filled smoothly from their neighbours
    unseen = ~seen
    assert unseen.sum() > 100
    assert np.isfinite(albedo).all() and (albedo >= 0).all() and (albedo <= 1).all()
    lo, hi = albedo[seen].min(0), albedo[seen].max(0)
    assert ((albedo[unseen] >= lo - 1e-6) & (albedo[unseen] <= hi + 1e-6)).all()  # maximum principle


def test_estimate_is_robust_to_an_unflagged_occluder(video):
    size = video["size"]
    vis = visible_vertices(
        video["vertices"], video["normals"], video["triangles"], (size, size), video["points"], perspective=True
    )
    frames = [fr.copy() for fr in video["frames"]]
    for fr in frames[::3]:  # a dark object over part of the face in some frames, not in the visibility
        fr[140:190, 100:150] = 20
    albedo, sh, _ = estimate_albedo_and_lighting(
        frames, video["points"], video["normals"], vis, triangles=video["triangles"]
    )
    assert angle_deg(sh_light_direction(sh), sh_light_direction(video["sh"])) < 15
    seen = vis.any(0)
    assert min(np.corrcoef(albedo[seen, k], video["albedo"][seen, k])[0, 1] for k in range(3)) > 0.9


def test_static_head_falls_back_to_observed_colours(video):
    # One frame cannot separate albedo from shading: the lighting stays ambient, the colours are reproduced.
    size = video["size"]
    v, n, p = video["vertices"][:1], video["normals"][:1], video["points"][:1]
    vis = visible_vertices(v, n, video["triangles"], (size, size), p, perspective=True)
    albedo, sh, stats = estimate_albedo_and_lighting(video["frames"][:1], p, n, vis)
    observed = sample_colors(video["frames"][0], p[0])
    assert np.abs(shade(albedo, n[0], sh) - observed)[vis[0]].mean() < 0.01
    assert np.abs(sh[1:]).max() < 0.05
    assert stats["observed_fraction"] == pytest.approx(vis[0].mean())


def test_estimate_rejects_input_without_usable_frames(video):
    vis = np.zeros((2, len(video["albedo"])), bool)
    with pytest.raises(ValueError):
        estimate_albedo_and_lighting(video["frames"][:2], video["points"][:2], video["normals"][:2], vis)
    vis[:] = True
    with pytest.raises(ValueError):
        estimate_albedo_and_lighting(
            video["frames"][:2], video["points"][:2], video["normals"][:2], vis, valid=np.zeros(2, bool)
        )


# --- UV texture ------------------------------------------------------------------------------------------


def test_bake_uv_texture_interpolates_vertex_albedo():
    v, tri = grid_plane(0, 1, 0, 1, 1.0, 2)  # 4 vertices, 2 triangles
    uv = np.stack([0.1 + 0.8 * v[:, 0], 0.1 + 0.8 * v[:, 1]], 1)
    albedo = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)  # r = u-ish, g = v-ish
    tex = bake_uv_texture(albedo, tri, uv, tri, size=32)
    assert tex.shape == (32, 32, 3) and tex.dtype == np.float32
    # texel (row, col) centre ↔ u = (col + 0.5) / 32, v = 1 − (row + 0.5) / 32; r = (u − 0.1) / 0.8 inside
    u = (np.arange(32) + 0.5) / 32
    inside = (u > 0.1) & (u < 0.9)
    np.testing.assert_allclose(tex[16, inside, 0], (u[inside] - 0.1) / 0.8, atol=1e-6)
    vv = 1 - (np.arange(32) + 0.5) / 32
    np.testing.assert_allclose(tex[inside, 16, 1], (vv[inside] - 0.1) / 0.8, atol=1e-6)
    # the gutter outside the chart takes the nearest chart colour, never black
    assert tex[0, 0, 1] == pytest.approx(1.0, abs=0.05) and tex[31, 31, 0] == pytest.approx(1.0, abs=0.05)


def test_track_datasets_describe_albedo_and_sh():
    assert TRACK_DATASETS["albedo"].shape == ("N", 3) and TRACK_DATASETS["albedo"].dtype == "float32"
    assert TRACK_DATASETS["sh"].shape == (9, 3) and TRACK_DATASETS["sh"].dtype == "float32"
