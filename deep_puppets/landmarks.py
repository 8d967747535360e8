"""Dense face landmarks (MediaPipe FaceMesh, 478 points with irises) for every frame of a video segment.

How a frame is processed
------------------------
The legacy FaceMesh solution only finds faces that fill a good part of the image (it looks for them with
the short-range detector), so finding and tracking the face is done here, and the mesh model runs on a
square region of interest (ROI) around the face:

1. **Tracking (the common case, one mesh inference per frame).** The ROI of frame *t* is derived from the
   landmarks of frame *t-1* exactly as MediaPipe's own tracker does it: the landmarks' bounding box,
   enlarged ``crop_scale`` times, made square, and rotated so that the eyes are level (``rotate``).
2. **Detection (only when tracking is lost, or every ``redetect_interval`` frames).** The full-range face
   detector (``mp.solutions.face_detection``, ``model_selection=1``) runs on the whole frame; when it
   finds nothing, the short-range one (close-ups that fill the frame, which the full-range model misses),
   then the full-range one on a pyramid of overlapping square tiles (:func:`face_roi.detector_tiles`), which finds
   faces down to about 10 % of the frame's short side (:class:`FaceDetector`). The chosen detection gives an ROI; the mesh runs on it,
   and once more on the ROI of its own landmarks so that a detected frame is meshed like a tracked one.
3. The mesh's face *presence* score decides: ``score >= min_tracking_confidence`` makes the frame valid;
   otherwise the detector is tried (up to :data:`MAX_CANDIDATES` detections); if nothing passes, the
   frame is kept with ``valid = False``, NaN landmarks and box, ``score = 0`` and the next frame detects.

The mesh model is MediaPipe's own ``face_landmark_with_attention.tflite`` run through the nodes of the
shipped FaceMesh graph (``face_landmark_front_cpu``) that follow its face-finding part: the graph is the
FaceMesh graph with the ROI given as an input instead of coming from its short-range detector, and with
the presence score exposed (the stock solution hides it). MediaPipe crops and resamples the ROI straight
from the full-resolution frame to the model's 192x192 input, so there is no intermediate crop image.
The graph is stateless (each frame is independent given its ROI), so results are deterministic and do
not depend on MediaPipe's internal tracking (``static_image_mode``) at all.

Single-person assumption
------------------------
The workflow reenacts one person per video. Exactly one face is followed: the tracked one while tracking
holds; on (re-)detection the detection overlapping (then nearest to) the last valid box, and when no face
has been seen yet in the segment, the largest detection (then the most confident). Other faces are
ignored, even larger or more confident ones appearing later.

Coordinates
-----------
Landmarks are in pixels of the full frame: x to the right, y down, z (relative depth, smaller = closer to
the camera) scaled like x, i.e. ``z_pixels = z_normalized * roi_side``. ``box`` is the ROI square
``x0, y0, x1, y1`` before its rotation (the mesh ran on this square turned by the eyes' roll angle about
its centre; with ``rotate=False`` exactly on this square).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import h5io
from .errors import ConfigError, InputError
from .face_roi import (
    Detection,
    Roi,
    detector_tiles,
    iou,
    rank_detections,
    roi_from_landmarks,
    suppress_duplicates,
)
from .models.base import N_LANDMARKS
from .progress import ProgressLog

log = logging.getLogger(__name__)

MAX_CANDIDATES = 3  # detections tried (in order of preference) before a frame is declared face-less
XNNPACK_THREADS = 1  # threads per mesh inference: 2 threads measured slower (100 vs 158 frames/s, 2 cores)


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LandmarkSettings:
    """Settings of the landmark stage (config section ``landmarks``)."""

    min_detection_confidence: float = 0.5  # face detector score needed to (re)start tracking
    min_tracking_confidence: float = 0.5  # mesh presence score needed for a valid frame / to keep tracking
    crop_scale: float = 1.5  # ROI side as a multiple of the face box side (MediaPipe's own value is 1.5)
    rotate: bool = True  # level the ROI on the eyes (MediaPipe's behaviour); False: axis-aligned ROI
    redetect_interval: int = 0  # also re-run the detector every N frames while tracking (0 = never)
    detector_levels: int = 3  # detector pyramid: 1 = whole frame only, 2 = + short-side tiles, 3 = + half

    def __post_init__(self):
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"landmarks.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 1.0 <= self.crop_scale <= 4.0:
            raise ConfigError(f"landmarks.crop_scale must be in [1, 4], got {self.crop_scale}")
        if self.redetect_interval < 0:
            raise ConfigError(f"landmarks.redetect_interval must be >= 0, got {self.redetect_interval}")
        if not 1 <= self.detector_levels <= 5:
            raise ConfigError(f"landmarks.detector_levels must be in [1, 5], got {self.detector_levels}")

    # keys of the config section that belong to other steps and are not settings here
    OTHER_KEYS = ("min_valid_fraction",)

    @classmethod
    def from_config(cls, section: dict | None) -> "LandmarkSettings":
        """Settings from the config's ``landmarks`` section; missing keys take the defaults.

        ``min_valid_fraction`` (used by the summary) is ignored. Any other unknown key is a
        :class:`ConfigError`.
        """
        section = dict(section or {})
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(section) - set(known) - set(cls.OTHER_KEYS))
        if unknown:
            raise ConfigError(f"landmarks: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(
            **{name: _coerce(name, section[name], type(getattr(cls, name))) for name in known if name in section}
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(name: str, value, kind: type):
    """``value`` as ``kind`` (bool, int or float) without silent truncation; ConfigError otherwise."""
    ok = (
        isinstance(value, bool)
        if kind is bool
        else not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (kind is float or float(value).is_integer())
    )
    if not ok:
        raise ConfigError(f"landmarks.{name}: {value!r} is not a {kind.__name__}")
    return kind(value)


# ----------------------------------------------------------------------------- MediaPipe (model calls)


def _mediapipe_root() -> str:
    import mediapipe

    return os.path.dirname(os.path.dirname(os.path.abspath(mediapipe.__file__)))


_FACE_MESH_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_SCORE_STREAM = "facelandmarkcpu__face_presence_score"


def mesh_on_roi_graph(min_presence: float, num_threads: int):
    """The FaceMesh graph cut to its landmark part: inputs ``image`` and ``roi``, outputs landmarks + score.

    Built from the shipped ``face_landmark_front_cpu`` graph (expanded): its ``facelandmarkcpu__*`` nodes
    (model loading, ROI crop to 192x192, inference, presence score, landmark decoding with the attention
    refinement, projection back to the full image) with the ROI fed in instead of coming from the
    short-range detector.
    """
    from mediapipe.calculators.tensor import inference_calculator_pb2
    from mediapipe.calculators.util import thresholding_calculator_pb2
    from mediapipe.framework import calculator_pb2
    from mediapipe.python._framework_bindings import validated_graph_config

    validated = validated_graph_config.ValidatedGraphConfig()
    validated.initialize(binary_graph_path=os.path.join(_mediapipe_root(), _FACE_MESH_GRAPH))
    front = calculator_pb2.CalculatorGraphConfig()
    front.ParseFromString(validated.binary_config)

    rename = {"landmarks_loop_image": "image", "face_rect": "roi"}

    def renamed(stream: str) -> str:
        tag, sep, name = stream.rpartition(":")
        return tag + sep + rename.get(name, name)

    graph = calculator_pb2.CalculatorGraphConfig()
    graph.input_stream.extend(["image", "roi"])
    graph.output_stream.extend(["face_landmarks", _SCORE_STREAM])
    graph.input_side_packet.append("with_attention")
    for node in front.node:
        if not node.name.startswith("facelandmarkcpu__"):
            continue
        new = graph.node.add()
        new.CopyFrom(node)
        new.input_stream[:] = [renamed(s) for s in node.input_stream]
        if node.calculator == "InferenceCalculatorCpu":
            opts = new.options.Extensions[inference_calculator_pb2.InferenceCalculatorOptions.ext]
            opts.delegate.xnnpack.num_threads = num_threads
        elif node.calculator == "ThresholdingCalculator":
            new.options.Extensions[thresholding_calculator_pb2.ThresholdingCalculatorOptions.ext].threshold = (
                min_presence
            )
    outputs = {s.rpartition(":")[2] for n in graph.node for s in n.output_stream}
    missing = {"face_landmarks", _SCORE_STREAM} - outputs
    if missing:  # a MediaPipe whose FaceMesh graph differs from 0.10.21's
        raise RuntimeError(f"MediaPipe FaceMesh graph lacks streams {sorted(missing)}")
    return graph


class MeshOnRoi:
    """FaceMesh (478 landmarks) on a given ROI of a frame; returns pixel landmarks and presence score."""

    def __init__(self, min_presence: float, num_threads: int = XNNPACK_THREADS):
        from mediapipe.python.solution_base import SolutionBase

        self._solution = SolutionBase(
            graph_config=mesh_on_roi_graph(min_presence, num_threads), side_inputs={"with_attention": True}
        )

    def __call__(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray | None, float]:
        from mediapipe.framework.formats import rect_pb2

        h, w = frame.shape[:2]
        rect = rect_pb2.NormalizedRect(
            x_center=roi.cx / w, y_center=roi.cy / h, width=roi.side / w, height=roi.side / h, rotation=roi.angle
        )
        out = self._solution.process({"image": frame, "roi": rect})
        score = float(getattr(out, _SCORE_STREAM) or 0.0)
        if out.face_landmarks is None:
            return None, score
        lm = np.array([(p.x, p.y, p.z) for p in out.face_landmarks.landmark], np.float32)
        if lm.shape != (N_LANDMARKS, 3):
            raise RuntimeError(f"FaceMesh returned {lm.shape[0]} landmarks, expected {N_LANDMARKS}")
        lm *= np.array([w, h, w], np.float32)  # z is normalized like x
        return lm, score

    def close(self) -> None:
        self._solution.close()


class FaceDetector:
    """MediaPipe's face detectors run coarse to fine until one finds a face.

    1. the full-range detector on the whole frame (faces from about a quarter of the frame up);
    2. the short-range detector on the whole frame (close-ups filling the frame, which the full-range
       model misses);
    3. the full-range detector on the finer levels of the :func:`face_roi.detector_tiles` pyramid (small faces).
    """

    def __init__(self, min_confidence: float, levels: int):
        import mediapipe as mp

        self._levels = levels
        make = mp.solutions.face_detection.FaceDetection
        self._full_range = make(model_selection=1, min_detection_confidence=min_confidence)
        self._short_range = make(model_selection=0, min_detection_confidence=min_confidence)

    @staticmethod
    def _run(model, frame: np.ndarray, window) -> list[Detection]:
        x0, y0, x1, y1 = window
        tw, th = x1 - x0, y1 - y0
        tile = frame if (tw, th) == frame.shape[1::-1] else np.ascontiguousarray(frame[y0:y1, x0:x1])
        found = []
        for d in model.process(tile).detections or []:
            b = d.location_data.relative_bounding_box
            kp = d.location_data.relative_keypoints
            px = lambda u, v: (x0 + u * tw, y0 + v * th)  # noqa: E731
            box = (*px(b.xmin, b.ymin), *px(b.xmin + b.width, b.ymin + b.height))
            found.append(Detection(box, float(d.score[0]), px(kp[0].x, kp[0].y), px(kp[1].x, kp[1].y)))
        return found

    def _passes(self, width: int, height: int):
        whole, *finer = detector_tiles(width, height, self._levels)
        yield self._full_range, whole
        yield self._short_range, whole
        for windows in finer:
            yield self._full_range, windows

    def __call__(self, frame: np.ndarray, near=None) -> list[Detection]:
        """Faces found by the first pass that finds any (duplicates from overlapping tiles merged).

        With ``near`` (an ``x0, y0, x1, y1`` box where the followed face was), the search goes on to finer
        passes until a face overlapping it is found, so that a small followed face is not given up for a
        larger one that a coarser pass sees; when none overlaps, the first pass's faces are returned.
        """
        h, w = frame.shape[:2]
        first: list[Detection] = []
        for model, windows in self._passes(w, h):
            dets = suppress_duplicates([d for win in windows for d in self._run(model, frame, win)])
            if dets and (near is None or any(iou(d.box, near) > 0 for d in dets)):
                return dets
            first = first or dets
        return first

    def close(self) -> None:
        self._full_range.close()
        self._short_range.close()


# ------------------------------------------------------------------------------------------- tracking


@dataclass
class FrameResult:
    """One frame's outcome: landmarks (None when no face), presence score, and the ROI the mesh ran on."""

    landmarks: np.ndarray | None  # (478, 3) pixels, None when no face
    score: float
    roi: Roi | None

    @property
    def valid(self) -> bool:
        return self.landmarks is not None


