"""Conditioning-input synthesis, step 1: carry a source actor's head pose and expression onto a target actor.

One job per configured pair ``source → target``. Inputs: the two merged tracks (:mod:`deep_puppets.tracks`)
and the two morphable models they were fitted with. Output (layout ``transfer``, :mod:`deep_puppets.transfer_files`):
the *target's* parameters for every frame of the *source* (identity ``p`` of the target, expression ``q`` in
the target's model, camera), ready to be rendered with the target's model (:meth:`TransferResult.to_fit`).

Modes
-----
``pose+expression``
    head pose and expression follow the source.
``expression``
    the target keeps its own head motion frame by frame (the report's expression-only trial) and takes only
    the expression. Output frame ``i`` takes its camera from target frame :func:`ping_pong` ``(i)``: the
    target's frames played forward, then backward, then forward again (0, 1, …, n−1, n−2, …, 1, 0, 1, …)
    when the target is shorter than the source (no jump at the turn-around; frame i itself when it is not
    shorter). ``target_pose_frame`` records the frame used (−1 in ``pose+expression`` mode).

Relative transfer
-----------------
Each actor has a reference taken from its own track (valid frames only):

* pose (:func:`reference_pose`): the rotation median (geodesic L1 median on SO(3), Weiszfeld iterations
  started at the chordal L2 mean; ``rotation_reference='mean'`` keeps the chordal mean), and the medians of
  translation, depth offset and scale;
* expression (:func:`reference_expression`), per coefficient, ``expression_reference='auto'``:
  ``rest`` for person models: the median q over the actor's *rest frames* (:func:`rest_frames`: mouth
  opening, the inner lips' gap, within the lowest ``rest_quantile`` (20%) of its frames, and eyes at least
  as open as the median of those, so no blink); a person model's q = 0 is the video's *typical* face, lips
  apart for a talker (``zero`` kept the target's mouth open in every frame);
  a low ``percentile`` (10th) for one-sided activations (ICT's ARKit blendshapes, ≥ 0 in [0, 1]: the 10th
  percentile is the actor's resting level, robust to a few fitting undershoots); the ``median`` for signed
  coefficients (ICT gaze: where the actor usually looks; BFM's PCA expressions).

The target gets ``target_ref ⊕ (source(t) ⊖ source_ref)``:

*Pose* (:mod:`deep_puppets.head_motion`): rotations follow the source's yaw/pitch/roll changes about the two
references (``rotation_transfer``), with the head rotation a person model's expressions carry counted as head motion
(``anchor_rotation``); translations move as many face-widths as the source's; scale follows the source's relative
approach to the camera (``scale_motion``). The stats give how far the result leaves the target's own pose range
(``target_pose_range_deg``, ``pose_excess_p95_deg``: the generator never saw poses beyond it; :func:`pose_warning`),
and ``pose_range`` keeps it within that range plus a margin (:func:`deep_puppets.head_motion.limit_pose_range`).

Expression
----------
* Shared basis (same model content hash, or the same provider with the same non-empty named components,
  e.g. ICT's face and full regions): relative coefficient copy ``q_out = q_tref + (q_s(t) − q_sref)``.
  ICT's appended gazeYaw/gazePitch go through like any other coefficient.
* Different bases (the default: two person-specific models): the source's expression is moved as a vertex
  displacement in the shared canonical frame, ``d_s(t) = Σ_j (q_s(t) − q_sref)_j exp_basis_s[j]``, scaled by
  ``size_t / size_s``, and projected onto the target's basis with its prior (ridge least squares weighted by
  the target's ``exp_std``, so rarely-used components are damped and the result stays within the range of
  expressions the target showed)::

      δ = argmin_δ Σ_P w_P ‖B_t δ − (size_t/size_s) d_s‖² + ridge · Σ_k (δ_k / exp_std_t[k])²
      q_out = q_tref + δ

  i.e. ``q_out = q_tref + M (q_s − q_sref)`` with one matrix ``M`` (:func:`expression_transfer_matrix`).
  Points P: all vertices when both models share the topology (person models: 478 vertices = the 478
  landmarks, iris points included, so gaze and blinks are part of the displacement); otherwise the 478
  detector landmarks placed on both meshes (``lm_weight`` > 0 in both).
* Clamp (``clamp_margin``, both cases): each output coefficient is clipped to the range the target showed
  in its own valid frames, widened by ``clamp_margin · exp_std`` on each side (``None``: no clamp). The
  report saw flicker where the target had to show expressions it never made.

Named expressions (``named_expressions``, displacement path only; :mod:`deep_puppets.named_expressions`): after
the clamp, geometric blendshapes synthesised on the target's neutral mesh (eyelids, jaw, mouth width, brows, gaze)
close the gap between the named signals ``q_out`` shows and the target's rest plus the source's change (a blink
the target's basis cannot show still arrives): ``named`` (T, K) and ``out_of_range`` (T, K); zero for a shared basis.
A shared basis with components that close and open the eyes (ICT's eyeBlink_L/R, eyeWide_L/R) gets the eyes' part in
``q_out`` itself: those coefficients are changed so each eye shows the named eye signal (``relative``: closing by the
same fraction of its rest aperture; a copied coefficient moves the lid the same distance on every face,
:func:`~deep_puppets.named_expressions.shared_eye_closure`).

Stats (``stats``): clamped fraction; displacement path: the part of the source's displacement the target basis
cannot represent (median, 95th percentile over moving frames), and per named signal the synthesised fraction.

The pose's own functions are :mod:`deep_puppets.head_motion`; the file: :mod:`~deep_puppets.transfer_files`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import PAIR_MODES
from .errors import ConfigError, TransferError
from .fit_types import FitResult
from .head_motion import POSE_FEATURES, ROTATION_TRANSFERS, anchored_cameras, limit_pose_range, pose_excess, pose_range, reference_pose
from .models.base import MorphableModel
from .models.facemesh import N_MESH_VERTICES
from .models.ict import activation_components, eye_components
from .named_expressions import NAMED_EXPRESSIONS, NAMED_SCALINGS, named_transfer, shared_eye_closure, supports_named

EXPRESSION_REFERENCES = ("auto", "rest", "zero", "median", "percentile")
ROTATION_REFERENCES = ("median", "mean")
REST_PROVIDERS = ("person",)  # providers whose 'auto' reference is the rest face (whole-face PCA coefficients)
# MediaPipe landmarks that tell a rest face: inner lips (upper, lower) and eyelids (upper, lower) per eye
INNER_LIPS = (13, 14)
EYELIDS = ((159, 145), (386, 374))


POSE_EXCESS_WARNING_DEG = 5.0  # the transfer's log warns when the head leaves the target's own range by more (p95)


def pose_warning(stats: dict, settings: TransferSettings) -> str | None:
    """One line for the log when the transferred head leaves the target's own pose range by more than
    :data:`POSE_EXCESS_WARNING_DEG` (95th percentile) without ``pose_range`` set; None otherwise."""
    excess = stats.get("pose_excess_p95_deg") or {}
    far = {a: v for a, v in excess.items() if v > POSE_EXCESS_WARNING_DEG}
    if not far or settings.pose_range is not None:
        return None
    rng = stats["target_pose_range_deg"]

    def described(a: str, v: float) -> str:
        lo, hi = rng[a]
        if a in ("yaw", "pitch", "roll"):
            return f"{a} {v:.1f}° (the target's own {lo:.1f}…{hi:.1f}°)"
        return f"{a} {'shift' if a != 'scale' else 'change'} {v:.1f}° equivalent (the target's own range spans {hi - lo:.1f})"

    said = ", ".join(described(a, v) for a, v in far.items())
    return (f"in 5% of its frames the transferred head leaves the target's own pose range by at least: {said}; the target's "
            "generator never saw those poses and will draw them poorly. Use a target that moves its head as much, expression "
            "mode, or transfer.pose_range (degrees beyond the target's range) to keep the head within it")


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TransferSettings:
    """Settings of the transfer (config section ``transfer``); see the module docstring."""

    ridge: float = 1e-2  # weight of the target prior Σ(δ/exp_std)² against the squared displacement error
    clamp_margin: float | None = 0.5  # clip q to the target's range ± margin·exp_std; None = no clamp
    expression_reference: str = "auto"  # auto | rest | zero | median | percentile (see the module docstring)
    expression_percentile: float = 10.0  # percentile used by 'percentile' (and 'auto' for activations)
    rest_quantile: float = 0.2  # 'rest': among the actor's frames with the lowest mouth opening (this fraction)
    rotation_reference: str = "median"  # median (geodesic L1) | mean (chordal L2)
    rotation_transfer: str = "angles"  # angles (yaw/pitch/roll changes) | head (head-frame composition) | world (camera frame)
    anchor_rotation: bool = True  # the rotation an expression gives the head's rigid anchors counts as head motion
    scale_motion: bool = True  # the source's relative scale changes (approach/retreat) reach the target
    pose_range: float | None = None  # degrees the head may leave the target's own yaw/pitch/roll range; None = no limit
    named_expressions: bool = True  # synthesise named signals (blinks, jaw, brows, gaze) the target's basis lacks
    named_scaling: str = "relative"  # relative: face sizes, eyes by their rest apertures | size: face sizes | range: by the actors' ranges

    def __post_init__(self):
        if not self.ridge >= 0:
            raise ConfigError(f"transfer.ridge must be >= 0, got {self.ridge!r}")
        if self.clamp_margin is not None and not self.clamp_margin >= 0:
            raise ConfigError(f"transfer.clamp_margin must be >= 0 or null, got {self.clamp_margin!r}")
        if self.expression_reference not in EXPRESSION_REFERENCES:
            raise ConfigError(f"transfer.expression_reference must be one of {list(EXPRESSION_REFERENCES)}, got {self.expression_reference!r}")
        if not 0 < self.rest_quantile <= 1:
            raise ConfigError(f"transfer.rest_quantile must be in (0, 1], got {self.rest_quantile!r}")
        if not 0 <= self.expression_percentile <= 100:
            raise ConfigError(f"transfer.expression_percentile must be in [0, 100], got {self.expression_percentile!r}")
        if self.rotation_reference not in ROTATION_REFERENCES:
            raise ConfigError(f"transfer.rotation_reference must be one of {list(ROTATION_REFERENCES)}, got {self.rotation_reference!r}")
        if self.rotation_transfer not in ROTATION_TRANSFERS:
            raise ConfigError(f"transfer.rotation_transfer must be one of {list(ROTATION_TRANSFERS)}, got {self.rotation_transfer!r}")
        if not isinstance(self.anchor_rotation, bool):
            raise ConfigError(f"transfer.anchor_rotation must be true or false, got {self.anchor_rotation!r}")
        if self.pose_range is not None and not (isinstance(self.pose_range, (int, float)) and 0 <= self.pose_range < 90):
            raise ConfigError(f"transfer.pose_range must be null or a number of degrees in [0, 90), got {self.pose_range!r}")
        if not isinstance(self.scale_motion, bool):
            raise ConfigError(f"transfer.scale_motion must be true or false, got {self.scale_motion!r}")
        if not isinstance(self.named_expressions, bool) or self.named_scaling not in NAMED_SCALINGS:
            raise ConfigError(f"transfer.named_expressions must be true or false and named_scaling one of {list(NAMED_SCALINGS)}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> TransferSettings:
        """Settings from the ``transfer`` config section; missing keys take the defaults."""
        from .config import settings_from_section

        return settings_from_section(cls, "transfer", cfg)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)


# ------------------------------------------------------------------------------------------ references
def expression_reference_kinds(model: MorphableModel, kind: str = "auto") -> tuple[str, ...]:
    """Per expression coefficient: 'rest', 'zero', 'median' or 'percentile' (``'auto'``: module docstring)."""
    if kind != "auto":
        return (kind,) * model.n_exp
    provider = model.extra.get("provider")
    if provider in REST_PROVIDERS:
        return ("rest",) * model.n_exp
    return tuple("percentile" if one_sided else "median" for one_sided in activation_components(model))


def face_openings(model: MorphableModel, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mouth (T,), eyes (T,)) openings in model units: the inner lips' and the eyelids' vertical gaps
    (y up; the mean of both eyes) at the detector landmarks, for identity ``p`` and expressions ``q`` (T, K)."""
    q = np.asarray(q, float)
    idx = np.array([*INNER_LIPS, *np.ravel(EYELIDS)])
    tri = model.triangles[model.lm_tri[idx]]  # (6, 3) vertices of the landmarks' triangles
    w = model.lm_bary[idx]  # (6, 3)
    base = model.shape(p, None)[tri]  # (6, 3, 3)
    y = np.einsum("lk,lk->l", base[..., 1], w) + np.einsum("tj,jlk,lk->tl", q, model.exp_basis[:, tri, 1], w)
    mouth = y[:, 0] - y[:, 1]
    eyes = 0.5 * ((y[:, 2] - y[:, 3]) + (y[:, 4] - y[:, 5]))
    return mouth, eyes


