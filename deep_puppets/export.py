"""Fitted and transferred faces out of the project: glTF 2.0, OBJ/PLY sequences, parameter CSVs, ARKit CSV.

One :class:`FaceAnimation` per video (its track) or per pair (the target re-animated by the source, from
the transfer): the model, identity ``p``, and per frame the expression ``q`` and the camera
(:mod:`deep_puppets.camera`: image point ``(u, v, d) = s·F·R·X + t``).

*Frames.* The model frame has x toward the subject's left (image right when frontal), y up, z toward the
viewer: already glTF's frame (Y up, right-handed, the asset facing +Z), so vertices only change unit
(``metres_per_unit``: cm → 0.01; a person model's ``canonical_cm`` counts as cm). The head motion becomes a
node transform in a world whose unit is the head's size at its median scale ``s_ref`` (pixels per model unit)::

    world = rotation R · (s / s_ref) · V_m + translation,   translation = k · F · (t − t_ref) / s_ref

(``V_m = k·X`` the mesh in metres, ``k = metres_per_unit``, ``t_ref`` the median camera translation), so the
head at its median position and size sits at the origin, life size. Back to the fit's image coordinates:
``(u, v, d) = F · world · s_ref / k + t_ref`` (stored as ``scenes[0].extras.image_from_world``). ``tz`` is
the fit's depth offset (it aligns the detector's relative depth and plays no part in ``u, v``).

*Morph targets* (:class:`MorphTargets`): weights stay in [0, 1], as Blender's shape-key sliders clamp them; a
component whose coefficients leave [0, 1] (a person model's signed PCA coefficients, ICT's gaze angles) becomes
``name+`` / ``name-`` targets scaled by its largest |coefficient|; ``mesh.extras.targetComponents`` gives each
target's component and factor (coefficient = Σ factor · weight).

*Euler angles* (parameter CSV): ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` in the model frame (intrinsic z-y'-x'',
i.e. pitch about x first, then yaw about y, then roll about z, all in the fixed frame), degrees, the
decomposition of :func:`deep_puppets.camera.yaw_pitch_roll_matrix` / :func:`~deep_puppets.camera.yaw_pitch_roll`
(unique for |yaw| < 90°). With the model frame's axes: positive yaw turns the nose toward the subject's left
(image right), positive pitch turns it down, positive roll tilts the head toward the subject's right shoulder
(counter-clockwise on screen).

*ARKit CSV* (ICT model only): Live Link Face's column order, weights clipped to [0, 1]; ICT's 53 shapes map
one to one except ``browInnerUp_L/_R`` and ``cheekPuff_L/_R`` (averaged into ARKit's single ``BrowInnerUp``,
``CheekPuff``); ARKit's ``TongueOut`` has no ICT shape (0). Head yaw/pitch/roll in radians (the convention
above), eye yaw/pitch from the model's ``gazeYaw``/``gazePitch`` components (radians), eye roll 0.

Why one module: every format writes the same :class:`FaceAnimation` in the same world frame
and angle convention, which a split per format would scatter.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import (
    EULER_CONVENTION,
    FLIP,
    matrix_to_quaternion,
    project,
    rotation_log,
    rotation_matrix,
    yaw_pitch_roll,
    yaw_pitch_roll_matrix,
)
from .errors import InputError
from .files import atomic_path, json_text
from .models.base import MorphableModel

log = logging.getLogger(__name__)

MESH_FORMATS = ("none", "obj", "ply")
METRES_PER_UNIT = {"m": 1.0, "cm": 0.01, "canonical_cm": 0.01, "mm": 0.001}
POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg", "tx", "ty", "tz", "scale")


# ------------------------------------------------------------------------------------------- the input


@dataclass
class FaceAnimation:
    """A face over time: what every export writes."""

    name: str  # video name, or pair id
    model: MorphableModel
    p: np.ndarray  # (K_id,)
    q: np.ndarray  # (T, K_exp)
    camera: np.ndarray  # (T, 7)
    valid: np.ndarray  # (T,) bool
    fps: float
    width: int
    height: int

    @property
    def n_frames(self) -> int:
        return len(self.q)

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_frames) / self.fps

    def expression_names(self) -> list[str]:
        """The model's names for its expression components where it has them, else ``expr_00``, ``expr_01``, …"""
        names = [str(n) for n in self.model.exp_names]
        if (
            len(names) == self.model.n_exp
            and len(set(names)) == len(names)
            and not set(names) & {"frame", "time_s", "valid", *POSE_COLUMNS}
        ):
            return names
        return [f"expr_{j:02d}" for j in range(self.model.n_exp)]