class FaceTracker:
    """Follows one face through consecutive frames (see the module docstring). Use as a context manager."""

    def __init__(self, settings: LandmarkSettings = LandmarkSettings()):
        self.settings = settings
        self._mesh = self._detector = None
        try:
            self._mesh = MeshOnRoi(settings.min_tracking_confidence)
            self._detector = FaceDetector(settings.min_detection_confidence, settings.detector_levels)
        except BaseException:
            self.close()
            raise
        self._roi: Roi | None = None  # ROI for the next frame (from the last valid landmarks)
        self._last_box = None  # where the followed face last was
        self._frame = 0
        self.n_detector_runs = 0

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for obj in (self._mesh, self._detector):
            if obj is not None:
                obj.close()
        self._mesh = self._detector = None

    def _mesh_on(self, frame, roi: Roi) -> FrameResult:
        lm, score = self._mesh(frame, roi)
        if lm is None or score < self.settings.min_tracking_confidence:
            return FrameResult(None, score, roi)
        return FrameResult(lm, score, roi)

    def _refine(self, frame, res: FrameResult) -> FrameResult:
        """Mesh again on the ROI of a detection-started mesh's own landmarks (as tracking would)."""
        s = self.settings
        again = self._mesh_on(frame, roi_from_landmarks(res.landmarks, s.crop_scale, s.rotate))
        return again if again.valid else res

    def _detect(self, frame) -> FrameResult:
        self.n_detector_runs += 1
        s = self.settings
        dets = self._detector(frame, near=self._last_box)
        usable = [d for d in dets if d.area >= 16]  # a degenerate box cannot be meshed
        for det in rank_detections(usable, self._last_box)[:MAX_CANDIDATES]:
            res = self._mesh_on(frame, det.roi(s.crop_scale, s.rotate))
            if res.valid:
                return self._refine(frame, res)
        return FrameResult(None, 0.0, None)

    def __call__(self, frame: np.ndarray) -> FrameResult:
        s = self.settings
        scheduled = s.redetect_interval > 0 and self._frame % s.redetect_interval == 0
        self._frame += 1
        res = FrameResult(None, 0.0, None)
        if self._roi is not None and not scheduled:
            res = self._mesh_on(frame, self._roi)
        if not res.valid:
            res = self._detect(frame)
        if not res.valid and scheduled and self._roi is not None:  # a scheduled re-detection found nothing
            res = self._mesh_on(frame, self._roi)
        if res.valid:
            self._roi = roi_from_landmarks(res.landmarks, s.crop_scale, s.rotate)
            self._last_box = res.roi.box
        else:
            self._roi = None
        return res


