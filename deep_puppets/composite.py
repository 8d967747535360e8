"""Compositing: a generated head crop back into the full-resolution frame, blended over a plate.

The crop convention is :func:`deep_puppets.gan.data.crop_resize`'s: crop pixel ``(u, v)`` of an ``S × S`` crop
of ``box = (x0, y0, x1, y1)`` covers frame coordinates ``x0 + [u, u + 1) · (x1 − x0) / S`` (likewise y), and
frame pixel ``c`` covers ``[c, c + 1)``. :func:`uncrop` is its inverse: it resamples a crop (and its alpha) to
the frame pixels the box covers, so a crop made by ``crop_resize`` and pasted back by :func:`paste` lands where
it came from.

:func:`blend` is exact outside the mask: wherever the alpha is 0 the output is the plate, bit for bit, so
everything outside the head (body, background, the rest of the frame) stays the user's own pixels.

:func:`face_alpha` makes the soft mask from a rendered colour conditioning image: its silhouette (the rendered
face, holes for eyes and mouth filled by the convex hull), grown by a fraction of the face height (to cover the
jaw line as it moves, or hair, ears and neck), feathered, and faded to 0 before the crop's edges so that the
crop's border never shows.

:func:`trained_region` is the part of the crop a generator can paint: the crop pixels that lay inside the frame
in (nearly) all of the target's frames. Beyond the frame the training crops are black, so a generator learns to
paint black there, at that place of the crop; when the crop moves with a transferred head (pose+expression mode)
that place falls inside the frame and would show as a dark bar along the frame's edge.
"""

from __future__ import annotations

import numpy as np

from .tracks import smoothstep


def _crop_to_frame_matrix(box, size: int) -> np.ndarray:
    """2×3 affine map from crop pixel coordinates (integer = pixel centre) to frame pixel coordinates."""
    x0, y0, x1, y1 = (float(b) for b in box)
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    return np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])


def box_roi(box, frame_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Frame pixels ``(r0, r1, c0, c1)`` whose centres lie inside ``box`` (clipped to the frame); None if none."""
    h, w = frame_hw
    x0, y0, x1, y1 = (float(b) for b in box)
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.floor(x1 - 0.5)) + 1, w)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.floor(y1 - 0.5)) + 1, h)
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, r1, c0, c1


def uncrop(crop: np.ndarray, box, frame_hw: tuple[int, int]):
    """Resample an ``(S, S[, C])`` crop of ``box`` to the frame pixels the box covers.

    Returns ``(patch, roi)``: ``patch`` float32 of shape ``(r1 − r0, c1 − c0[, C])`` for the frame region
    ``roi = (r0, r1, c0, c1)``, or ``(None, None)`` when the box misses the frame. Bilinear, edge values held at
    the crop's border (the alpha fades to 0 there anyway).
    """
    import cv2

    crop = np.asarray(crop)
    size = crop.shape[0]
    if crop.shape[1] != size:
        raise ValueError(f"crop must be square, got {crop.shape}")
    roi = box_roi(box, frame_hw)
    if roi is None:
        return None, None
    r0, r1, c0, c1 = roi
    m = _crop_to_frame_matrix(box, size)
    m[:, 2] -= (c0, r0)  # into the ROI's coordinates
    src = crop.astype(np.float32, copy=False)
    out = cv2.warpAffine(src, m, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if crop.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out, roi


def blend(plate: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``plate · (1 − α) + layer · α`` rounded to uint8; the plate exactly where ``α == 0``."""
    plate = np.asarray(plate)
    a = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)[..., None]
    mixed = plate.astype(np.float32) * (1.0 - a) + np.asarray(layer, np.float32) * a
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.where(a > 0, out, plate)


def paste(plate: np.ndarray, crop: np.ndarray, alpha_crop: np.ndarray, box) -> np.ndarray:
    """The generated ``crop`` (S, S, 3) uint8 of ``box`` blended into a copy of ``plate`` (H, W, 3) uint8 with its
    soft mask ``alpha_crop`` (S, S) in [0, 1]; pixels outside the warped mask are the plate's, bit for bit."""
    out = np.array(plate, dtype=np.uint8, copy=True)
    layer, roi = uncrop(crop, box, out.shape[:2])
    if roi is None:
        return out
    alpha, _ = uncrop(alpha_crop, box, out.shape[:2])
    r0, r1, c0, c1 = roi
    out[r0:r1, c0:c1] = blend(out[r0:r1, c0:c1], layer, alpha[..., 0] if alpha.ndim == 3 else alpha)
    return out


