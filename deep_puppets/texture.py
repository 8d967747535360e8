"""Per-vertex albedo and spherical-harmonics lighting of a tracked face, estimated from the first frames.

The image model is Lambertian with distant lighting described by 9 real spherical-harmonics (SH)
coefficients per colour channel (Ramamoorthi & Hanrahan 2001)::

    colour(vertex i, frame t) = albedo[i] * (sh_basis(normal[t, i]) @ sh)       # (3,) per vertex

:func:`shade` is exactly this formula; the renderer reproduces it to draw conditioning images.

Conventions (shared with the fitter and the renderer; the constants below are the single source):

* **Camera** (:data:`CAMERA_AXES`): OpenCV axes, x right, y down, z forward into the scene
  (:data:`CAMERA_FORWARD`). The project's fitter is weak-perspective (:mod:`deep_puppets.camera`): its
  screen-space vertices ``(u, v, d) = scale · F · R · X + t`` (pixels, smaller ``d`` nearer) *are* camera
  coordinates of an orthographic camera in these axes, and their first two columns are the projections —
  the default ``perspective=False`` of the functions below. With ``perspective=True`` the camera sits at the
  origin, a point in front of it has z > 0 and projects to ``u = fx x / z + cx``, ``v = fy y / z + cy``.
  These axes are right-handed, so a model → camera transform must be a proper rotation (det +1) times a
  positive scale plus a translation: a model with y up and z towards the viewer needs
  ``F = diag(1, -1, -1)`` folded in (as ``camera.FLIP`` does).
* **Image coordinates** (:data:`PIXEL_CENTER`): x = column, y = row, in pixels of the full frame, with the
  centre of pixel ``(row r, col c)`` at ``(c + 0.5, r + 0.5)`` — MediaPipe's ``normalised × width`` convention
  used by the ``landmarks`` layout.
* **Triangles and normals**: triangles are counter-clockwise seen from outside (``MorphableModel``
  convention), so ``(v1 - v0) × (v2 - v0)`` points outward in any right-handed frame. A surface point faces the
  camera when its normal points towards the camera: ``n_z < 0`` (orthographic) or ``dot(n, -v) > 0``
  (perspective). In image coordinates (y down) a front-facing triangle has a *negative* signed area
  ``(x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0)`` (it looks counter-clockwise on screen).
* **SH** (:data:`SH_ORDER_DOC`): 9 real SH in the order ``l=0; l=1: y, z, x; l=2: xy, yz, 3z²-1, xz, x²-y²``
  evaluated at the unit normal in *camera coordinates* (the light is fixed relative to the camera while
  the head moves). :func:`sh_basis` folds in the irradiance factors ``Â_l = π, 2π/3, π/4`` so that
  ``sh_basis(n) @ L`` is the irradiance ``E(n) = ∫ L(ω) max(n·ω, 0) dω`` of the environment radiance whose SH
  coefficients are ``L``; the albedo absorbs Lambert's 1/π.
* **Scale normalisation** (gauge): albedo × lighting has one free scale per colour channel. Estimates are
  normalised so that the DC coefficient of every channel is :data:`SH_DC_UNIT`, i.e. the irradiance averaged
  over all normal directions is 1 in each channel: the albedo carries the overall brightness and colour
  (of skin × light), ``sh[1:]`` the relative directional variation (which may be coloured).

Frames are RGB (``video.iter_frames``); colours are floats in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components

from . import h5io
from .h5io import Dataset

# --- conventions -----------------------------------------------------------------------------------------

CAMERA_AXES = "opencv: x right, y down, z forward (into the scene); screen space (u, v, d) of the fitter"
CAMERA_FORWARD = np.array([0.0, 0.0, 1.0])  # viewing direction of the camera in camera coordinates
PIXEL_CENTER = 0.5  # image coordinate of the centre of pixel 0 (x = col + 0.5, y = row + 0.5)

SH_ORDER_DOC = "1; y, z, x; xy, yz, 3z^2-1, xz, x^2-y^2"
SH_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])  # degree l of each coefficient
# Normalisation constants of the real SH (orthonormal on the unit sphere) in the order of SH_ORDER_DOC:
# 0.282095, 0.488603 ×3, 1.092548 ×2, 0.315392, 1.092548, 0.546274.
_Y0, _Y1, _Y2 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi)), math.sqrt(15 / (4 * math.pi))
SH_Y_CONST = np.array([_Y0, _Y1, _Y1, _Y1, _Y2, _Y2, math.sqrt(5 / (16 * math.pi)), _Y2, _Y2 / 2])
SH_A_HAT = np.array([math.pi, 2 * math.pi / 3, math.pi / 4])  # Â_l: clamped-cosine convolution per band
# Folded (Ramamoorthi–Hanrahan): 0.886227, 1.023327 ×3, 0.858086 ×2, 0.247708, 0.858086, 0.429043.
SH_IRRADIANCE_CONST = SH_Y_CONST * SH_A_HAT[SH_BAND]
SH_DC_UNIT = 1.0 / SH_IRRADIANCE_CONST[0]  # DC coefficient of a uniform environment with irradiance 1

# What the lead stores in the track HDF5 (not registered here: the track layout owns them).
TRACK_DATASETS = {
    "albedo": Dataset("float32", ("N", 3), "per-vertex RGB albedo in [0, 1] (deep_puppets.texture gauge)"),
    "sh": Dataset("float32", (9, 3), "SH lighting, camera coordinates, irradiance-folded basis, DC = SH_DC_UNIT"),
}


# --- geometry --------------------------------------------------------------------------------------------


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (…, N, 3), outward for counter-clockwise triangles.

    Each vertex gets the sum of ``(v1 - v0) × (v2 - v0)`` (twice the area times the unit normal) of its
    triangles, normalised. Vertices in no triangle (or with cancelling normals) get a zero vector, which
    never passes a facing test. Batched over any leading dimensions (e.g. frames).
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    n = v.shape[-2]
    lead = v.shape[:-2]
    vb = v.reshape(-1, n, 3)
    fn = np.cross(vb[:, tri[:, 1]] - vb[:, tri[:, 0]], vb[:, tri[:, 2]] - vb[:, tri[:, 0]])  # (B, F, 3)
    inc = _incidence(tri, n)  # (N, F)
    b = vb.shape[0]
    vn = (inc @ fn.transpose(1, 0, 2).reshape(len(tri), b * 3)).reshape(n, b, 3).transpose(1, 0, 2)
    norm = np.linalg.norm(vn, axis=-1, keepdims=True)
    vn = np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 1e-30)
    return vn.reshape(*lead, n, 3)


def _incidence(triangles: np.ndarray, n: int) -> sp.csr_matrix:
    """Sparse (N, F) vertex–triangle incidence (1 where the vertex is a corner of the triangle)."""
    f = len(triangles)
    rows = triangles.reshape(-1)
    cols = np.repeat(np.arange(f), 3)
    return sp.csr_matrix((np.ones(3 * f), (rows, cols)), shape=(n, f))


def mesh_laplacian(triangles: np.ndarray, n: int) -> sp.csr_matrix:
    """Uniform graph Laplacian (degree − adjacency) of the mesh edges, (N, N) sparse, symmetric PSD."""
    t = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    e = e[e[:, 0] != e[:, 1]]
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    adj = (adj + adj.T).tocsr()  # duplicates (edges shared by two triangles) are summed ...
    adj.data[:] = 1.0  # ... and reset: an unweighted graph
    return (sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj).tocsr()


# --- spherical harmonics ---------------------------------------------------------------------------------


def sh_basis(normals: np.ndarray, irradiance: bool = True) -> np.ndarray:
    """The 9 real SH of unit directions (…, 3) → (…, 9), order :data:`SH_ORDER_DOC`.

    With ``irradiance=True`` (default) each function is multiplied by the Ramamoorthi–Hanrahan factor
    ``Â_l`` (:data:`SH_IRRADIANCE_CONST`), so ``sh_basis(n) @ L`` is the irradiance at normal ``n`` of an
    environment with radiance SH coefficients ``L`` (9, C). With ``irradiance=False`` it is the plain
    orthonormal basis ``Y_lm`` (use it to project a radiance onto ``L``).
    """
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = np.ones_like(x)
    raw = np.stack([one, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], axis=-1)
    return raw * (SH_IRRADIANCE_CONST if irradiance else SH_Y_CONST)


def sh_directional(direction, color=1.0, ambient=0.0) -> np.ndarray:
    """SH coefficients (9, 3) of a distant light towards ``direction`` plus a uniform ambient.

    ``direction`` points from the surface towards the light (camera coordinates); ``color`` (scalar or (3,))
    is the irradiance it gives a surface facing it, ``ambient`` (scalar or (3,)) the irradiance of the uniform
    part. The shading ``sh_basis(n) @ L`` is the order-2 approximation of ``ambient + color · max(n·d, 0)``.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    col = np.broadcast_to(np.asarray(color, dtype=np.float64), (3,))
    amb = np.broadcast_to(np.asarray(ambient, dtype=np.float64), (3,))
    L = sh_basis(d, irradiance=False)[:, None] * col[None, :]
    L[0] += amb * SH_DC_UNIT
    return L