def rest_frames(mouth: np.ndarray, eyes: np.ndarray, use: np.ndarray, quantile: float = 0.2) -> np.ndarray:
    """(T,) bool: rest frames among ``use``: mouth opening ≤ its ``quantile``, eyes ≥ their median there (no blink)."""
    use = np.asarray(use, bool) & np.isfinite(mouth) & np.isfinite(eyes)
    if not use.any():
        return use
    closed = use & (mouth <= np.quantile(mouth[use], quantile))
    return closed & (eyes >= np.median(eyes[closed]))


def reference_expression(
    q: np.ndarray, valid: np.ndarray, kinds, percentile: float = 10.0, rest: np.ndarray | None = None
) -> np.ndarray:
    """An actor's reference expression (K,) from its track's q (T, K) over ``valid`` frames, per coefficient
    by ``kinds`` (from :func:`expression_reference_kinds`); 'rest' takes the median over the ``rest``
    frames (:func:`rest_frames`)."""
    q = np.asarray(q, float)
    use = np.asarray(valid, bool) & np.isfinite(q).all(axis=1)
    kinds = np.asarray(kinds, dtype=object)
    ref = np.zeros(q.shape[1])
    if not (kinds != "zero").any():
        return ref
    if not use.any():
        raise TransferError("the track has no valid frame with a finite expression: no reference expression")
    med, pct, rst = kinds == "median", kinds == "percentile", kinds == "rest"
    ref[med] = np.median(q[use][:, med], axis=0)
    ref[pct] = np.percentile(q[use][:, pct], percentile, axis=0)
    if rst.any():
        at_rest = use if rest is None else use & np.asarray(rest, bool)
        ref[rst] = np.median(q[at_rest if at_rest.any() else use][:, rst], axis=0)
    return ref


