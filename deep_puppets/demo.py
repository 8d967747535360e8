"""The embedded demo: two short clips animated from a real face photo, with known motion kept as ground truth.

This module writes the clips and their truth (layout ``demo_truth``); the steps live beside it. The photo is
``skimage.data.astronaut()`` (512x512, shipped with scikit-image). For each clip:

1. :func:`deep_puppets.demo_photo.prepare_photo` crops the head and shoulders (and, for the source, mirrors and
   tints the photo so the two clips look different; the crop is placed with a first FaceMesh run on the photo)
   and resizes it to ``size`` x ``size``. MediaPipe FaceMesh (static image, refined) on that frame gives the
   *neutral* 3D face: 478 landmarks, x, y in pixels, z relative depth in pixels (normalised z x frame width).
2. :func:`deep_puppets.demo_rig.build_rig` turns the neutral landmarks into a warp rig: the 852 triangles of
   the FaceMesh tessellation, the eye openings and the mouth opening filled with extra triangles, an outer ring
   of anchors around the head that moves rigidly with it (hair, neck) and fixed anchors on the image border
   (the background stays). It also builds three linear expression blendshapes
   (:data:`deep_puppets.demo_rig.EXPRESSIONS`): mouth opening (jaw, lower lip and chin move down), eye blink
   (upper lids close onto the lower lids) and brow raise.
3. :func:`deep_puppets.demo_motion.motion_script` draws smooth, seeded motion curves: head yaw/pitch/roll
   (degrees), 2D translation, scale and the three expression scalars in [0, 1].
4. Each frame poses the rig (:func:`deep_puppets.demo_warp.pose_vertices`: blendshapes, then a rotation about
   a pivot behind the face, scale, translation, orthographic projection) and warps the photo from the neutral
   mesh to the posed one (:func:`deep_puppets.demo_warp.warp_image`: a piecewise-affine warp through dense
   inverse maps and ``cv2.remap``; triangles are drawn far to near, so a turned nose hides the cheek behind it).

Ground truth per frame (layout ``demo_truth``): the 2D landmarks a perfect detector would return (the
posed mesh vertices projected; the 10 iris points, which are not warp vertices, where the warp puts their
pixels), the posed 3D landmarks, the rotation (matrix and yaw/pitch/roll), translation, scale and expression scalars. The
rotation is relative to the head pose in the photo; conventions are in :data:`ROTATION_CONVENTION` (the
matrix is :func:`deep_puppets.camera.yaw_pitch_roll_matrix`).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from . import h5io
from .camera import yaw_pitch_roll_matrix
from .demo_motion import KINDS, motion_script
from .demo_photo import LOOKS, detect_face_mesh, prepare_photo
from .demo_rig import EXPRESSIONS, build_rig
from .demo_warp import landmarks_2d, pose_vertices, render_frame
from .h5io import Dataset, Layout
from .models.base import N_LANDMARKS
from .mp4_writer import write_mp4

log = logging.getLogger(__name__)

DEFAULTS = {"n_frames": 96, "size": 256, "fps": 25.0, "seed": 0}
ROTATION_CONVENTION = (
    "camera axes x right, y down, z away from the camera (pixels); R = Rz(roll) @ Ry(yaw) @ Rx(pitch), "
    "applied about `pivot`: posed = scale * R @ (p - pivot) + pivot + (tx, ty, 0); "
    "landmarks2d = posed x, y (orthographic). Positive yaw turns the nose towards image left, positive pitch "
    "tilts the face down, positive roll turns it clockwise on screen. Angles are relative to the head pose in "
    "the photo."
)


DEMO_TRUTH = Layout(
    name="demo_truth",
    version=1,
    doc=(
        "Ground truth of a demo clip: the astronaut photo (skimage.data.astronaut) warped with known head "
        "motion and expressions (deep_puppets/demo.py). Landmark rows follow MediaPipe FaceMesh (478 "
        "points); `landmarks2d` is what a perfect detector returns. " + ROTATION_CONVENTION
    ),
    datasets={
        "landmarks2d": Dataset("float32", ("T", 478, 2), "x, y in pixels of the output frame"),
        "landmarks3d": Dataset("float32", ("T", 478, 3), "posed 3D landmarks (pixels; z away from the camera)"),
        "rotation": Dataset("float64", ("T", 3, 3), "head rotation relative to the photo's pose"),
        "yaw_pitch_roll_deg": Dataset("float64", ("T", 3), "the same rotation as yaw, pitch, roll in degrees"),
        "translation": Dataset("float64", ("T", 2), "head translation in pixels (x, y)"),
        "scale": Dataset("float64", ("T",), "head scale (1 = the photo's)"),
        "expression": Dataset("float64", ("T", "E"), "expression scalars in [0, 1], names in attr `expressions`"),
        "neutral_landmarks3d": Dataset("float64", (478, 3), "MediaPipe landmarks of the neutral (unwarped) frame"),
        "expression_basis": Dataset(
            "float64", ("E", 478, 3), "landmark displacement per unit expression (pixels, neutral pose)"
        ),
        "pivot": Dataset("float64", (3,), "centre of the head rotation and scale (pixels)"),
    },
    attrs={
        "kind": "source or target",
        "fps": "frames per second",
        "width": "frame width in pixels",
        "height": "frame height in pixels",
        "n_frames": "frames in the clip",
        "seed": "seed of the motion curves",
        "expressions": "JSON list of the expression names (columns of `expression`)",
        "photo": "where the face comes from",
    },
)


def render_clip(kind: str, n_frames: int = DEFAULTS["n_frames"], size: int = DEFAULTS["size"],
                fps: float = DEFAULTS["fps"], seed: int = DEFAULTS["seed"]) -> tuple[np.ndarray, dict, dict]:
    """Frames (T, size, size, 3) uint8, truth arrays and attrs of demo clip ``kind`` (no files written)."""
    if kind not in KINDS:
        raise ValueError(f"demo clip kind must be one of {KINDS}, not {kind!r}")
    photo = prepare_photo(kind, size)
    neutral = detect_face_mesh(photo)
    rig = build_rig(neutral, size)
    motion = motion_script(kind, n_frames, fps, size, seed)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    rotations = np.empty((n_frames, 3, 3))
    lm2d = np.empty((n_frames, N_LANDMARKS, 2))
    lm3d = np.empty((n_frames, N_LANDMARKS, 3))
    for i in range(n_frames):
        rotations[i] = yaw_pitch_roll_matrix(*motion["yaw_pitch_roll_deg"][i])
        posed = pose_vertices(rig, motion["expression"][i], rotations[i], motion["scale"][i], motion["translation"][i])
        frames[i] = render_frame(rig, photo, posed)
        lm2d[i] = landmarks_2d(rig, posed)
        lm3d[i] = posed[:N_LANDMARKS]
    truth = {
        "landmarks2d": lm2d,
        "landmarks3d": lm3d,
        "rotation": rotations,
        **motion,
        "neutral_landmarks3d": neutral,
        "expression_basis": rig.basis[:, :N_LANDMARKS],
        "pivot": rig.pivot,
    }
    attrs = {
        "kind": kind, "fps": float(fps), "width": size, "height": size, "n_frames": n_frames, "seed": int(seed),
        "expressions": json.dumps(list(EXPRESSIONS)),
        "photo": "skimage.data.astronaut()" + (" mirrored and tinted" if LOOKS[kind].mirror else ""),
    }
    return frames, truth, attrs


def make_demo_clip(kind: str, out_video, out_truth, n_frames: int = DEFAULTS["n_frames"], size: int = DEFAULTS["size"],
                   fps: float = DEFAULTS["fps"], seed: int = DEFAULTS["seed"]) -> dict:
    """Write demo clip ``kind`` ('source' or 'target') as an H.264 mp4 and its ground truth (layout
    ``demo_truth``); returns a summary."""
    started = time.perf_counter()
    frames, truth, attrs = render_clip(kind, n_frames=n_frames, size=size, fps=fps, seed=seed)
    write_mp4(out_video, frames, fps)
    h5io.write(out_truth, DEMO_TRUTH, truth, attrs)
    ypr = truth["yaw_pitch_roll_deg"]
    summary = {
        "kind": kind, "video": str(out_video), "truth": str(out_truth), "n_frames": n_frames, "size": size,
        "fps": float(fps), "seed": int(seed), "seconds": round(time.perf_counter() - started, 2),
        "max_abs_yaw_pitch_roll_deg": np.abs(ypr).max(0).round(2).tolist(),
        "max_expression": dict(zip(EXPRESSIONS, truth["expression"].max(0).round(3).tolist())),
    }
    log.info("demo clip %s: %s", kind, summary)
    return summary



if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write one demo clip and its ground truth.")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("video")
    ap.add_argument("truth")
    for key, value in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    a = ap.parse_args()
    print(json.dumps(make_demo_clip(a.kind, a.video, a.truth, a.n_frames, a.size, a.fps, a.seed), indent=1))
