"""Camera and image conventions of the texture estimate (:mod:`deep_puppets.texture`), a z-buffer rasteriser
in numpy, and which vertices of a mesh the camera sees (facing and not occluded)."""

from __future__ import annotations

import math

import cv2
import numpy as np

CAMERA_AXES = "opencv: x right, y down, z forward (into the scene); screen space (u, v, d) of the fitter"
CAMERA_FORWARD = np.array([0.0, 0.0, 1.0])  # viewing direction of the camera in camera coordinates
PIXEL_CENTER = 0.5  # image coordinate of the centre of pixel 0 (x = col + 0.5, y = row + 0.5)


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
    from :func:`deep_puppets.mesh.vertex_normals_float64`. ``perspective`` picks the camera model (module doc of
    :mod:`deep_puppets.texture`; default: the fitter's orthographic one). Non-finite inputs make a vertex invisible.
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