# ------------------------------------------------------------------------------------------------ pose
def ping_pong(n_out: int, n_target: int) -> np.ndarray:
    """Target frame for each of ``n_out`` output frames: 0, 1, …, n−1, n−2, …, 1, 0, 1, … (frame i itself
    while i < n_target)."""
    if n_target < 1:
        raise TransferError("the target track has no frames")
    i = np.arange(n_out)
    if n_target == 1:
        return np.zeros(n_out, dtype=np.int64)
    k = i % (2 * n_target - 2)
    return np.where(k < n_target, k, 2 * n_target - 2 - k).astype(np.int64)


# ------------------------------------------------------------------------------------------ expression
@dataclass(frozen=True)
class Correspondence:
    """Where two models' shapes are compared: all vertices (one topology) or the 478 detector landmarks."""

    on_landmarks: bool
    weight: np.ndarray  # (P,) weight of each point (0 = unused)

    def take(self, model: MorphableModel, fields: np.ndarray) -> np.ndarray:
        """Per-vertex fields (..., N, 3) (a shape or basis) at the points (..., P, 3)."""
        return model.landmark_points(fields) if self.on_landmarks else np.asarray(fields)


def same_topology(a: MorphableModel, b: MorphableModel) -> bool:
    return a.n_vertices == b.n_vertices and a.triangles.shape == b.triangles.shape and np.array_equal(a.triangles, b.triangles)