def _checked(anim: FaceAnimation, path) -> FaceAnimation:
    m = anim.model
    if anim.p.shape != (m.n_id,) or anim.q.ndim != 2 or anim.q.shape[1] != m.n_exp:
        raise InputError(
            path, f"has {anim.p.shape[0]} identity and {anim.q.shape[-1]} expression coefficients, the model {m.name!r} has {m.n_id} and {m.n_exp}"
        )
    if not np.isfinite(anim.camera).all():
        raise InputError(path, "has frames without a camera (no face anywhere in the video): nothing to export")
    if not (np.isfinite(anim.fps) and anim.fps > 0):
        raise InputError(path, f"frame rate {anim.fps!r} is not a positive number")
    if anim.n_frames < 1:
        raise InputError(path, "has no frames")
    return anim


def video_animation(track_file, model: MorphableModel) -> FaceAnimation:
    """The face of a video: its track, fitted with ``model`` (checked by content hash)."""
    from .tracks import read_track

    fit, attrs = read_track(track_file)
    if attrs["model_hash"] != model.content_hash():
        raise InputError(
            track_file,
            f"was fitted with model {attrs['model']!r} ({str(attrs['model_hash'])[:12]}), not {model.name!r} ({model.content_hash()[:12]})",
        )
    anim = FaceAnimation(
        str(attrs["video"]), model, fit.p, fit.q, fit.camera, np.asarray(fit.valid, bool), float(attrs["fps"]), int(attrs["width"]), int(attrs["height"])
    )
    return _checked(anim, track_file)


def pair_animation(transfer_file, model: MorphableModel, name: str) -> FaceAnimation:
    """The target of a pair re-animated by its source (the transfer's output; ``model``: the target's)."""
    from .transfer_files import read_transfer

    result, attrs = read_transfer(transfer_file)
    if result.target_model_hash != model.content_hash():
        raise InputError(
            transfer_file,
            f"was transferred onto another model than {model.name!r} (content hash {result.target_model_hash[:12]}, not {model.content_hash()[:12]})",
        )
    anim = FaceAnimation(
        name, model, result.p, result.q, result.camera, np.asarray(result.valid, bool), float(attrs["fps"]), int(attrs["width"]), int(attrs["height"])
    )
    return _checked(anim, transfer_file)


# ------------------------------------------------------------------------------------------ geometry


def posed_vertices(model: MorphableModel, p, q, camera) -> np.ndarray:
    """Image positions (T, N, 3) = (u, v, d) of every vertex: what the renderer draws for a track."""
    return project(model.shape(p, q), camera)


def metres_per_unit(model: MorphableModel) -> float:
    """Metres per model unit (1 when the model's unit is unknown)."""
    return METRES_PER_UNIT.get(model.unit, 1.0)