def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
        got = getattr(frame, "shape", type(frame).__name__), getattr(frame, "dtype", "")
        raise ValueError(f"frame {index}: expected an RGB uint8 array (H, W, 3), got {got}")
    return np.ascontiguousarray(frame)


def detect_frames(
    frames: Iterable[np.ndarray],
    settings: LandmarkSettings = LandmarkSettings(),
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Landmarks of a sequence of RGB uint8 frames (one face followed through them).

    Returns ``landmarks`` (T, 478, 3) float32 pixels, ``valid`` (T,) bool, ``score`` (T,) float32 presence
    score in [0, 1], ``box`` (T, 4) float32 ROI ``x0, y0, x1, y1``. Every frame gets a row; a frame without
    a face has ``valid = False``, NaN landmarks and box and ``score = 0``. ``progress(n_done)`` is called
    after every frame. Deterministic: the same frames and settings give the same output.
    """
    rows: list[FrameResult] = []
    with FaceTracker(settings) as tracker:
        for i, frame in enumerate(frames):
            rows.append(tracker(_check_frame(frame, i)))
            if progress is not None:
                progress(i + 1)
        log.debug("%d frames, %d detector runs", len(rows), tracker.n_detector_runs)
    return _stack(rows)


def _stack(rows: list[FrameResult]) -> dict:
    t = len(rows)
    out = {
        "landmarks": np.full((t, N_LANDMARKS, 3), np.nan, np.float32),
        "valid": np.zeros(t, bool),
        "score": np.zeros(t, np.float32),
        "box": np.full((t, 4), np.nan, np.float32),
    }
    for i, r in enumerate(rows):
        if r.valid:
            out["landmarks"][i] = r.landmarks
            out["valid"][i] = True
            out["score"][i] = r.score
            out["box"][i] = r.roi.box
    return out


# ----------------------------------------------------------------------------------------- the stage


def detector_description(settings: LandmarkSettings) -> str:
    """JSON stored in the ``detector`` attribute: the settings and the MediaPipe version."""
    import mediapipe

    return json.dumps({**settings.to_dict(), "mediapipe": mediapipe.__version__}, sort_keys=True, allow_nan=False)


def run_segment(
    video_name: str, video_path, info, segment, out_path, settings: LandmarkSettings = LandmarkSettings()
) -> dict:
    """Landmarks of the frames ``[segment.start, segment.stop)`` of a video, written to ``out_path`` (h5).

    ``info`` is the video's :class:`~deep_puppets.video.VideoInfo`. Returns a summary dict (frames, valid
    fraction, seconds, fps).
    """
    from .video import iter_frames

    n = segment.stop - segment.start
    label = f"{video_name} segment {segment.index} [{segment.start}, {segment.stop})"
    t0 = time.perf_counter()
    frames: Iterator[np.ndarray] = iter_frames(video_path, segment.start, segment.stop, info)
    arrays = detect_frames(frames, settings, progress=ProgressLog(label, n, logger=log))
    seconds = time.perf_counter() - t0
    got = len(arrays["valid"])
    if got != n:
        raise InputError(
            video_path, f"decoded {got} frames for segment [{segment.start}, {segment.stop}), expected {n}"
        )
    arrays["frame_index"] = np.arange(segment.start, segment.stop, dtype=np.int64)
    attrs = {
        "video": video_name,
        "video_path": str(video_path),
        "fps": float(info.fps),
        "width": int(info.width),
        "height": int(info.height),
        "n_frames": int(info.n_frames),
        "segment": int(segment.index),
        "start": int(segment.start),
        "stop": int(segment.stop),
        "core_start": int(segment.core_start),
        "core_stop": int(segment.core_stop),
        "detector": detector_description(settings),
    }
    h5io.write(out_path, h5io.LANDMARKS, arrays, attrs)
    summary = {
        "video": video_name,
        "segment": int(segment.index),
        "frames": n,
        "valid_fraction": float(arrays["valid"].mean()) if n else 0.0,
        "seconds": seconds,
        "fps": n / seconds if seconds > 0 else 0.0,
    }
    log.info(
        "%s: %d frames, %.1f%% valid, %.1f s (%.1f frames/s) -> %s",
        label,
        n,
        100 * summary["valid_fraction"],
        seconds,
        summary["fps"],
        out_path,
    )
    return summary
