"""The studio's sliders (:class:`Control`) and what an edit does to one frame's fitted parameters
(:class:`ControlSet`): head pose, gaze, named expressions and raw components; the edited values and whether they
leave the range the target showed in its training frames.

Every slider is an *offset* added to the frame's own value (0 = as tracked).

* Pose ``yaw``, ``pitch``, ``roll`` (degrees): the head turns in its own frame, ``R' = R · Rz(roll) Ry(yaw) Rx(pitch)``
  (:func:`deep_puppets.camera.yaw_pitch_roll_matrix`), composed as the transfer composes a source's motion with
  the target's pose (``R_tref · Δ``, :mod:`deep_puppets.transfer`). +yaw turns the nose toward the image right.
* Person models (landmarks on vertices). The named signals are linear in the vertices
  (:func:`deep_puppets.named_expressions.signal_operator`, plus the lip thickness for ``pucker``), so on the
  target's basis each is ``s = s0 + J q``. A named control moves along the direction that changes its signal by
  one unit and leaves the other signals as they are, chosen the way the target's own training frames vary:
  ``D = Σ Jᵀ (J Σ Jᵀ)⁻¹`` with ``Σ`` the covariance of ``q`` over the training frames (the regression of ``q`` on
  the signals; a little ridge for signals the frames barely move). So a slider stays inside the expression space
  the generator was trained on. Units: the actor's own 5–95 % range of the signal over the training frames (at
  least :data:`MIN_UNIT` face sizes); sliders go from −1 to +1.5 ranges. Where the training frames barely move a
  signal (a span under half of :data:`MIN_UNIT`, or eyes that never closed) the basis cannot show it, and the
  geometric blendshape of :mod:`deep_puppets.named_expressions` on the target's mesh does it instead (``pucker``
  has none: it is left out then). ``blink_left/right``: the fraction of the frame's eye opening closed (1 = shut,
  negative widens). The mouth and eyes never close past shut (the offset is limited there).
  Gaze ``gaze_x``/``gaze_y`` (fractions of the eye width, + = image right / up) move the five iris points of both
  eyes (the named gaze blendshape): the points the gaze image is drawn from.
  Advanced ``pc_0``…: the top raw expression components, in their standard deviations.
* Models with named components (ICT): one control per ARKit name (coefficient offset), gaze through its
  ``gazeYaw``/``gazePitch`` components (radians).

Out of range (:meth:`ControlSet.out_of_range`): a control's edited value (its signal relative to the training
median in slider units; pose in degrees from the target's median pose; gaze; raw coefficients) outside the
minimum–maximum over the training frames, by more than a small tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..camera import rotation_log, rotation_matrix, yaw_pitch_roll, yaw_pitch_roll_matrix
from ..expression_signals import OUTER_LIP_MID
from ..head_motion import median_rotation
from ..models.base import MorphableModel
from ..named_expressions import NAMED_EXPRESSIONS, face_scale, landmark_vertices, named_blendshapes, signal_operator
from .results import StudioError

GROUPS = ("pose", "gaze", "expression", "advanced")
# named signals of person models: those of named_expressions, then the lip thickness (pucker)
STUDIO_SIGNALS = (*NAMED_EXPRESSIONS, "pucker")
# control -> (signal, label); units in the actor's range of that signal
NAMED_CONTROLS = {
    "mouth_open": ("mouth_open", "Mouth open"),
    "smile": ("mouth_width", "Smile / mouth width"),
    "pucker": ("pucker", "Pucker / lip thickness"),
    "brow_left": ("brow_left", "Brow left (raise)"),
    "brow_right": ("brow_right", "Brow right (raise)"),
}
BLINKS = {"blink_left": ("eye_left", "Blink left"), "blink_right": ("eye_right", "Blink right")}
MIN_UNIT = {"mouth_open": 0.1, "mouth_width": 0.05, "pucker": 0.03, "brow_left": 0.03, "brow_right": 0.03}  # face sizes
BLINK_CLOSED = 0.4  # the basis can blink when some training frame's aperture is below this fraction of its median
RIDGE = 1e-3  # of the mean signal variance, for signals the training frames barely move
N_ADVANCED = 10
POSE = {"yaw": ("Head yaw (°)", 30.0), "pitch": ("Head pitch (°)", 20.0), "roll": ("Head roll (°)", 20.0)}
GAZE_CONTROLS = {"gaze_x": ("Gaze left/right (eye widths)", 0.25), "gaze_y": ("Gaze up/down (eye widths)", 0.15)}
TOLERANCE = {"pose": 1.0, "gaze": 0.01, "expression": 0.05, "advanced": 0.05}


@dataclass
class Control:
    """One slider: an offset in ``minimum``…``maximum`` added to the frame's own value (``default`` 0 = as tracked)."""

    name: str
    label: str
    group: str
    minimum: float
    maximum: float
    step: float
    default: float = 0.0

    def to_json(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in asdict(self).items()}