def correspondence(src: MorphableModel, dst: MorphableModel) -> Correspondence:
    """All vertices when the models share a topology; else the landmarks both place (weight = the smaller)."""
    if same_topology(src, dst):
        return Correspondence(False, np.ones(src.n_vertices))
    ws = np.ones(src.lm_tri.shape) if src.lm_weight is None else np.asarray(src.lm_weight, float)
    wd = np.ones(dst.lm_tri.shape) if dst.lm_weight is None else np.asarray(dst.lm_weight, float)
    w = np.minimum(ws, wd)
    if np.count_nonzero(w[:N_MESH_VERTICES] > 0) < 3:
        raise TransferError(f"models {src.name!r} and {dst.name!r} have different meshes and share no detector landmarks to compare them on")
    return Correspondence(True, w)


def face_size(model: MorphableModel, p: np.ndarray, corr: Correspondence) -> float:
    """RMS distance of the neutral face's points to their centroid (model units), over the used points of
    ``corr`` (mesh landmarks only when comparing landmarks: iris placement varies between providers)."""
    pts = corr.take(model, model.shape(p))
    use = corr.weight > 0
    if corr.on_landmarks:
        use[N_MESH_VERTICES:] = False
    pts = pts[use]
    return float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()))


def shared_expression_basis(src: MorphableModel, dst: MorphableModel) -> bool:
    """Coefficients mean the same in both models: same content hash, or the same provider with the same
    non-empty component names (e.g. ICT's face and full regions)."""
    if src.content_hash() == dst.content_hash():
        return True
    named = len(src.exp_names) == src.n_exp > 0 and tuple(src.exp_names) == tuple(dst.exp_names)
    provider = src.extra.get("provider")
    return named and provider is not None and provider == dst.extra.get("provider")


