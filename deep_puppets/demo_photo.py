"""The demo photo: the astronaut picture as each demo clip shows it, and FaceMesh on one image.

:func:`prepare_photo` crops the head and shoulders (and, for the source, mirrors and tints the photo so the two
clips look different; the crop is placed with a first FaceMesh run on the photo) and resizes it to ``size`` x
``size``; :func:`detect_face_mesh` (MediaPipe FaceMesh, static image, refined) on that frame gives the *neutral*
3D face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .demo_rig import FACE_OVAL_LOOP


@dataclass(frozen=True)
class Look:
    """How one clip presents the photo: mirroring, RGB gains, crop side (in face heights), crop centre offset
    below the face centre (in crop sides)."""

    mirror: bool
    gains: tuple[float, float, float]
    crop_side: float
    crop_drop: float


LOOKS = {
    "target": Look(mirror=False, gains=(1.0, 1.0, 1.0), crop_side=2.2, crop_drop=0.12),
    "source": Look(mirror=True, gains=(1.07, 0.97, 0.86), crop_side=1.95, crop_drop=0.10),
}


def detect_face_mesh(image: np.ndarray) -> np.ndarray:
    """MediaPipe FaceMesh (static image, refined: 478 points) on one RGB uint8 image.

    Returns float64 ``(478, 3)``: x, y in pixels, z relative depth in pixels (scaled like x). Raises
    ``RuntimeError`` when no face is found.
    """
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(np.ascontiguousarray(image))
    if not res.multi_face_landmarks:
        raise RuntimeError("MediaPipe FaceMesh found no face in the demo photo")
    pts = res.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], dtype=np.float64)


def crop_box(landmarks: np.ndarray, image_size: tuple[int, int], side_factor: float,
             drop: float) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) around a face: side = side_factor x face-oval height, centred on the oval
    centre moved down by ``drop`` x side, shifted (and if needed shrunk) to stay inside the image."""
    oval = landmarks[list(FACE_OVAL_LOOP), :2]
    lo, hi = oval.min(0), oval.max(0)
    h, w = image_size
    side = int(round(min(side_factor * (hi[1] - lo[1]), h, w)))
    cx, cy = (lo + hi) / 2 + (0.0, drop * side)
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, side


def prepare_photo(kind: str, size: int) -> np.ndarray:
    """The astronaut photo as clip ``kind`` shows it: (mirrored, tinted,) cropped to the head and shoulders
    and resized to ``size`` x ``size`` RGB uint8."""
    import cv2
    from skimage import data

    look = LOOKS[kind]
    photo = data.astronaut()
    if look.mirror:
        photo = photo[:, ::-1]
    photo = np.clip(photo.astype(np.float32) * np.float32(look.gains), 0, 255).astype(np.uint8)
    x0, y0, side = crop_box(detect_face_mesh(photo), photo.shape[:2], look.crop_side, look.crop_drop)
    crop = np.ascontiguousarray(photo[y0 : y0 + side, x0 : x0 + side])
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)