def sh_light_direction(sh: np.ndarray) -> np.ndarray:
    """Unit direction (camera coordinates) of the dominant light: the channel-mean l=1 band as (x, y, z)."""
    l1 = np.asarray(sh, dtype=np.float64)[1:4].mean(axis=1)  # coefficients of y, z, x
    d = np.array([l1[2], l1[0], l1[1]])
    nrm = np.linalg.norm(d)
    return d / nrm if nrm > 0 else d


def shade(albedo: np.ndarray, normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Lambertian colours ``albedo × (sh_basis(normals) @ sh)``: (N, 3), (…, N, 3), (9, 3) → (…, N, 3).

    Not clipped (a renderer writing 8-bit images clips to [0, 1]).
    """
    return np.asarray(albedo) * (sh_basis(normals) @ np.asarray(sh, dtype=np.float64))


# --- rasterisation and visibility ------------------------------------------------------------------------


def rasterize(xy, triangles, shape, z=None, perspective=True, return_ids=True, max_pairs=1_000_000):
    """Z-buffer rasteriser in numpy: which triangle covers each pixel centre, and at what depth.

    ``xy`` (N, 2) are raster coordinates in which the centre of pixel ``(row r, col c)`` is ``(c, r)``;
    ``shape`` is ``(h, w)``; ``z`` (N,) depths (None: all triangles at depth 0, any one wins).
    With ``perspective`` the depth and barycentrics are interpolated perspective-correctly (1/z is affine
    on screen), else affinely (then z may have any sign). Both windings are drawn (no culling). Triangles
    with a non-finite corner (or, with ``perspective`` depths, a corner at z <= 0) are skipped.

    Returns ``depth`` (h, w) (inf where empty) and, with ``return_ids``, ``tri`` (h, w) int64 (−1 where
    empty) and ``bary`` (h, w, 3) barycentric weights of the triangle's corners at the pixel centre.
    """
    h, w = shape
    t = np.asarray(triangles, dtype=np.int64)
    p = np.asarray(xy, dtype=np.float64)[t]  # (F, 3, 2)
    zc = np.zeros(t.shape) if z is None else np.asarray(z, dtype=np.float64)[t]
    (x0, x1, x2), (y0, y1, y2) = p[..., 0].T, p[..., 1].T
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = np.isfinite(p).all(axis=(1, 2)) & np.isfinite(zc).all(axis=1) & (np.abs(area) > 1e-12)
    if z is not None and perspective:
        ok &= (zc > 0).all(axis=1)
    with np.errstate(invalid="ignore"):
        xmin = np.clip(np.ceil(p[..., 0].min(1)), 0, w)
        xmax = np.clip(np.floor(p[..., 0].max(1)), -1, w - 1)
        ymin = np.clip(np.ceil(p[..., 1].min(1)), 0, h)
        ymax = np.clip(np.floor(p[..., 1].max(1)), -1, h - 1)
        inv = 1.0 / area
    nx = np.where(ok, xmax - xmin + 1, 0).clip(0).astype(np.int64)
    ny = np.where(ok, ymax - ymin + 1, 0).clip(0).astype(np.int64)
    xmin, ymin = np.nan_to_num(xmin).astype(np.int64), np.nan_to_num(ymin).astype(np.int64)
    # Barycentric coordinates are affine in the pixel position: l_k = a_k x + b_k y + c_k.
    coef = np.stack(
        [
            (y1 - y2) * inv,
            (x2 - x1) * inv,
            (x1 * y2 - x2 * y1) * inv,
            (y2 - y0) * inv,
            (x0 - x2) * inv,
            (x2 * y0 - x0 * y2) * inv,
        ],
        axis=1,
    )

    depth = np.full(h * w, np.inf)
    kept = []
    live = np.flatnonzero(nx * ny > 0)
    # Bounding boxes rounded up to a geometric ladder of sizes; each size class is broadcast in one go.
    ladder = np.unique(np.ceil(1.25 ** np.arange(int(np.log(max(h, w) + 1) / np.log(1.25)) + 2)).astype(np.int64))
    bx, by = ladder[np.searchsorted(ladder, nx[live])], ladder[np.searchsorted(ladder, ny[live])]
    sizes, group = np.unique(bx * (ladder[-1] + 1) + by, return_inverse=True)
    for g, key in enumerate(sizes):
        gx, gy = divmod(int(key), int(ladder[-1]) + 1)
        members = live[group.ravel() == g]
        step = max(1, max_pairs // int(gx * gy))
        for s in range(0, len(members), step):
            idx = members[s : s + step]
            px = (xmin[idx, None, None] + np.arange(gx)[None, None, :]).astype(np.float64)
            py = (ymin[idx, None, None] + np.arange(gy)[None, :, None]).astype(np.float64)
            cf = coef[idx, :, None, None]
            l0 = cf[:, 0] * px + cf[:, 1] * py + cf[:, 2]
            l1 = cf[:, 3] * px + cf[:, 4] * py + cf[:, 5]
            l2 = 1.0 - l0 - l1
            inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9) & (px < w) & (py < h)
            ti = np.broadcast_to(idx[:, None, None], inside.shape)[inside]
            pix = (np.broadcast_to(py, inside.shape)[inside] * w + np.broadcast_to(px, inside.shape)[inside]).astype(
                np.int64
            )
            lam = np.stack([l0[inside], l1[inside], l2[inside]], 1)
            if z is None:
                d = np.zeros(len(ti))
            elif perspective:
                lam = lam / zc[ti]
                d = 1.0 / lam.sum(1)
                lam = lam * d[:, None]
            else:
                d = (lam * zc[ti]).sum(1)
            np.minimum.at(depth, pix, d)
            if return_ids:
                kept.append((pix, d, ti, lam))
    if not return_ids:
        return depth.reshape(h, w)
    tri_id = np.full(h * w, -1, dtype=np.int64)
    bary = np.zeros((h * w, 3))
    for pix, d, ti, lam in kept:
        win = d <= depth[pix]
        tri_id[pix[win]] = ti[win]
        bary[pix[win]] = lam[win]
    return depth.reshape(h, w), tri_id.reshape(h, w), bary.reshape(h, w, 3)


def facing_cosine(vertices_cam: np.ndarray, normals: np.ndarray, perspective: bool = False) -> np.ndarray:
    """Cosine between each normal and the direction towards the camera (…, N); > 0 means front-facing."""
    v = np.asarray(vertices_cam, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    if not perspective:
        return -(n @ CAMERA_FORWARD)
    dist = np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return -np.einsum("...i,...i->...", n, v) / dist


def visible_vertices(
    vertices_cam,
    normals,
    triangles,
    image_size,
    proj2d=None,
    *,
    cos_min: float = 0.1,
    margin: float = 1.5,
    depth_eps: float = 0.01,
    buffer_size: int | None = None,
    perspective: bool = False,
) -> np.ndarray:
    """Which vertices the camera sees: (N, 3) → (N,) bool, or batched over frames (T, N, 3) → (T, N).

    A vertex is visible when all of these hold:

    * facing: the cosine between its normal and the direction to the camera exceeds ``cos_min``;
    * it projects inside the image (``image_size = (height, width)``, :data:`PIXEL_CENTER` convention) and,
      with ``perspective``, lies in front of the camera (z > 0);
    * z-buffer: the mesh's triangles are rasterised (all of them, back faces included) into a depth map
      covering the projected face's bounding box, ``buffer_size`` pixels along its longer side (default: two
      buffer pixels per median projected edge but at least one per image pixel, 64 to 512 pixels); the vertex's
      depth may exceed the buffer's at its nearest buffer pixel by at most
      ``depth_eps × extent + 0.75 × buffer pixel × tan(angle to the view ray)``, where ``extent`` is the
      mesh's size in x/y (camera units): the first term absorbs noise, the second the slope of the vertex's
      own surface over the distance to that pixel centre;
    * silhouette margin: no background (pixel not covered by the mesh) within ``margin`` image pixels, so
      that a colour sampled there is not mixed with the background (0 switches this off).

    ``vertices_cam`` are camera coordinates (:data:`CAMERA_AXES`), ``proj2d`` their image projections in
    pixels (``None``: ``vertices_cam[..., :2]``, right for the fitter's screen-space vertices), ``normals``
    from :func:`vertex_normals`. ``perspective`` picks the camera model (module doc; default: the fitter's
    orthographic one). Non-finite inputs make a vertex invisible.
    """
    v = np.asarray(vertices_cam, dtype=np.float64)
    if proj2d is None:
        proj2d = v[..., :2]
    if v.ndim == 3:
        return np.stack(
            [
                visible_vertices(
                    v[k],
                    normals[k],
                    triangles,
                    image_size,
                    proj2d[k],
                    cos_min=cos_min,
                    margin=margin,
                    depth_eps=depth_eps,
                    buffer_size=buffer_size,
                    perspective=perspective,
                )
                for k in range(len(v))
            ]
        )
    n = np.asarray(normals, dtype=np.float64)
    p = np.asarray(proj2d, dtype=np.float64)[:, :2]
    h, w = image_size
    cos = facing_cosine(v, n, perspective)
    ok = np.isfinite(v).all(1) & np.isfinite(p).all(1)
    if perspective:
        ok &= v[:, 2] > 0
    vis = ok & (np.nan_to_num(cos, nan=-1.0) > cos_min)
    vis &= (p[:, 0] >= 0) & (p[:, 0] <= w) & (p[:, 1] >= 0) & (p[:, 1] <= h)
    if not vis.any():
        return vis
    # Depth buffer over the projected bounding box of the usable vertices, padded by the margin.
    pad = margin + 1.0
    lo = np.clip(p[ok].min(0) - pad, -pad, [w, h])
    hi = np.clip(p[ok].max(0) + pad, 0, [w + pad, h + pad])
    if buffer_size is None:
        t = np.asarray(triangles)
        edge = np.linalg.norm(p[t[:, 1]] - p[t[:, 0]], axis=1)
        edge = edge[np.isfinite(edge) & (edge > 0)]
        per_px = max(2.0 / float(np.median(edge)), 1.0) if len(edge) else 1.0  # ≥ 1 for a faithful margin
        buffer_size = int(np.clip(per_px * float((hi - lo).max()), 64, 512))
    scale = buffer_size / max(float((hi - lo).max()), 1.0)
    q = (p - lo) * scale
    shape = (int(math.ceil((hi - lo)[1] * scale)) + 1, int(math.ceil((hi - lo)[0] * scale)) + 1)
    zbuf = rasterize(q, triangles, shape, z=np.where(ok, v[:, 2], np.nan), perspective=perspective, return_ids=False)
    if margin > 0:  # background within the margin → -inf: fails every depth test below
        r = max(int(math.ceil(margin * scale)), 1)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        inner = cv2.erode(np.isfinite(zbuf).astype(np.uint8), disk, borderValue=0).astype(bool)
        zbuf = np.where(inner, zbuf, -np.inf)

    extent = float(np.ptp(v[ok, :2], axis=0).max())
    pix_world = extent / max(float(np.ptp(q[ok], axis=0).max()), 1e-9)  # camera units per buffer pixel
    c = np.clip(np.nan_to_num(cos[vis]), cos_min, 1.0)
    tan = np.sqrt(1.0 - c * c) / np.maximum(c, 1e-6)
    eps = depth_eps * extent + 0.75 * pix_world * tan
    idx = np.flatnonzero(vis)
    col = np.clip(np.rint(q[idx, 0]).astype(np.int64), 0, shape[1] - 1)
    row = np.clip(np.rint(q[idx, 1]).astype(np.int64), 0, shape[0] - 1)
    vis[idx] = v[idx, 2] <= zbuf[row, col] + eps
    return vis


# --- colours ---------------------------------------------------------------------------------------------


def sample_colors(frame: np.ndarray, points2d: np.ndarray) -> np.ndarray:
    """Bilinear RGB samples (N, 3) in [0, 1] of ``frame`` (H, W, 3) at image points (N, 2).

    uint8 frames are divided by 255, float frames taken as they are. Points use :data:`PIXEL_CENTER`;
    points outside the image take the nearest border value; non-finite points give NaN.
    """
    img = np.asarray(frame)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h, w = img.shape[:2]
    p = np.asarray(points2d, dtype=np.float64)[:, :2]
    good = np.isfinite(p).all(1)
    col = np.where(good, p[:, 0], 0.0) - PIXEL_CENTER
    row = np.where(good, p[:, 1], 0.0) - PIXEL_CENTER
    c0 = np.clip(np.floor(col), 0, max(w - 2, 0)).astype(np.int64)
    r0 = np.clip(np.floor(row), 0, max(h - 2, 0)).astype(np.int64)
    c1 = np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    fx = np.clip(col - c0, 0, 1)[:, None]
    fy = np.clip(row - r0, 0, 1)[:, None]
    out = (img[r0, c0] * (1 - fx) + img[r0, c1] * fx) * (1 - fy) + (img[r1, c0] * (1 - fx) + img[r1, c1] * fx) * fy
    out[~good] = np.nan
    return out


# --- estimation ------------------------------------------------------------------------------------------


def estimate_albedo_and_lighting(
    frames,
    points2d,
    normals,
    visible,
    *,
    triangles=None,
    valid=None,
    weights=None,
    n_frames: int = 10,
    n_iter: int = 30,
    smooth: float = 0.05,
    robust: bool = True,
    saturation: float = 250 / 255,
    tol: float = 1e-4,
):
    """Per-vertex albedo (N, 3) and SH lighting (9, 3) explaining the colours of the first valid frames.

    Inputs per frame t: ``frames[t]`` RGB (H, W, 3), ``points2d[t]`` (N, 2) image projections of the
    vertices, ``normals[t]`` (N, 3) unit normals in camera coordinates, ``visible[t]`` (N,) bool
    (:func:`visible_vertices`). ``valid`` (T,) flags usable frames (others are skipped); the first
    ``n_frames`` valid frames with any visible vertex are used. ``weights`` (T, N) optionally down-weights
    samples (e.g. by facing cosine). Samples with a channel ≥ ``saturation`` (clipped highlights) or with
    non-finite inputs are ignored.

    Model: ``c_ti ≈ a_i · s_ti`` per channel with shading ``s_ti = sh_basis(n_ti) @ L``. It is solved in two
    stages:

    1. lighting: for a given ``L`` the least-squares albedo is closed-form per vertex,
       ``a_i = Σ_t w s c / Σ_t w s²``; eliminating it (variable projection) leaves a small nonlinear problem
       in the 8 non-DC coefficients of each channel (the DC is held at :data:`SH_DC_UNIT`: the gauge of the
       module doc), solved by Levenberg–Marquardt from ambient-only light. With ``robust``, Huber weights
       on the per-sample residuals (scale from their median) are refreshed every iteration (specularities,
       occluders, tracking errors). At most ``n_iter`` iterations; stops once no coefficient moves by
       more than ``tol``. The lighting is identified by the head *moving* under it: each vertex is
       seen under several normals. A static head leaves it (nearly) unidentified; a tiny ridge on the
       non-DC terms then keeps the lighting close to ambient and the albedo close to the observed colours.
    2. albedo: given the lighting, ``argmin Σ w (a s − c)² + λ Σ_edges |a_i − a_j|²`` per channel, with
       λ = ``smooth`` × the median number of observations per vertex, when ``triangles`` is given: one
       sparse solve that also fills never-visible vertices by harmonic diffusion from their neighbours (mesh
       parts with no observation at all get the mean albedo). Without ``triangles``: the per-vertex least
       squares, unobserved vertices get the mean. Clipped to [0, 1].

    Returns ``(albedo (N, 3) float32, sh (9, 3) float32, stats dict)``; ``stats`` has the frames used, the
    number of samples, iterations, reproduction errors (``mae``, ``rmse`` over used samples), the observed
    and clipped fractions of vertices and the dominant ``light_direction``.
    """
    pts = np.asarray(points2d, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    t_all, n = vis.shape
    valid = np.ones(t_all, bool) if valid is None else np.asarray(valid, dtype=bool)
    use = [t for t in range(t_all) if valid[t] and vis[t].any()][:n_frames]
    if not use:
        raise ValueError("no valid frame with visible vertices to estimate albedo and lighting from")

    # Samples: (frame, vertex) pairs that are visible, finite and unsaturated.
    cols = np.stack([sample_colors(frames[t], pts[t]) for t in use])  # (K, N, 3)
    m = vis[use] & np.isfinite(cols).all(-1) & np.isfinite(nrm[use]).all(-1)
    m &= np.nan_to_num(cols, nan=1.0).max(-1) < saturation
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64)[use]
        m &= np.isfinite(wt) & (wt > 0)
    k_idx, v_idx = np.nonzero(m)
    if len(v_idx) < 9:
        raise ValueError(f"only {len(v_idx)} usable colour samples; need at least 9")
    c = cols[k_idx, v_idx].astype(np.float64)  # (S, 3)
    b = sh_basis(nrm[use][k_idx, v_idx])  # (S, 9)
    w0 = np.ones(len(v_idx)) if weights is None else wt[k_idx, v_idx]

    sh, w, it = _fit_lighting(b, c, v_idx, n, w0, n_iter, robust, tol)

    counts = np.bincount(v_idx, minlength=n).astype(np.float64)
    observed = counts > 0
    s = b @ sh
    lap = mesh_laplacian(triangles, n) if triangles is not None else None
    lam = max(smooth, 1e-6) * float(np.median(counts[observed]))
    albedo = np.clip(_solve_albedo(v_idx, s, c, w, n, lap, lam), 0.0, 1.0)

    res = albedo[v_idx] * s - c
    stats = {
        "frames_used": [int(t) for t in use],
        "n_samples": int(len(v_idx)),
        "n_iter": it,
        "mae": float(np.abs(res).mean()),
        "rmse": float(np.sqrt((res**2).mean())),
        "observed_fraction": float(observed.mean()),
        "clipped_fraction": float(((albedo <= 0) | (albedo >= 1)).any(1).mean()),
        "light_direction": sh_light_direction(sh).tolist(),
    }
    return albedo.astype(np.float32), sh.astype(np.float32), stats


def _albedo_given_shading(v_idx, s, c, w, n):
    """Closed-form per-vertex least-squares albedo of one channel: numerator, denominator, value (0 if unseen)."""
    num = np.bincount(v_idx, w * s * c, minlength=n)
    den = np.bincount(v_idx, w * s * s, minlength=n)
    a = np.divide(num, den, out=np.zeros(n), where=den > 1e-12)
    return num, den, a


def _projected_cost(b, c, v_idx, n, w, L, ridge):
    """Variable-projection cost of one channel: Σ w (a(L) s − c)² + ridge |L[1:]|², and its residuals."""
    s = b @ L
    _, _, a = _albedo_given_shading(v_idx, s, c, w, n)
    r = a[v_idx] * s - c
    return float(w @ (r * r) + ridge * (L[1:] @ L[1:])), r


def _fit_lighting(b, c, v_idx, n, w0, n_iter, robust, tol):
    """SH (9, 3) by Levenberg–Marquardt on the albedo-eliminated problem, DC fixed; IRLS Huber weights."""
    sh = np.zeros((9, 3))
    sh[0] = SH_DC_UNIT
    mu = np.full(3, 1e-3)
    w = w0.copy()
    it = 0
    for it in range(1, n_iter + 1):
        step = 0.0
        for k in range(3):
            L, ck = sh[:, k], c[:, k]
            ridge = 1e-6 * float(w.sum())
            s = b @ L
            _, den, a = _albedo_given_shading(v_idx, s, ck, w, n)
            r = a[v_idx] * s - ck
            cost = float(w @ (r * r) + ridge * (L[1:] @ L[1:]))
            # d a_i / d L = Σ_t w (c − 2 a s) b / Σ_t w s²   (quotient rule on num / den)
            g = (w * (ck - 2 * a[v_idx] * s))[:, None] * b
            da = np.stack([np.bincount(v_idx, g[:, j], minlength=n) for j in range(9)], 1)
            da = np.divide(da, den[:, None], out=np.zeros_like(da), where=den[:, None] > 1e-12)
            jac = (a[v_idx, None] * b + s[:, None] * da[v_idx])[:, 1:]  # DC held fixed (gauge)
            jtj = (jac.T * w) @ jac + ridge * np.eye(8)
            grad = (jac.T * w) @ r + ridge * L[1:]
            for _ in range(10):  # Levenberg–Marquardt: shrink the step until the cost drops
                delta = np.linalg.solve(jtj + mu[k] * np.diag(np.diag(jtj) + 1e-12), -grad)
                trial = L.copy()
                trial[1:] += delta
                new_cost, _ = _projected_cost(b, ck, v_idx, n, w, trial, ridge)
                if new_cost <= cost:
                    sh[:, k] = trial
                    mu[k] = max(mu[k] / 3, 1e-9)
                    step = max(step, float(np.abs(delta).max()))
                    break
                mu[k] *= 10
        if robust:
            r = np.stack([_projected_cost(b, c[:, k], v_idx, n, w, sh[:, k], 0.0)[1] for k in range(3)], 1)
            e = np.abs(r).mean(1)
            sigma = 1.4826 * float(np.median(e)) + 1e-6
            w = w0 * np.minimum(1.0, 2.0 * sigma / np.maximum(e, 1e-12))
        if step < tol:
            break
    return sh, w, it


def _solve_albedo(v_idx, s, c, w, n, lap, lam):
    """Albedo (N, 3) minimising Σ w (a s − c)² + λ aᵀ Lap a (the Laplacian term also fills unseen vertices).

    Connected mesh parts without any observation get the mean albedo; the rest is one sparse SPD system
    per channel, solved by Jacobi-preconditioned conjugate gradients from the per-vertex solution.
    """
    out = np.empty((n, 3))
    for k in range(3):
        rhs, d, a = _albedo_given_shading(v_idx, s[:, k], c[:, k], w, n)
        seen = d > 1e-12
        mean = float(np.average(a[seen], weights=d[seen]))
        out[:, k] = np.where(seen, a, mean)
        if lap is None:
            continue
        if k == 0:
            _, comp = connected_components(lap, directed=False)
            free = np.flatnonzero(np.bincount(comp, seen)[comp] > 0)
            sub_lap = lap[free][:, free]
        mat = (sp.diags(d[free]) + lam * sub_lap).tocsr()
        precond = sp.diags(1.0 / mat.diagonal())
        x, _ = spla.cg(mat, rhs[free], x0=out[free, k], rtol=1e-7, maxiter=5000, M=precond)
        out[free, k] = x
    return out


def bake_uv_texture(albedo, triangles, uv, triangles_uv, size: int = 512) -> np.ndarray:
    """Per-vertex albedo baked into a (size, size, 3) float32 UV texture (for models with UVs).

    ``uv`` (M, 2) in [0, 1] with v up (OpenGL/OBJ: texel row = (1 − v) × size); ``triangles_uv`` (F, 3)
    indexes ``uv`` corner by corner like ``triangles`` (F, 3) indexes the vertices. Texels are coloured by
    barycentric interpolation of the corners' albedo; texels outside every triangle take the nearest
    covered texel's colour (so bilinear lookups at seams do not bleed black).
    """
    from scipy.ndimage import distance_transform_edt

    uvp = np.asarray(uv, dtype=np.float64)
    xy = np.stack([uvp[:, 0] * size - PIXEL_CENTER, (1.0 - uvp[:, 1]) * size - PIXEL_CENTER], 1)
    _, tri_id, bary = rasterize(xy, triangles_uv, (size, size))
    corner = np.asarray(albedo, dtype=np.float64)[np.asarray(triangles)]  # (F, 3, 3)
    covered = tri_id >= 0
    tex = np.zeros((size, size, 3))
    tex[covered] = np.einsum("pk,pkc->pc", bary[covered], corner[tri_id[covered]])
    if covered.any() and not covered.all():
        _, (ri, ci) = distance_transform_edt(~covered, return_indices=True)
        tex = tex[ri, ci]
    return tex.astype(np.float32)


ALBEDO_LIMIT = 4.0  # albedo is clipped to [0, 1] when estimated; beyond a few it is damage, not a texture
SH_LIMIT = 1e3  # SH lighting coefficients (the DC term is SH_DC_UNIT for unit irradiance)


def _check_texture(arrays: dict, attrs: dict) -> str | None:
    return h5io.first_problem(
        h5io.nonfinite("albedo", arrays["albedo"]),
        h5io.out_of_range("albedo", arrays["albedo"], 0.0, ALBEDO_LIMIT),
        h5io.nonfinite("sh", arrays["sh"]),
        h5io.out_of_range("sh", arrays["sh"], -SH_LIMIT, SH_LIMIT),
    )


TEXTURE = h5io.Layout(
    name="texture",
    version=1,
    doc=(
        "Per-vertex albedo and spherical-harmonics lighting of the person in one video, estimated from the "
        "first frames with a face (deep_puppets/texture.py, estimate_albedo_and_lighting)."
    ),
    datasets=TRACK_DATASETS,
    attrs={
        "video": "video name",
        "model_hash": "content hash of the model whose vertices the albedo belongs to",
        "frames": "JSON list of the frames used",
        "stats": "JSON of the estimate's statistics (reproduction error, fraction of vertices seen, ...)",
    },
    check=_check_texture,
)