def expression_transfer_matrix(src: MorphableModel, dst: MorphableModel, corr: Correspondence, ridge: float, size_ratio: float = 1.0) -> np.ndarray:
    """``M`` (K_dst, K_src): ``δ_dst = M δ_src`` matches the displacement of ``δ_src`` scaled by
    ``size_ratio`` in the weighted least-squares sense, with the ridge ``ridge · Σ (δ_dst / exp_std)²``.

    For two person models (one topology, unit weights) this is ``size_ratio ·
    models.person.transfer_matrix(src, dst, ridge)``.
    """
    A, b = _weighted_displacements(src, dst, corr, size_ratio)
    reg = ridge * np.diag(1.0 / np.maximum(dst.exp_std, 1e-12) ** 2)
    return np.linalg.solve(A.T @ A + reg, A.T @ b)


def _weighted_displacements(src, dst, corr, size_ratio):
    """(A (3P, K_dst), b (3P, K_src)): both bases at the points, rows weighted by sqrt(weight)."""
    sw = np.repeat(np.sqrt(corr.weight), 3)[:, None]
    A = corr.take(dst, dst.exp_basis).reshape(dst.n_exp, -1).T * sw
    b = corr.take(src, src.exp_basis).reshape(src.n_exp, -1).T * (sw * size_ratio)
    return A, b


def projection_residual(src, dst, corr, M, size_ratio, delta_src) -> np.ndarray:
    """(T,) relative norm of the scaled source displacement the target cannot show, ‖A M δ − b δ‖ / ‖b δ‖
    (NaN where the source does not move), computed through K×K Gram matrices (no T×3P array)."""
    A, b = _weighted_displacements(src, dst, corr, size_ratio)
    E = A @ M - b
    num = np.einsum("ti,ij,tj->t", delta_src, E.T @ E, delta_src)
    den = np.einsum("ti,ij,tj->t", delta_src, b.T @ b, delta_src)
    big = den > 1e-12 * max(float(den.max(initial=0.0)), 1e-300)
    return np.where(big, np.sqrt(np.maximum(num, 0) / np.where(big, den, 1.0)), np.nan)


def expression_bounds(q: np.ndarray, valid: np.ndarray, exp_std: np.ndarray, margin: float | None):
    """(lo, hi) (K,) each: the range of ``q`` (T, K) over valid frames ± ``margin · exp_std``; None when
    ``margin`` is None or there is no valid frame."""
    if margin is None:
        return None
    q = np.asarray(q, float)
    use = np.asarray(valid, bool) & np.isfinite(q).all(axis=1)
    if not use.any():
        return None
    return q[use].min(axis=0) - margin * exp_std, q[use].max(axis=0) + margin * exp_std