@dataclass(frozen=True)
class WorldFrame:
    """How the head's node transform relates to the fit's image coordinates (module docstring)."""

    pixels_per_unit: float  # s_ref: median camera scale
    offset: np.ndarray  # t_ref (3,): median camera translation, pixels
    metres_per_unit: float  # k

    @classmethod
    def of(cls, anim: FaceAnimation) -> WorldFrame:
        use = anim.valid if anim.valid.any() else np.ones(anim.n_frames, bool)
        return cls(float(np.median(anim.camera[use, 6])), np.median(anim.camera[use, 3:6], axis=0), metres_per_unit(anim.model))

    def node_transforms(self, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(translation (T, 3) metres, rotation (T, 4) glTF (x, y, z, w), uniform scale (T,)) per frame."""
        q = matrix_to_quaternion(rotation_matrix(camera[:, :3]))  # (w, x, y, z), w ≥ 0
        sign = np.ones(len(q))  # consecutive quaternions in one hemisphere: LINEAR (slerp) then takes the short way
        sign[1:] = np.where(np.sum(q[1:] * q[:-1], axis=1) < 0, -1.0, 1.0)
        q = q * np.cumprod(sign)[:, None]
        translation = self.metres_per_unit * (camera[:, 3:6] - self.offset) @ FLIP.T / self.pixels_per_unit
        return translation, q[:, [1, 2, 3, 0]], camera[:, 6] / self.pixels_per_unit

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """World positions (metres) of image points (u, v, d) (..., 3)."""
        return (image - self.offset) @ FLIP.T * (self.metres_per_unit / self.pixels_per_unit)

    def to_json(self) -> dict:
        return {
            "formula": "(u, v, d) = F @ world * pixels_per_metre + offset_px, F = diag(1, -1, -1)",
            "pixels_per_metre": self.pixels_per_unit / self.metres_per_unit,
            "offset_px": [float(x) for x in self.offset],
        }


# -------------------------------------------------------------------------------------------- glTF 2.0

_FLOAT, _UINT16, _UINT32 = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}


@dataclass(frozen=True)
class MorphTargets:
    """The expression components as morph targets whose weights stay in [0, 1] (Blender clamps a shape key's
    value to its slider range, [0, 1] unless the importer widens it, which it does from the first keyframe only).

    A component whose coefficients stay in [0, 1] (ICT's blendshapes, mostly) is one target, the basis as is. Any
    other (signed PCA coefficients, gaze angles) is scaled by ``c = max |q_j|`` and split into ``name+`` (delta
    ``c·basis``, weight ``max(q/c, 0)``) and ``name-`` (delta ``−c·basis``, weight ``max(−q/c, 0)``), the sides the
    video uses. At every keyframe ``q_j = Σ factor · weight`` over the targets of component j, exactly.
    """

    component: tuple  # model expression component of each target
    factor: tuple  # the target's delta is factor · basis[component]
    names: list
    weights: np.ndarray  # (T, n_targets) in [0, 1]

    @classmethod
    def of(cls, anim: FaceAnimation) -> MorphTargets:
        comp, factor, names, weights = [], [], [], []
        for j, name in enumerate(anim.expression_names()):
            qj = anim.q[:, j]
            lo, hi = float(qj.min()), float(qj.max())
            if lo >= 0 and hi <= 1:
                comp.append(j), factor.append(1.0), names.append(name), weights.append(qj)
                continue
            c = max(abs(lo), abs(hi))
            for sign, suffix, used in ((1.0, "+", hi > 0), (-1.0, "-", lo < 0)):
                if used:
                    comp.append(j), factor.append(sign * c), names.append(name + suffix), weights.append(np.clip(sign * qj / c, 0.0, 1.0))
        w = np.stack(weights, axis=1) if weights else np.zeros((anim.n_frames, 0))
        return cls(tuple(comp), tuple(factor), names, w)

    def coefficients(self, weights: np.ndarray, n_exp: int) -> np.ndarray:
        """Expression coefficients (T, n_exp) of target weights (T, n_targets)."""
        q = np.zeros((len(weights), n_exp))
        np.add.at(q.T, np.array(self.component, int), (weights * np.array(self.factor)).T)
        return q

    def to_json(self, names) -> list:
        return [{"component": names[j], "index": int(j), "factor": float(f)} for j, f in zip(self.component, self.factor)]


class _GltfBuffer:
    """One binary buffer: every accessor in its own bufferView, each starting on a 4-byte boundary."""

    def __init__(self):
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, target: int | None = None, min_max: bool = False) -> int:
        a = np.ascontiguousarray(array)
        component = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _UINT16, np.dtype(np.uint32): _UINT32}[a.dtype]
        width = 1 if a.ndim == 1 else a.shape[1]
        self.data += b"\0" * (-len(self.data) % 4)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": a.nbytes}
        if target is not None:
            view["target"] = target
        self.views.append(view)
        self.data += a.tobytes()
        acc = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(a.shape[0]), "type": _TYPES[width]}
        if min_max:
            flat = a.reshape(len(a), width)
            acc["min"], acc["max"] = flat.min(0).tolist(), flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def gltf_document(anim: FaceAnimation) -> tuple[dict, bytes]:
    """(glTF JSON, binary buffer) of the face: identity mesh, expression morph targets, animation."""
    model, k = anim.model, metres_per_unit(anim.model)
    frame = WorldFrame.of(anim)
    buf = _GltfBuffer()
    identity = (model.shape(anim.p) * k).astype(np.float32)
    position = buf.add(identity, _ARRAY_BUFFER, min_max=True)
    tri = np.asarray(model.triangles).reshape(-1)
    indices = buf.add(tri.astype(np.uint16 if len(identity) < 65535 else np.uint32), _ELEMENT_ARRAY_BUFFER)
    split = MorphTargets.of(anim)
    targets = [{"POSITION": buf.add((model.exp_basis[j] * (f * k)).astype(np.float32), _ARRAY_BUFFER, min_max=True)}
               for j, f in zip(split.component, split.factor)]  # fmt: skip
    primitive = {"attributes": {"POSITION": position}, "indices": indices, "mode": 4}
    mesh = {"name": f"{anim.name} face", "primitives": [primitive]}
    if targets:
        primitive["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": split.names, "targetComponents": split.to_json(anim.expression_names())}

    times = buf.add(anim.times.astype(np.float32), min_max=True)
    translation, rotation, scale = frame.node_transforms(anim.camera)
    samplers = [
        {"input": times, "output": buf.add(translation.astype(np.float32)), "interpolation": "LINEAR"},
        {"input": times, "output": buf.add(rotation.astype(np.float32)), "interpolation": "LINEAR"},
        {"input": times, "output": buf.add(np.repeat(scale[:, None], 3, axis=1).astype(np.float32)), "interpolation": "LINEAR"},
    ]
    channels = [{"sampler": i, "target": {"node": 0, "path": path}} for i, path in enumerate(("translation", "rotation", "scale"))]
    if targets:
        samplers.append({"input": times, "output": buf.add(split.weights.reshape(-1).astype(np.float32)), "interpolation": "LINEAR"})
        channels.append({"sampler": 3, "target": {"node": 0, "path": "weights"}})

    doc = {
        "asset": {"version": "2.0", "generator": "deep_puppets.export"},
        "scene": 0,
        "scenes": [{"name": anim.name, "nodes": [0], "extras": {
            "model": model.name, "model_unit": model.unit, "metres_per_model_unit": k, "fps": anim.fps,
            "frame_size_px": [anim.width, anim.height], "image_from_world": frame.to_json(),
        }}],  # fmt: skip
        "nodes": [{"name": "head", "mesh": 0}],
        "meshes": [mesh],
        "animations": [{"name": f"{anim.name} motion", "samplers": samplers, "channels": channels}],
        "accessors": buf.accessors,
        "bufferViews": buf.views,
        "buffers": [{"byteLength": len(buf.data) + (-len(buf.data) % 4)}],
    }
    return doc, bytes(buf.data)


def glb_bytes(doc: dict, binary: bytes) -> bytes:
    """The binary glTF container: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
    text = json_text(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary = binary + b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<III", 0x46546C67, 2, total), struct.pack("<II", len(text), 0x4E4F534A), text,
                     struct.pack("<II", len(binary), 0x004E4942), binary])  # fmt: skip


def write_glb(path, anim: FaceAnimation) -> Path:
    """Write the face as one binary glTF 2.0 file (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(glb_bytes(*gltf_document(anim)))
    return Path(path)


# --------------------------------------------------------------------------------------- parameter CSV


def parameter_table(anim: FaceAnimation):
    """Per frame: frame, time_s, valid, yaw/pitch/roll (degrees, :data:`EULER_CONVENTION`), tx, ty, tz
    (pixels), scale (pixels per model unit) and the expression coefficients by name (a pandas DataFrame)."""
    import pandas as pd

    ypr = yaw_pitch_roll(rotation_matrix(anim.camera[:, :3]))
    cols = {"frame": np.arange(anim.n_frames), "time_s": anim.times, "valid": anim.valid.astype(int)}
    cols.update(zip(POSE_COLUMNS, [*ypr.T, *anim.camera[:, 3:].T]))
    cols.update(zip(anim.expression_names(), anim.q.T))
    return pd.DataFrame(cols)


def cameras_from_table(table) -> np.ndarray:
    """Cameras (T, 7) of the fit from a :func:`parameter_table` (or the CSV read back with pandas)."""
    ypr = table[list(POSE_COLUMNS[:3])].to_numpy(float)
    r = rotation_log(np.array([yaw_pitch_roll_matrix(*a) for a in ypr]).reshape(-1, 3, 3))
    return np.concatenate([r, table[list(POSE_COLUMNS[3:])].to_numpy(float)], axis=1)


def metadata(anim: FaceAnimation, **extra) -> dict:
    """The sidecar JSON of the parameter CSV: what is constant over the video (identity) and the conventions."""
    return {
        "name": anim.name, "model": anim.model.name, "model_hash": anim.model.content_hash(), "model_unit": anim.model.unit,
        "fps": anim.fps, "width": anim.width, "height": anim.height, "n_frames": anim.n_frames,
        "rotation_convention": EULER_CONVENTION, "expression_names": anim.expression_names(),
        "identity": [float(x) for x in anim.p], **extra,
    }  # fmt: skip


def write_parameters(csv_path, json_path, anim: FaceAnimation) -> None:
    """The parameter CSV (9 significant digits: re-applied, it reproduces the posed vertices to ~1e-6 px) and
    its sidecar JSON (identity coefficients, conventions)."""
    with atomic_path(csv_path) as tmp:
        parameter_table(anim).to_csv(tmp, index=False, float_format="%.9g")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json_text(metadata(anim, csv=Path(csv_path).name), indent=1))


# ------------------------------------------------------------------------------------------ mesh files


def write_mesh_sequence(folder, anim: FaceAnimation, fmt: str) -> Path:
    """One OBJ or PLY per frame (``frame_00000.obj`` …) of the posed mesh in the glTF world frame (metres, Y up);
    the folder appears complete or not at all."""
    if fmt not in ("obj", "ply"):
        raise ValueError(f"mesh format must be 'obj' or 'ply', not {fmt!r}")
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = anim.model
        tri = np.asarray(model.triangles, np.int32)
        frame = WorldFrame.of(anim)
        identity, basis = model.shape(anim.p), np.ascontiguousarray(model.exp_basis).reshape(model.n_exp, -1)
        for t in range(anim.n_frames):
            v = frame.from_image(project(identity + (anim.q[t] @ basis).reshape(-1, 3), anim.camera[t]))
            (_write_obj if fmt == "obj" else _write_ply)(tmp / f"frame_{t:05d}.{fmt}", v, tri)
            if (t + 1) % 100 == 0 or t + 1 == anim.n_frames:
                log.info("%s meshes: %d/%d frames", fmt, t + 1, anim.n_frames)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_obj(path, v: np.ndarray, tri: np.ndarray) -> None:
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in v] + [f"f {a} {b} {c}" for a, b, c in tri + 1]
    Path(path).write_text("\n".join(lines) + "\n")


def _write_ply(path, v: np.ndarray, tri: np.ndarray) -> None:
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\nproperty float y\n"
              f"property float z\nelement face {len(tri)}\nproperty list uchar int vertex_indices\nend_header\n")  # fmt: skip
    faces = np.zeros(len(tri), dtype=[("n", "u1"), ("i", "<i4", 3)])
    faces["n"], faces["i"] = 3, tri
    Path(path).write_bytes(header.encode() + v.astype("<f4").tobytes() + faces.tobytes())


# ------------------------------------------------------------------------------------------ ARKit CSV

# Live Link Face's CSV columns after Timecode and BlendShapeCount: the 52 ARKit blendshapes, then 9 rotations.
ARKIT_NAMES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft", "EyeWideLeft",
    "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight",
    "MouthStretchLeft", "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight",
    "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)  # fmt: skip
ARKIT_ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
# ARKit blendshape ← the ICT shapes averaged into it (ICT's _L/_R are the subject's left/right, as ARKit's Left/Right).
ICT_TO_ARKIT = {
    "EyeBlinkLeft": ("eyeBlink_L",), "EyeLookDownLeft": ("eyeLookDown_L",), "EyeLookInLeft": ("eyeLookIn_L",),
    "EyeLookOutLeft": ("eyeLookOut_L",), "EyeLookUpLeft": ("eyeLookUp_L",), "EyeSquintLeft": ("eyeSquint_L",),
    "EyeWideLeft": ("eyeWide_L",), "EyeBlinkRight": ("eyeBlink_R",), "EyeLookDownRight": ("eyeLookDown_R",),
    "EyeLookInRight": ("eyeLookIn_R",), "EyeLookOutRight": ("eyeLookOut_R",), "EyeLookUpRight": ("eyeLookUp_R",),
    "EyeSquintRight": ("eyeSquint_R",), "EyeWideRight": ("eyeWide_R",), "JawForward": ("jawForward",),
    "JawRight": ("jawRight",), "JawLeft": ("jawLeft",), "JawOpen": ("jawOpen",), "MouthClose": ("mouthClose",),
    "MouthFunnel": ("mouthFunnel",), "MouthPucker": ("mouthPucker",), "MouthRight": ("mouthRight",),
    "MouthLeft": ("mouthLeft",), "MouthSmileLeft": ("mouthSmile_L",), "MouthSmileRight": ("mouthSmile_R",),
    "MouthFrownLeft": ("mouthFrown_L",), "MouthFrownRight": ("mouthFrown_R",), "MouthDimpleLeft": ("mouthDimple_L",),
    "MouthDimpleRight": ("mouthDimple_R",), "MouthStretchLeft": ("mouthStretch_L",), "MouthStretchRight": ("mouthStretch_R",),
    "MouthRollLower": ("mouthRollLower",), "MouthRollUpper": ("mouthRollUpper",), "MouthShrugLower": ("mouthShrugLower",),
    "MouthShrugUpper": ("mouthShrugUpper",), "MouthPressLeft": ("mouthPress_L",), "MouthPressRight": ("mouthPress_R",),
    "MouthLowerDownLeft": ("mouthLowerDown_L",), "MouthLowerDownRight": ("mouthLowerDown_R",),
    "MouthUpperUpLeft": ("mouthUpperUp_L",), "MouthUpperUpRight": ("mouthUpperUp_R",), "BrowDownLeft": ("browDown_L",),
    "BrowDownRight": ("browDown_R",), "BrowInnerUp": ("browInnerUp_L", "browInnerUp_R"), "BrowOuterUpLeft": ("browOuterUp_L",),
    "BrowOuterUpRight": ("browOuterUp_R",), "CheekPuff": ("cheekPuff_L", "cheekPuff_R"), "CheekSquintLeft": ("cheekSquint_L",),
    "CheekSquintRight": ("cheekSquint_R",), "NoseSneerLeft": ("noseSneer_L",), "NoseSneerRight": ("noseSneer_R",),
    "TongueOut": (),
}  # fmt: skip
GAZE = ("gazeYaw", "gazePitch")


def has_arkit_shapes(model: MorphableModel) -> bool:
    """Whether the model's expression components carry every ICT shape of :data:`ICT_TO_ARKIT`."""
    names = set(model.exp_names)
    return all(n in names for shapes in ICT_TO_ARKIT.values() for n in shapes)


def live_link_timecode(frame: int, fps: float) -> str:
    """``HH:MM:SS:FF.mmm`` as Live Link Face writes it: FF the frame within the second, .mmm its fraction."""
    t = frame / fps
    whole = int(np.floor(t + 1e-9))
    sub = (t - whole) * fps
    ff, frac = int(np.floor(sub + 1e-6)), sub - np.floor(sub + 1e-6)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{ff:02d}.{int(round(max(frac, 0) * 1000)) % 1000:03d}"


def arkit_table(anim: FaceAnimation):
    """The Live Link Face–style table (pandas DataFrame) of an ICT-model face (module docstring)."""
    import pandas as pd

    model = anim.model
    if not has_arkit_shapes(model):
        raise InputError(model.name, "has no ARKit-named blendshapes (only the ICT model has): no ARKit CSV for this model")
    index = {n: j for j, n in enumerate(model.exp_names)}
    cols = {"Timecode": [live_link_timecode(t, anim.fps) for t in range(anim.n_frames)],
            "BlendShapeCount": np.full(anim.n_frames, len(ARKIT_NAMES) + len(ARKIT_ROTATIONS))}  # fmt: skip
    for arkit in ARKIT_NAMES:
        shapes = ICT_TO_ARKIT[arkit]
        w = anim.q[:, [index[s] for s in shapes]].mean(axis=1) if shapes else np.zeros(anim.n_frames)
        cols[arkit] = np.clip(w, 0.0, 1.0)
    head = np.radians(yaw_pitch_roll(rotation_matrix(anim.camera[:, :3])))
    gaze = [anim.q[:, index[g]] if g in index else np.zeros(anim.n_frames) for g in GAZE]
    zero = np.zeros(anim.n_frames)
    cols.update(zip(ARKIT_ROTATIONS, [*head.T, gaze[0], gaze[1], zero, gaze[0], gaze[1], zero]))
    return pd.DataFrame(cols)


def write_arkit_csv(path, anim: FaceAnimation) -> Path:
    with atomic_path(path) as tmp:
        arkit_table(anim).to_csv(tmp, index=False, float_format="%.6f")
    return Path(path)


# ------------------------------------------------------------------------------------------ one job


def write_face_exports(anim: FaceAnimation, glb, csv, meta) -> None:
    """The exports every face gets: glTF, parameter CSV + sidecar JSON."""
    write_glb(glb, anim)
    write_parameters(csv, meta, anim)
    log.info("%s: %d frames at %g fps, %d vertices, %d morph targets -> %s, %s", anim.name, anim.n_frames, anim.fps,
             anim.model.n_vertices, anim.model.n_exp, glb, csv)  # fmt: skip
    if not has_arkit_shapes(anim.model):
        log.info("%s: no ARKit CSV: model %r has no ARKit blendshapes (only the ICT model has)", anim.name, anim.model.name)