@dataclass
class Params:
    """What is rendered for one frame: expression ``q`` (K_exp,), camera (7,), named blendshape coefficients
    (K_named,) or None."""

    q: np.ndarray
    camera: np.ndarray
    named: np.ndarray | None = None


def lip_thickness_operator(scale: float) -> np.ndarray:
    """(478, 3) operator of the lip thickness: the outer lip height less the inner gap, in face sizes (y up)."""
    op = np.zeros((478, 3))
    op[OUTER_LIP_MID[0], 1] += 1.0
    op[OUTER_LIP_MID[1], 1] -= 1.0
    return (op / scale) - signal_operator(scale)[NAMED_EXPRESSIONS.index("mouth_open")]


def _relative_angles(R: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll (degrees) of rotations R (..., 3, 3) in the head frame of R_ref: ``R_ref⁻¹ R``."""
    return yaw_pitch_roll(np.swapaxes(R_ref, -1, -2) @ R)


class ControlSet:
    """The controls of one target and their effect on a frame's :class:`Params` (module docstring).

    ``model``, identity ``p``; ``q`` (T, K_exp) and ``camera`` (T, 7) of the target's training frames (valid
    ones, held-out frames left out) define the directions, units and ranges.
    """

    def __init__(self, model: MorphableModel, p, q: np.ndarray, camera: np.ndarray):
        self.model, self.p = model, np.asarray(p, float)
        q, camera = np.asarray(q, float), np.asarray(camera, float)
        if not len(q):
            raise ValueError("no training frame to derive the controls from")
        self.R_ref = median_rotation(rotation_matrix(camera[:, :3]))
        self.lv = landmark_vertices(model)
        self.person = self.lv is not None
        self.exp_std = np.asarray(model.exp_std, float)
        self._controls: dict[str, Control] = {}
        for name, (label, lim) in POSE.items():
            self._add(name, label, "pose", -lim, lim, 1.0)
        if self.person:
            self._person(q)
        else:
            self._named_components(q)
        train = [self._values_of(Params(q[i], camera[i], None)) for i in range(len(q))]
        self.range = {k: (min(v[k] for v in train), max(v[k] for v in train)) for k in train[0]}

    # -- construction ----------------------------------------------------------------------------------
    def _add(self, name, label, group, lo, hi, step):
        self._controls[name] = Control(name, label, group, float(lo), float(hi), float(step))

    def _person(self, q: np.ndarray) -> None:
        m, lv = self.model, self.lv
        V0 = m.shape(self.p)
        self.size = size = face_scale(V0[lv])
        ops = np.concatenate([signal_operator(size), lip_thickness_operator(size)[None]])  # (S, 478, 3)
        self.ops = ops
        self.s0 = np.einsum("kld,ld->k", ops, V0[lv])
        self.J = np.einsum("kld,eld->ke", ops, m.exp_basis[:, lv])  # (S, K_exp): s = s0 + J q
        self.B = named_blendshapes(m, self.p)
        self.JB = np.einsum("kld,jld->kj", ops, self.B[:, lv])  # (S, K_named)
        s = self.s0 + q @ self.J.T  # (T, S) training signals
        self.rest = np.median(s, axis=0)
        span = np.percentile(s, 95, axis=0) - np.percentile(s, 5, axis=0)
        qc = q - q.mean(axis=0)
        cov = qc.T @ qc / max(len(q) - 1, 1) + 1e-9 * np.diag(self.exp_std**2)
        M = self.J @ cov @ self.J.T
        M = M + RIDGE * np.trace(M) / len(M) * np.eye(len(M))
        D = cov @ self.J.T @ np.linalg.inv(M)  # (K_exp, S): column k changes signal k by ~1, the others ~0
        self.direction, self.unit, self.via_basis = {}, {}, {}
        for name, (sig, label) in NAMED_CONTROLS.items():
            k = STUDIO_SIGNALS.index(sig)
            d = D[:, k] / max(float(self.J[k] @ D[:, k]), 1e-12)
            basis_ok = span[k] >= 0.5 * MIN_UNIT[sig]
            if not basis_ok and sig not in NAMED_EXPRESSIONS:
                continue  # no blendshape for it either
            self.direction[name], self.via_basis[name] = d, bool(basis_ok)
            self.unit[name] = max(float(span[k]), MIN_UNIT[sig])
            lo = -1.5 if sig.startswith("brow") else -1.0
            self._add(name, f"{label} (× its range)", "expression", lo, 1.5, 0.05)
        for name, (sig, label) in BLINKS.items():
            k = STUDIO_SIGNALS.index(sig)
            self.direction[name] = D[:, k] / max(float(self.J[k] @ D[:, k]), 1e-12)
            self.via_basis[name] = bool(s[:, k].min() <= BLINK_CLOSED * self.rest[k])
            self.unit[name] = 1.0
            self._add(name, f"{label} (fraction closed)", "expression", -0.5, 1.0, 0.05)
        eye_w = np.mean([np.linalg.norm(V0[lv[a]] - V0[lv[b]]) for a, b in ((33, 133), (263, 362))]) / size
        self.eye_width = float(eye_w)
        for name, (label, lim) in GAZE_CONTROLS.items():
            self._add(name, label, "gaze", -lim, lim, 0.01)
        for i in range(min(N_ADVANCED, m.n_exp)):
            self._add(f"pc_{i}", f"Component {i} (σ)", "advanced", -3.0, 3.0, 0.1)

    def _named_components(self, q: np.ndarray) -> None:
        names = list(self.model.exp_names)
        self.component = {}
        for i, n in enumerate(names):
            if n in ("gazeYaw", "gazePitch"):
                ctl = "gaze_x" if n == "gazeYaw" else "gaze_y"
                self.component[ctl] = i
                self._add(ctl, f"Gaze {'left/right' if n == 'gazeYaw' else 'up/down'} (rad)", "gaze", -0.5, 0.5, 0.01)
            elif n:
                self.component[n] = i
                self._add(n, n, "expression", -1.0, 1.0, 0.05)
        if not names:  # a model without names: raw components only
            for i in range(min(N_ADVANCED, self.model.n_exp)):
                self.component[f"pc_{i}"] = i
                self._add(f"pc_{i}", f"Component {i} (σ)", "advanced", -3.0, 3.0, 0.1)

    # -- use -------------------------------------------------------------------------------------------
    def controls(self) -> list[Control]:
        return list(self._controls.values())

    def check(self, edits: Mapping[str, float] | None, where="edits") -> dict[str, float]:
        """The non-zero edits as floats; StudioError for an unknown control or a value outside its slider."""
        out = {}
        for name, value in dict(edits or {}).items():
            c = self._controls.get(name)
            if c is None:
                raise StudioError(where, f"no control {name!r} (controls: {', '.join(self._controls)})")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise StudioError(where, f"{name} = {value!r} is not a number") from None
            if not np.isfinite(v) or not c.minimum - 1e-9 <= v <= c.maximum + 1e-9:
                raise StudioError(where, f"{name} = {value!r} is outside {c.minimum:g}…{c.maximum:g}")
            if v != 0.0:
                out[name] = v
        return out

    def signals(self, params: Params) -> np.ndarray:
        """The named signals (S,) of a person model's frame (model frame, face sizes)."""
        s = self.s0 + self.J @ params.q
        return s if params.named is None else s + self.JB @ params.named

    def apply(self, params: Params, edits: Mapping[str, float]) -> Params:
        """``params`` with the (checked) ``edits`` applied."""
        q, cam = params.q.astype(float), params.camera.astype(float)
        named = None if params.named is None else params.named.astype(float)
        if any(k in edits for k in POSE):
            R = rotation_matrix(cam[:3]) @ yaw_pitch_roll_matrix(edits.get("yaw", 0.0), edits.get("pitch", 0.0), edits.get("roll", 0.0))
            cam = cam.copy()
            cam[:3] = rotation_log(R)
        if not self.person:
            q = q.copy()
            for name, v in edits.items():
                if name in self.component:
                    i = self.component[name]
                    q[i] += v * (self.exp_std[i] if name.startswith("pc_") else 1.0)
            return Params(q, cam, named)
        base = self.signals(params)
        named = np.zeros(len(NAMED_EXPRESSIONS)) if named is None else named.copy()
        for name, v in edits.items():
            if name in self.direction:
                sig = (NAMED_CONTROLS.get(name) or BLINKS[name])[0]
                k = STUDIO_SIGNALS.index(sig)
                if name in BLINKS:
                    delta = -v * max(base[k], 0.0)
                else:
                    delta = v * self.unit[name]
                    if sig == "mouth_open":
                        delta = max(delta, -max(base[k], 0.0))  # the lips never cross
                if self.via_basis[name]:
                    q = q + delta * self.direction[name]
                else:
                    named[k] += delta / self.JB[k, k]
            elif name in GAZE_CONTROLS:
                named[NAMED_EXPRESSIONS.index(name)] += v * self.eye_width / self.JB[STUDIO_SIGNALS.index(name), STUDIO_SIGNALS.index(name)]
            elif name.startswith("pc_"):
                q = q.copy()
                q[int(name[3:])] += v * self.exp_std[int(name[3:])]
        return Params(q, cam, named if named.any() else None)

    def _values_of(self, params: Params) -> dict[str, float]:
        R = rotation_matrix(params.camera[:3])
        yaw, pitch, roll = _relative_angles(R, self.R_ref)
        out = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll)}
        if not self.person:
            for name, i in self.component.items():
                out[name] = float(params.q[i] / (self.exp_std[i] if name.startswith("pc_") else 1.0))
            return out
        s = self.signals(params)
        for name, (sig, _) in NAMED_CONTROLS.items():
            if name in self.direction:
                k = STUDIO_SIGNALS.index(sig)
                out[name] = float((s[k] - self.rest[k]) / self.unit[name])
        for name, (sig, _) in BLINKS.items():
            k = STUDIO_SIGNALS.index(sig)
            out[name] = float(1.0 - s[k] / self.rest[k]) if self.rest[k] > 0 else 0.0
        for name in GAZE_CONTROLS:
            out[name] = float(s[STUDIO_SIGNALS.index(name)] / self.eye_width)
        for i in range(min(N_ADVANCED, self.model.n_exp)):
            out[f"pc_{i}"] = float(params.q[i] / self.exp_std[i])
        return out

    def values(self, params: Params) -> dict[str, float]:
        """The edited absolute value of every control (its slider's units; pose: degrees from the median pose)."""
        return {k: v for k, v in self._values_of(params).items() if k in self._controls}

    def out_of_range(self, values: Mapping[str, float]) -> list[str]:
        """Controls whose value leaves the training frames' range by more than the group's tolerance."""
        out = []
        for name, v in values.items():
            lo, hi = self.range[name]
            tol = TOLERANCE[self._controls[name].group]
            if v < lo - tol or v > hi + tol:
                out.append(name)
        return out