def transfer_expressions(q_source: np.ndarray, q_source_ref: np.ndarray, q_target_ref: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """``q_tref + M (q_s − q_sref)`` (T, K_t); ``M=None``: identity (the shared-basis copy)."""
    delta = np.asarray(q_source, float) - q_source_ref
    return q_target_ref + (delta if M is None else delta @ M.T)


# ------------------------------------------------------------------------------------------- transfer
@dataclass
class TransferResult:
    """The target's parameters for every source frame, and how they were obtained."""

    p: np.ndarray  # (K_id,) target identity
    q: np.ndarray  # (T, K_exp) target expression
    camera: np.ndarray  # (T, 7) target camera
    valid: np.ndarray  # (T,) source frame valid (and, in expression mode, the target pose frame valid)
    source_frame: np.ndarray  # (T,) int64 source frame of each output frame
    target_pose_frame: np.ndarray  # (T,) int64 target frame whose pose was kept (expression mode), else −1
    mode: str
    source_reference: np.ndarray  # (7,) reference camera of the source track
    target_reference: np.ndarray  # (7,) reference camera of the target track
    source_expression_reference: np.ndarray  # (K_src,)
    target_expression_reference: np.ndarray  # (K_exp,)
    expression_transfer: str  # "shared_basis" or "displacement"
    source_model_hash: str
    target_model_hash: str
    settings: TransferSettings = field(default_factory=TransferSettings)
    stats: dict = field(default_factory=dict)
    named: np.ndarray | None = None  # (T, K_named) named blendshape coefficients (NAMED_EXPRESSIONS); None = zeros
    out_of_range: np.ndarray | None = None  # (T, K_named) bool: desired signal outside the target's own range

    @property
    def n_frames(self) -> int:
        return len(self.valid)

    def to_fit(self) -> FitResult:
        """The result as a :class:`FitResult` of the target's model (residual NaN), e.g. for rendering."""
        return FitResult(p=self.p, q=self.q, camera=self.camera, valid=self.valid, residual=np.full(self.n_frames, np.nan))


def _check_track(fit: FitResult, model: MorphableModel, role: str) -> None:
    if fit.q.ndim != 2 or fit.q.shape[1] != model.n_exp:
        raise TransferError(f"{role} track has {fit.q.shape[-1]} expression coefficients, its model {model.name!r} has {model.n_exp}")
    if fit.p.shape != (model.n_id,):
        raise TransferError(f"{role} track has {fit.p.shape[0]} identity coefficients, its model {model.name!r} has {model.n_id}")
    if fit.camera.shape != (fit.n_frames, 7) or fit.q.shape[0] != fit.n_frames:
        raise TransferError(f"{role} track arrays disagree on the number of frames")


def _references(fit: FitResult, model: MorphableModel, settings: TransferSettings, role: str):
    """(reference camera (7,), reference expression (K,)) of one actor's track."""
    try:
        cam = reference_pose(fit.camera, fit.valid, settings.rotation_reference)
        kinds = expression_reference_kinds(model, settings.expression_reference)
        rest = None
        if "rest" in kinds:
            use = np.asarray(fit.valid, bool) & np.isfinite(fit.q).all(axis=1)
            rest = rest_frames(*face_openings(model, fit.p, np.where(use[:, None], fit.q, 0.0)), use, settings.rest_quantile)
        return cam, reference_expression(fit.q, fit.valid, kinds, settings.expression_percentile, rest)
    except TransferError as e:
        raise TransferError(f"{role}: {e}") from None


def transfer_motion(
    source: FitResult,
    target: FitResult,
    source_model: MorphableModel,
    target_model: MorphableModel,
    mode: str = "pose+expression",
    settings: TransferSettings | None = None,
) -> TransferResult:
    """Re-animate the target with the source's motion; one output frame per source frame (module docstring)."""
    settings = settings or TransferSettings()
    if mode not in PAIR_MODES:
        raise ConfigError(f"transfer mode must be one of {list(PAIR_MODES)}, got {mode!r}")
    _check_track(source, source_model, "source")
    _check_track(target, target_model, "target")
    T = source.n_frames

    s_ref, qs_ref = _references(source, source_model, settings, "source")
    t_ref, qt_ref = _references(target, target_model, settings, "target")

    corr = correspondence(source_model, target_model)
    size_ratio = face_size(target_model, target.p, corr) / face_size(source_model, source.p, corr)
    stats: dict = {"n_frames": T, "size_ratio": size_ratio}

    shared = shared_expression_basis(source_model, target_model)
    if shared:
        M = None
    else:
        M = expression_transfer_matrix(source_model, target_model, corr, settings.ridge, size_ratio)
        res = projection_residual(source_model, target_model, corr, M, size_ratio, source.q[np.asarray(source.valid, bool)] - qs_ref)
        res = res[np.isfinite(res)]
        stats["unrepresented_median"] = float(np.median(res)) if len(res) else 0.0
        stats["unrepresented_p95"] = float(np.percentile(res, 95)) if len(res) else 0.0
    bounds = expression_bounds(target.q, target.valid, target_model.exp_std, settings.clamp_margin)
    q_free = transfer_expressions(source.q, qs_ref, qt_ref, M)
    q = q_free if bounds is None else np.clip(q_free, bounds[0], bounds[1])
    stats["clamped_fraction"] = float(np.mean(q != q_free)) if q.size else 0.0
    named, out_of_range = np.zeros((T, len(NAMED_EXPRESSIONS))), np.zeros((T, len(NAMED_EXPRESSIONS)), bool)
    if settings.named_expressions and not shared and supports_named(source_model) and supports_named(target_model):
        named, out_of_range, stats["named"] = named_transfer(source_model, target_model, source.p, source.q, qs_ref, source.valid,
                                                             target.p, target.q, qt_ref, target.valid, q, settings.named_scaling)  # fmt: skip
    eyes = eye_components(target_model) if shared else None
    if settings.named_expressions and eyes is not None:
        q, stats["eye_closure"] = shared_eye_closure(source_model, target_model, source.p, source.q, qs_ref, source.valid,
                                                     target.p, target.q, qt_ref, target.valid, q, eyes, settings.named_scaling)  # fmt: skip

    if mode == "expression":
        pose_frame = ping_pong(T, target.n_frames)
        camera = np.array(target.camera[pose_frame], float)
        valid = np.asarray(source.valid, bool) & np.asarray(target.valid, bool)[pose_frame]
    else:
        pose_frame = np.full(T, -1, dtype=np.int64)
        camera, anchor_stats = anchored_cameras(source, target, source_model, target_model, (s_ref, qs_ref, t_ref, qt_ref), q, size_ratio, settings)
        stats.update(anchor_stats)
        valid = np.asarray(source.valid, bool).copy()
        face_px = float(t_ref[6]) * face_size(target_model, target.p, corr)
        own_range = pose_range(target.camera, target.valid, face_px)
        excess = pose_excess(camera, valid, own_range, face_px)
        seen = np.isfinite(excess).all(axis=1)
        stats["target_pose_range_deg"] = {a: [float(own_range[0, k]), float(own_range[1, k])] for k, a in enumerate(POSE_FEATURES)}
        stats["pose_excess_p95_deg"] = {a: float(np.percentile(excess[seen, k], 95)) if seen.any() else 0.0 for k, a in enumerate(POSE_FEATURES)}
        if settings.pose_range is not None:
            camera = limit_pose_range(camera, valid, own_range, float(settings.pose_range), face_px)
            stats["pose_limited_fraction"] = float(np.mean(np.any(excess[seen] > 0, axis=1))) if seen.any() else 0.0
    stats["n_valid"] = int(valid.sum())

    return TransferResult(
        p=np.array(target.p, float),
        q=q,
        camera=camera,
        valid=valid,
        source_frame=np.arange(T, dtype=np.int64),
        target_pose_frame=pose_frame,
        mode=mode,
        source_reference=s_ref,
        target_reference=t_ref,
        source_expression_reference=qs_ref,
        target_expression_reference=qt_ref,
        expression_transfer="shared_basis" if shared else "displacement",
        source_model_hash=source_model.content_hash(),
        target_model_hash=target_model.content_hash(),
        settings=settings,
        stats=stats,
        named=named,
        out_of_range=out_of_range,
    )
