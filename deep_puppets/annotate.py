"""Text burned into video frames: a label on a dark strip at the top of a panel (side-by-side videos, the
tracking overlay's frame number), sized to stay readable at the frame's size."""

from __future__ import annotations

import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
MIN_STRIP, MAX_STRIP = 18, 44  # pixels: the smallest strip (text about 11 px high) and the largest


def strip_height(height: int) -> int:
    """Height in pixels of the label strip of a panel ``height`` pixels high (a tenth, from 18 to 44)."""
    return min(MAX_STRIP, max(MIN_STRIP, int(round(height / 10))))


def label(img: np.ndarray, text: str, colour=(255, 255, 255)) -> np.ndarray:
    """A copy of ``img`` (H, W, 3 uint8) with ``text`` in white on a dark strip across its top, the font as large
    as the strip allows and shrunk to fit the width."""
    import cv2

    img = np.ascontiguousarray(np.array(img, copy=True))
    h = min(strip_height(img.shape[0]), img.shape[0])
    img[:h] = (img[:h].astype(np.float32) * 0.25).astype(img.dtype)
    thickness = 1 if h < 28 else 2
    scale = cv2.getFontScaleFromHeight(FONT, max(1, int(h * 0.6)), thickness)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    room = int(img.shape[1] * 0.92) - 4  # a gap before the next panel's label
    if tw > room:
        scale *= room / tw
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    y = min((h + th - base) // 2, h - 1 - base)  # the text and its descenders inside the strip
    cv2.putText(img, text, (4, y), FONT, scale, colour, thickness, cv2.LINE_AA)
    return img


def label_panels(panels, texts) -> list[np.ndarray]:
    """Each panel labelled with its text (``None`` leaves a panel as it is)."""
    return [p if t is None else label(p, t) for p, t in zip(panels, texts)]