def frame_alpha(alpha_crop: np.ndarray, box, frame_hw: tuple[int, int]) -> np.ndarray:
    """The crop's mask in frame coordinates: (H, W) float32, 0 outside the box."""
    out = np.zeros(frame_hw, np.float32)
    patch, roi = uncrop(alpha_crop, box, frame_hw)
    if roi is not None:
        r0, r1, c0, c1 = roi
        out[r0:r1, c0:c1] = np.clip(patch[..., 0] if patch.ndim == 3 else patch, 0, 1)
    return out


def silhouette(colour_crop: np.ndarray) -> np.ndarray:
    """The rendered face's pixels (non-black) of a colour conditioning image, (S, S) bool."""
    return np.asarray(colour_crop).max(axis=-1) > 0


def face_alpha(colour_crop: np.ndarray, grow: float = 0.12, feather: float = 0.08, edge: float = 0.04) -> np.ndarray:
    """Soft blend mask (S, S) float32 in [0, 1] from a rendered colour conditioning image.

    1 over the silhouette's convex hull (eyes and mouth are holes of the mesh) and out to ``grow − feather`` face
    heights beyond it, falling smoothly to 0 at ``grow`` face heights (``feather`` is capped at ``grow``, so the
    face itself is always fully replaced); then multiplied by a ramp that reaches 0 ``edge`` × S before the crop's
    borders. All zeros when no face was rendered (the plate shows through).
    """
    import cv2

    sil = silhouette(colour_crop)
    size = sil.shape[0]
    ys, xs = np.nonzero(sil)
    if len(ys) < 3:
        return np.zeros(sil.shape, np.float32)
    height = float(ys.max() - ys.min() + 1)
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    outside = np.ones(sil.shape, np.uint8)
    cv2.fillConvexPoly(outside, hull, 0)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 5)  # 0 on the hull, pixels beyond it elsewhere
    g = grow * height
    f = min(feather * height, g)
    if f <= 0:
        alpha = (dist <= g).astype(np.float32)
    else:
        alpha = smoothstep((g - dist) / f)
    return (alpha * edge_ramp(size, edge)).astype(np.float32)


def trained_region(boxes: np.ndarray, frame_hw: tuple[int, int], size: int, share: float = 0.95, margin: float = 0.02,
                   feather: float = 0.04) -> np.ndarray:
    """(S, S) float32 weights in [0, 1]: where a generator trained on crops of ``boxes`` (T, 4) of frames of
    ``frame_hw`` saw real pixels.

    Per side of the crop, the crop coordinate of the frame's edge in each box; the bound is the one that keeps a
    pixel inside the frame in ``share`` of the boxes (non-finite rows ignored). Weights are 0 up to ``margin`` × S
    inside each bound (the generator's black bleeds a few pixels across its learned edge) and rise to 1 over a
    further ``feather`` × S (smoothstep). A side whose frame edge lies outside the crop (in ``share`` of the boxes)
    has no bound; all ones when no box is finite.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if not len(boxes):
        return np.ones((size, size), np.float32)
    h, w = frame_hw
    centre = np.arange(size) + 0.5
    m, f = margin * size, max(feather * size, 1e-6)

    def axis(extent: float, a0: np.ndarray, a1: np.ndarray) -> np.ndarray:
        scale = (a1 - a0) / size
        first = np.quantile((0.0 - a0) / scale, share)  # crop coordinate of the frame's first pixel edge
        last = np.quantile((extent - a0) / scale, 1.0 - share)  # … and of its far edge
        weight = np.ones(size)
        if first > 0:
            weight *= smoothstep((centre - first - m) / f)
        if last < size:
            weight *= smoothstep((last - m - centre) / f)
        return weight

    cols = axis(float(w), boxes[:, 0], boxes[:, 2])
    rows = axis(float(h), boxes[:, 1], boxes[:, 3])
    return np.outer(rows, cols).astype(np.float32)


def edge_ramp(size: int, edge: float = 0.04) -> np.ndarray:
    """(S, S) weights: 1 inside, falling smoothly to 0 at ``edge`` × S from the crop's border (0 on the border)."""
    n = max(edge * size, 1.0)
    d = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    ramp = smoothstep(d / n)
    return np.minimum.outer(ramp, ramp)
