"""Optical flow of the real target frames (OpenCV DIS), computed once per target and cached in HDF5.

Convention (backward flow): ``flow[t]`` maps frame ``t`` back to frame ``t-1``:
``frame[t](p) ≈ frame[t-1](p + flow[t](p))`` with ``p = (x, y)`` in pixels and ``flow[..., 0]`` the x
component. So :func:`deep_puppets.gan.losses.warp` of frame ``t-1`` with ``flow[t]`` predicts frame ``t``.
``flow[0]`` is zero. The flow is computed on the frames as training sees them — cropped by the conditioning's
crop boxes (when the conditioning images are crops, see :func:`~.data.crop_resize`) and resized to the training
size — and the file also keeps those frames (the training targets) and the boxes, so training never decodes
the video again and can check that the file matches the conditioning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import h5io
from ..errors import InputError
from ..h5io import Dataset, Layout
from ..video import iter_frames, probe_video
from .data import crop_resize, fill_boxes, resize

FLOW = Layout(
    name="flow",
    version=1,
    doc=(
        "Optical flow of the real frames of one target video and those frames as the GAN trains on them: "
        "cropped by the conditioning's crop boxes and resized to the training size (OpenCV DIS on grey "
        "frames). Backward flow: frame[t](p) ≈ frame[t-1](p + flow[t](p)), p = (x, y) in pixels of the "
        "training size; flow[0] = 0. Written and read by deep_puppets/gan/flow.py."
    ),
    datasets={
        "flow": Dataset("float16", ("T", "H", "W", 2), "backward flow (dx, dy) in pixels from frame t to frame t-1",
                        chunk_per="T", compress=True),
        "frames": Dataset("uint8", ("T", "H", "W", 3), "real RGB frames cropped by `box` and resized to the training size",
                          chunk_per="T", compress=True),
        "box": Dataset("float32", ("T", 4),
                       "crop box x0, y0, x1, y1 in frame pixels (the whole frame when the conditioning is not cropped)"),
    },
    attrs={
        "video_path": "path of the target video",
        "height": "training height in pixels (H)",
        "width": "training width in pixels (W)",
        "preset": "DIS preset (ultrafast, fast, medium)",
    },
)

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2  # here, not at the top: the package imports this module (its HDF5 layout) and stays light

    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def dis(preset: str = "medium"):
    import cv2  # as in _grey

    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; known: {sorted(DIS_PRESETS)}")
    return cv2.DISOpticalFlow_create(DIS_PRESETS[preset])


def backward_flow(current: np.ndarray, previous: np.ndarray, preset: str = "medium", engine=None) -> np.ndarray:
    """Flow ``(H, W, 2)`` float32 with ``current(p) ≈ previous(p + flow(p))`` (RGB uint8 inputs)."""
    engine = engine or dis(preset)
    return engine.calc(_grey(current), _grey(previous), None)


def compute_flow(frames: Iterable[np.ndarray], size: tuple[int, int], preset: str = "medium",
                 boxes=None) -> tuple[np.ndarray, np.ndarray]:
    """Crop (by ``boxes`` (T, 4), or not) and resize RGB frames to ``size = (H, W)``; compute the backward flow
    of each frame to its predecessor.

    Returns ``(flow (T, H, W, 2) float32, frames (T, H, W, 3) uint8)``.
    """
    engine = dis(preset)
    boxes = None if boxes is None else fill_boxes(boxes)
    flows, resized = [], []
    for t, frame in enumerate(frames):
        frame = np.asarray(frame, dtype=np.uint8)
        img = resize(frame, size) if boxes is None else crop_resize(frame, boxes[t], size)
        flows.append(np.zeros(size + (2,), np.float32) if not resized else backward_flow(img, resized[-1], engine=engine))
        resized.append(img)
    if not resized:
        raise ValueError("no frames")
    if boxes is not None and len(boxes) != len(resized):
        raise ValueError(f"{len(boxes)} crop boxes for {len(resized)} frames")
    return np.stack(flows), np.stack(resized)


def write_flow_file(video_path, out_path, size: tuple[int, int] | int, preset: str = "medium", boxes=None) -> Path:
    """Decode ``video_path``, compute its flow at ``size`` and write a ``flow`` file (atomic).

    ``boxes``: the conditioning file's ``box`` dataset when the conditioning images are crops (frames without a
    box take the nearest frame's); None: the whole frame.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if boxes is None:
        info = probe_video(video_path)
        boxes = np.tile([0.0, 0.0, info.width, info.height], (info.n_frames, 1))
    boxes = fill_boxes(boxes)
    # The frames the boxes cover (as many as the probe counted): a truncated video accepted with
    # input.on_truncated: warn is never read into its decoder error.
    flow, frames = compute_flow(iter_frames(video_path, 0, len(boxes)), size, preset, boxes)
    return h5io.write(
        out_path,
        FLOW,
        {"flow": flow, "frames": frames, "box": boxes},
        {"video_path": str(video_path), "height": size[0], "width": size[1], "preset": preset},
    )


def open_flow_file(path, size: tuple[int, int] | None = None, boxes=None):
    """Open a ``flow`` file for lazy reading: returns ``(h5py.File, flow dataset, frames dataset)``.

    The layout is checked first (:func:`deep_puppets.h5io.read` without loading); with ``size`` the file must
    have been computed at that training size, with ``boxes`` (the conditioning's crop boxes) for those boxes
    (within half a pixel; frames without a box compared with the nearest frame's). The caller closes the file.
    """
    _, attrs = h5io.read(path, FLOW, load=False)
    if size is not None and (int(attrs["height"]), int(attrs["width"])) != tuple(size):
        raise InputError(path, f"flow computed at {attrs['height']}x{attrs['width']}, "
                               f"training size is {size[0]}x{size[1]}: recompute it")
    f = h5io.open_file(path)  # a corrupted chunk read later names the file and the dataset
    try:
        got = f["box"][()]
        problem = h5io.nonfinite("box", got)
        if problem:
            raise h5io.implausible(path, problem)
        if boxes is not None:
            want = fill_boxes(boxes)
            if got.shape != want.shape or not np.allclose(got, want, atol=0.5):
                raise InputError(path, "was computed for other crop boxes than the conditioning's: recompute it")
    except BaseException:
        f.close()
        raise
    return f, f["flow"], f["frames"]
