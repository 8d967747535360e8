"""Compositing a crop back into the frame: the inverse of crop_resize, exact outside the mask, soft masks."""

import cv2
import numpy as np
import pytest

from deep_puppets.composite import (
    blend,
    box_roi,
    edge_ramp,
    face_alpha,
    frame_alpha,
    paste,
    trained_region,
    uncrop,
)
from deep_puppets.gan.data import crop_resize

H, W = 180, 320


def textured_frame() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([128 + 100 * np.sin(xx / 7.0), 128 + 100 * np.cos(yy / 9.0), 128 + 80 * np.sin((xx + yy) / 11.0)], -1).astype(np.uint8)


def rendered_face(size=64, centre=(32, 30), radius=14) -> np.ndarray:
    """A colour conditioning image: a filled face disc with black holes (eyes, mouth), black background."""
    col = np.zeros((size, size, 3), np.uint8)
    cv2.circle(col, centre, radius, (200, 100, 50), -1)
    for dx in (-5, 5):
        cv2.circle(col, (centre[0] + dx, centre[1] - 4), 2, (0, 0, 0), -1)
    cv2.ellipse(col, (centre[0], centre[1] + 6), (5, 2), 0, 0, 360, (0, 0, 0), -1)
    return col


@pytest.mark.parametrize("box", [(100.3, 20.7, 220.3, 140.7), (-30, -20, 90, 100), (250, 100, 370, 220), (100, 20, 220, 140)])
@pytest.mark.parametrize("size", [120, 256])
def test_uncrop_inverts_crop_resize(box, size):
    """A crop made by crop_resize and resampled back lands where it came from (no shift, no flip)."""
    frame = textured_frame()
    patch, roi = uncrop(crop_resize(frame, box, (size, size)), box, (H, W))
    r0, r1, c0, c1 = roi
    # the frame's outermost pixels mix with crop_resize's black padding beyond the frame: left out
    inner = (slice(1 if r0 == 0 else 0, None if r1 < H else -1), slice(1 if c0 == 0 else 0, None if c1 < W else -1))
    err = np.abs(patch - frame[r0:r1, c0:c1])[inner]
    assert err.mean() < 0.5 and np.percentile(err, 99) <= 1.5, (err.mean(), np.percentile(err, 99))


def test_box_outside_the_frame_changes_nothing():
    plate = textured_frame()
    assert box_roi((400, 10, 500, 110), (H, W)) is None
    out = paste(plate, np.full((32, 32, 3), 9, np.uint8), np.ones((32, 32), np.float32), (400, 10, 500, 110))
    assert np.array_equal(out, plate)


def test_pixels_outside_the_mask_are_the_plate_bit_for_bit():
    rng = np.random.default_rng(0)
    plate = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = face_alpha(rendered_face())
    box = (50.5, 40.25, 150.5, 140.25)
    out = paste(plate, crop, alpha, box)
    fa = frame_alpha(alpha, box, (H, W))
    outside = fa == 0
    assert outside.sum() > 0.8 * H * W and (fa == 1).sum() > 500
    assert np.array_equal(out[outside], plate[outside])
    assert not np.array_equal(out[fa == 1], plate[fa == 1])  # the face itself was replaced


def test_blend_is_exact_where_alpha_is_zero_or_one():
    rng = np.random.default_rng(1)
    plate, layer = (rng.integers(0, 256, (10, 10, 3), dtype=np.uint8) for _ in range(2))
    alpha = rng.choice([0.0, 1.0, 0.5], size=(10, 10)).astype(np.float32)
    out = blend(plate, layer, alpha)
    assert np.array_equal(out[alpha == 0], plate[alpha == 0]) and np.array_equal(out[alpha == 1], layer[alpha == 1])
    half = alpha == 0.5
    assert np.abs(out[half].astype(int) - (plate[half].astype(int) + layer[half]) / 2).max() <= 0.5


def test_face_alpha_covers_the_face_holes_included_and_fades_before_the_crop_edge():
    col = rendered_face()
    alpha = face_alpha(col, grow=0.12, feather=0.1)
    sil = col.max(-1) > 0
    hull = np.zeros(sil.shape, np.uint8)
    ys, xs = np.nonzero(sil)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32)), 1)
    assert (alpha[hull > 0] == 1).all()  # the whole face, eyes and mouth included
    assert alpha[0].max() == 0 and alpha[-1].max() == 0 and alpha[:, 0].max() == 0 and alpha[:, -1].max() == 0
    grown = face_alpha(col, grow=0.4, feather=0.1)
    assert (grown > 0).sum() > 1.5 * (alpha > 0).sum()
    assert not face_alpha(np.zeros_like(col)).any()  # no face rendered: nothing pasted


def test_edge_ramp_is_zero_on_the_border_and_one_inside():
    r = edge_ramp(100, 0.1)
    assert r[0].max() == 0 and r[:, -1].max() == 0 and r[10:90, 10:90].min() == 1


def test_trained_region_excludes_the_crop_pixels_beyond_the_frame_in_training():
    """Boxes that always overhang the frame's right edge by 25–30 % of their side, and its top by 10–20 %: the
    crop's right and top parts never held real pixels, so the generator's paint there is not to be used."""
    rng = np.random.default_rng(0)
    x1 = W + rng.uniform(0.25, 0.30, 50) * 100
    y0 = -rng.uniform(0.10, 0.20, 50) * 100
    boxes = np.stack([x1 - 100, y0, x1, y0 + 100], 1)
    boxes[3] = np.nan  # a frame without a fit: ignored
    r = trained_region(boxes, (H, W), 64)
    assert r.shape == (64, 64) and r.dtype == np.float32 and r.min() >= 0 and r.max() <= 1
    right = int(np.ceil(64 * (1 - 0.30)))  # beyond here some training crop was out of frame
    top = int(np.floor(64 * 0.20))
    assert r[:, right - 1 :].max() == 0 and r[:top].max() == 0
    assert r[top + 6 : 64, 0 : right - 8].min() == 1  # well inside: every training crop saw the frame
    assert (np.diff(r[40], axis=0)[30:] <= 0).all()  # falls monotonically towards the edge
    # boxes inside the frame: the whole crop was trained
    inside = np.array([[10.0, 10.0, 110.0, 110.0], [200.0, 50.0, 300.0, 150.0]])
    assert trained_region(inside, (H, W), 64).min() == 1
    assert trained_region(np.full((4, 4), np.nan), (H, W), 64).min() == 1
