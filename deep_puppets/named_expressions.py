"""Named expressions shared across people: geometric blendshapes synthesised on a target's own neutral mesh
(eyelid closure, jaw opening, mouth width, brows, gaze), the linear signals that measure them, and the per-frame
coefficients that make a transferred face show the source's named signals when the target's own expression
basis cannot (a target who never blinked in its clip has no eye-closing component).

Models: those whose 478 detector landmarks sit on vertices (person models: the vertices *are* the landmarks);
the fields are defined on those vertices (y up, x toward the subject's left, z out of the face).

Signals (:data:`NAMED_EXPRESSIONS`, each a linear function of the vertex positions, divided by the face size,
the RMS radius of the 468 mesh landmarks):

* ``eye_left`` / ``eye_right``: mean vertical gap of 7 upper/lower eyelid contour pairs (subject's left/right);
* ``mouth_open``: mean vertical gap of the 3 middle inner-lip pairs; ``mouth_width``: the mouth corners' distance;
* ``brow_left`` / ``brow_right``: the brow points' mean height above the eye's corners;
* ``gaze_x`` / ``gaze_y``: the iris centres' offset from the middle of their eye corners (mean of both eyes).

Blendshapes (:func:`named_blendshapes`, (K, N, 3)), one per signal, built on the target's neutral mesh so that
each moves its own signal only: eyelid closure moves each upper-lid contour vertex onto its lower-lid partner
(coefficient 1 = the neutral eye closed; the neighbouring lid skin follows with a falloff; the irises stay, the
gaze image clips them to the lid polygon); jaw opening rotates the lower lip, chin and jaw about an axis through
the jaw hinge (behind and above the mouth; the lower lip, :data:`LOWER_LIP` by topology — a grinning neutral puts the upper
lip's middle below its corners — weighs less toward the corners); mouth width stretches the lips and the skin around them sideways
from the mouth's centre (with a slight lift of the corners, a smile); brows rise with the forehead skin above
them fading out; gaze translates the 5 iris points of both eyes. All but the eyelids are scaled so a
coefficient of 1 changes its signal by 1 (one face size); one that would need a vertex to move more than
:data:`MAX_DISPLACEMENT` face sizes for that is degenerate on the mesh and left out (zero, with a warning).

Transfer (:func:`named_transfer`): desired target signal = the target's rest value + the source's change from
its rest (``scaling='size'``: the change in face sizes; ``'relative'``: the same, but the eyes' change scaled by
the ratio of the actors' rest apertures, so the eye closes by the same fraction; ``'range'``: scaled by the ratio
of the actors' observed 5–95% ranges), minus what the projected expression already shows, closed by the named coefficients (projected
Gauss–Seidel on the K×K signal response, per frame), bounded to physical limits: the lids never cross (each pair's
gap ≥ 0) nor open past 1.5× the neutral eye, the inner lips never cross, the mouth width stays within −40%/+60% of
the neutral, brows within ±0.15 face size of the neutral, irises within the eye. ``out_of_range`` flags the
frames whose desired signal lies outside the range the target showed in its own track.
"""

from __future__ import annotations

import logging

import numpy as np

from .camera import project
from .expression_signals import INNER_LIP_PAIRS, MOUTH_CORNERS  # the middle of the inner lips (upper, lower); corners
from .landmark_basis import LandmarkBasis
from .models.base import MorphableModel
from .models.facemesh import LEFT_EYEBROW, LEFT_IRIS, LIPS, N_MESH_VERTICES, RIGHT_EYEBROW, RIGHT_IRIS

NAMED_EXPRESSIONS = ("eye_left", "eye_right", "mouth_open", "mouth_width", "brow_left", "brow_right", "gaze_x", "gaze_y")
NAMED_SCALINGS = ("relative", "size", "range")
# (upper, lower) eyelid contour pairs, from the outer corner inwards; corners (outer, inner) per eye
LID_PAIRS = {
    "right": ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),
    "left": ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382)),
}
EYE_CORNERS = {"right": (33, 133), "left": (263, 362)}
INNER_MOUTH_CORNERS = (78, 308)
# the lower lip's contour points, outer and inner, corners excluded (FaceMesh topology: which lip a point belongs to
# does not depend on the face's shape; a smiling neutral puts the upper lip's middle below its corners)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)
MAX_DISPLACEMENT = 4.0  # a blendshape that must move a vertex more than this many face sizes per unit signal is degenerate
BROW_POINTS = {"left": LEFT_EYEBROW, "right": RIGHT_EYEBROW}
IRISES = {"right": RIGHT_IRIS, "left": LEFT_IRIS}
EYE_OPEN_LIMIT = 1.5  # the eye opens at most this many times its neutral aperture
MOUTH_OPEN_LIMIT = 0.6  # inner-lip gap at most this many face sizes
WIDTH_LIMITS = (-0.4, 0.6)  # mouth width change, fraction of the neutral width
BROW_LIMIT = 0.15  # brow height change, face sizes
RANGE_TOLERANCE = 0.005  # face sizes beyond the target's own range before a signal counts as out of range
CLOSING_LIMIT = 2.0  # a shared basis's eye-closing component (ICT's eyeBlink) goes at most this far to close a wide eye
GAZE_LIMITS = (0.3, 0.15)  # iris centre offset from the eye's middle, fraction of the eye width (x, y)

log = logging.getLogger(__name__)


def landmark_vertices(model: MorphableModel) -> np.ndarray | None:
    """(478,) vertex index of each detector landmark, or None when some landmark does not sit on a vertex."""
    bary = np.asarray(model.lm_bary, float)
    k = bary.argmax(axis=1)
    if not np.allclose(bary[np.arange(len(k)), k], 1.0, atol=1e-9):
        return None
    return np.asarray(model.triangles)[np.asarray(model.lm_tri), k].astype(np.int64)


def supports_named(model: MorphableModel) -> bool:
    """The model can carry named expressions (its landmarks sit on vertices)."""
    return landmark_vertices(model) is not None


def face_scale(points: np.ndarray) -> float:
    """RMS radius of the 468 mesh landmarks of ``points`` (478, 3) (model units)."""
    pts = np.asarray(points, float)[:N_MESH_VERTICES]
    return float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()))


def signal_operator(scale: float) -> np.ndarray:
    """``S`` (K, 478, 3): the named signals of landmarks ``P`` (478, 3) are ``einsum('kld,ld->k', S, P)``, in
    units of ``scale`` (a face size)."""
    S = np.zeros((len(NAMED_EXPRESSIONS), 478, 3))
    for k, side in enumerate(("left", "right")):
        for u, lo in LID_PAIRS[side]:
            S[k, u, 1] += 1 / 7
            S[k, lo, 1] -= 1 / 7
        S[4 + k, BROW_POINTS[side], 1] += 1 / len(BROW_POINTS[side])
        S[4 + k, list(EYE_CORNERS[side]), 1] -= 0.5
    for u, lo in INNER_LIP_PAIRS:
        S[2, u, 1] += 1 / len(INNER_LIP_PAIRS)
        S[2, lo, 1] -= 1 / len(INNER_LIP_PAIRS)
    S[3, MOUTH_CORNERS[1], 0], S[3, MOUTH_CORNERS[0], 0] = 1.0, -1.0
    for side in ("left", "right"):
        for axis, k in ((0, 6), (1, 7)):
            S[k, IRISES[side][0], axis] += 0.5
            S[k, list(EYE_CORNERS[side]), axis] -= 0.25
    return S / scale


def named_signals(points: np.ndarray, scale: float) -> np.ndarray:
    """Named signals (..., K) of landmarks ``points`` (..., 478, 3) in the model frame, in face sizes."""
    return np.einsum("kld,...ld->...k", signal_operator(scale), np.asarray(points, float))


def _smooth_weight(d: np.ndarray, radius: float) -> np.ndarray:
    return np.exp(-0.5 * (d / radius) ** 2)


def named_blendshapes(model: MorphableModel, p) -> np.ndarray:
    """(K, N, 3) named blendshapes on the model's neutral mesh for identity ``p`` (module docstring)."""
    lv = landmark_vertices(model)
    if lv is None:
        raise ValueError(f"model {model.name!r}: its detector landmarks do not sit on vertices; no named expressions")
    V = np.asarray(model.shape(p), float)
    L = V[lv]
    size = face_scale(L)
    B = np.zeros((len(NAMED_EXPRESSIONS), *V.shape))
    protected = {int(i) for s in ("left", "right") for pair in LID_PAIRS[s] for i in pair}
    protected |= {int(i) for s in ("left", "right") for i in (*EYE_CORNERS[s], *IRISES[s], *BROW_POINTS[s])}
    landmark_of = {int(v): i for i, v in enumerate(lv)}
    free = np.array([v not in landmark_of or landmark_of[v] not in protected for v in range(len(V))])

    # eyelids: upper contour onto lower contour; lid skin above follows with a falloff
    for k, side in enumerate(("left", "right")):
        up = lv[[u for u, _ in LID_PAIRS[side]]]
        lo = lv[[b for _, b in LID_PAIRS[side]]]
        d = V[lo] - V[up]
        B[k, up] = d
        corners = V[lv[list(EYE_CORNERS[side])]]
        width = float(np.linalg.norm(corners[0] - corners[1]))
        dist = np.linalg.norm(V[:, None] - V[up][None], axis=2)  # (N, 7)
        near = dist.argmin(axis=1)
        above = V[:, 1] > corners[:, 1].mean()
        w = _smooth_weight(dist.min(axis=1), 0.2 * width) * (free & above & (dist.min(axis=1) < 0.5 * width))
        B[k] += w[:, None] * d[near] * 0.6

    # jaw: rotation about the x axis through the hinge (behind the mouth, at the level of the nose's base)
    corner_y = V[lv[list(MOUTH_CORNERS)], 1].mean()
    lips = set(int(i) for i in LIPS)
    lower_lip = list(LOWER_LIP)
    hinge = np.array([0.0, corner_y + 0.35 * size, L[:N_MESH_VERTICES, 2].min()])
    lip_bottom = L[lower_lip, 1].min()
    w = np.clip((corner_y - V[:, 1]) / max(corner_y - lip_bottom, 1e-3 * size), 0, 1)
    half = 0.5 * float(np.linalg.norm(L[MOUTH_CORNERS[1]] - L[MOUTH_CORNERS[0]]))
    for i in lips:  # the upper lip and the corners stay; the lower lip moves with the jaw, less toward the corners
        w[lv[i]] = max(0.0, 1 - (abs(L[i, 0] - L[list(MOUTH_CORNERS), 0].mean()) / half) ** 2) if i in lower_lip else 0.0
    jaw = np.zeros_like(V)
    jaw[:, 1] = -(V[:, 2] - hinge[2])
    jaw[:, 2] = V[:, 1] - hinge[1]
    B[2] = w[:, None] * jaw

    # mouth width (and a slight lift of the corners): sideways stretch from the mouth's centre
    centre = L[list(MOUTH_CORNERS)].mean(axis=0)
    half = 0.5 * float(np.linalg.norm(L[MOUTH_CORNERS[1]] - L[MOUTH_CORNERS[0]]))
    dist = np.linalg.norm(V[:, None] - L[sorted(lips)][None], axis=2).min(axis=1)
    w = _smooth_weight(dist, 0.5 * half)
    w[lv[sorted(lips)]] = 1.0
    dx = V[:, 0] - centre[0]
    B[3, :, 0] = w * dx
    B[3, :, 1] = w * 0.3 * np.abs(dx)

    # brows: up, with the forehead above them fading out
    for k, side in enumerate(("left", "right")):
        brow = lv[list(BROW_POINTS[side])]
        dist = np.linalg.norm(V[:, None] - V[brow][None], axis=2).min(axis=1)
        w = _smooth_weight(dist, 0.12 * size) * free * (V[:, 1] > V[brow, 1].min() - 0.05 * size)
        w[brow] = 1.0
        B[4 + k, :, 1] = w

    # gaze: both irises translate
    iris = lv[[*RIGHT_IRIS, *LEFT_IRIS]]
    B[6, iris, 0] = 1.0
    B[7, iris, 1] = 1.0

    # unit response (a coefficient of 1 changes its signal by 1) for all but the eyelids; a blendshape that would
    # need vertices to move more than MAX_DISPLACEMENT face sizes per unit is degenerate on this mesh: left out (zero)
    J = np.einsum("kld,jld->kj", signal_operator(size), B[:, lv])
    for k in range(len(NAMED_EXPRESSIONS)):
        gain = 1.0 if k < 2 else 1.0 / J[k, k] if abs(J[k, k]) > 1e-12 else np.inf
        reach = np.linalg.norm(B[k], axis=1).max() * abs(gain) / size
        if not np.isfinite(reach) or reach > MAX_DISPLACEMENT:
            log.warning("model %r: named blendshape %s is degenerate on its neutral mesh (%.3g face sizes per unit); left out",
                        model.name, NAMED_EXPRESSIONS[k], reach)  # fmt: skip
            B[k] = 0.0
        else:
            B[k] *= gain
    return B


def _limits(L: np.ndarray, L0: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame bounds (T, K) of each signal (face sizes) for current landmarks ``L`` (T, 478, 3) and the neutral
    ``L0`` (478, 3); the eyelid pairs' own no-crossing limit is applied separately."""
    s0 = named_signals(L0, size)
    T, K = len(L), len(NAMED_EXPRESSIONS)
    lo, hi = np.full((T, K), -np.inf), np.full((T, K), np.inf)
    lo[:, :2], hi[:, :2] = 0.0, EYE_OPEN_LIMIT * np.maximum(s0[:2], 0)
    lo[:, 2], hi[:, 2] = 0.0, MOUTH_OPEN_LIMIT
    lo[:, 3], hi[:, 3] = s0[3] * (1 + WIDTH_LIMITS[0]), s0[3] * (1 + WIDTH_LIMITS[1])
    lo[:, 4:6], hi[:, 4:6] = s0[4:6] - BROW_LIMIT, s0[4:6] + BROW_LIMIT
    eye_w = np.mean([np.linalg.norm(L0[a] - L0[b]) for a, b in EYE_CORNERS.values()]) / size
    for k, g in ((6, GAZE_LIMITS[0]), (7, GAZE_LIMITS[1])):
        lo[:, k], hi[:, k] = -g * eye_w, g * eye_w
    return lo, hi


def solve_named(current: np.ndarray, desired: np.ndarray, J: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Coefficients (T, K) with ``current + c Jᵀ ≈ desired`` (least squares), ``c_lo ≤ c ≤ c_hi`` (T, K) each:
    projected Gauss–Seidel over all frames at once (J is nearly diagonal: each blendshape moves its own signal)."""
    c = np.zeros_like(current)
    G, diag = J.T @ J, np.maximum(np.einsum("kj,kj->j", J, J), 1e-12)
    rhs = (desired - current) @ J  # (T, K)
    for _ in range(iterations):
        for j in range(J.shape[1]):
            r = rhs[:, j] - c @ G[:, j] + c[:, j] * G[j, j]
            c[:, j] = np.clip(r / diag[j], c_lo[:, j], c_hi[:, j])
    return c


def actor_signals(model: MorphableModel, p, q: np.ndarray) -> tuple[np.ndarray, float]:
    """(signals (T, K) of the expressions ``q`` (T, K_exp) on identity ``p``, the face size at rest), on the model's
    478 landmarks through its landmark basis (vertices or barycentric points: any model)."""
    basis = LandmarkBasis.from_model(model, all_landmarks=True)
    size = face_scale(basis.points(p, np.zeros((1, model.n_exp)))[0])
    return named_signals(basis.points(p, q), size), size


def _observed_range(s: np.ndarray, use: np.ndarray) -> np.ndarray:
    return np.percentile(s[use], 95, axis=0) - np.percentile(s[use], 5, axis=0) if use.any() else np.zeros(s.shape[1])


def desired_signals(s_src: np.ndarray, rest_s: np.ndarray, rest_t: np.ndarray, scaling: str, valid_s=None, s_tgt=None, valid_t=None) -> np.ndarray:
    """(T, K) the target's named signals that show the source's change (``s_src`` (T, K) about ``rest_s``) about the
    target's rest ``rest_t``, by ``scaling`` (module docstring; ``'range'`` needs the target's own track ``s_tgt``).
    The signals are :data:`NAMED_EXPRESSIONS` in order, or their first K (the eyes first)."""
    change = s_src - rest_s
    if scaling == "relative":  # the eyes close by the same fraction of their rest aperture
        change[:, :2] *= np.where(rest_s[:2] > 1e-6, rest_t[:2] / np.maximum(rest_s[:2], 1e-6), 1.0)
    elif scaling == "range":
        rs, rt = _observed_range(s_src, valid_s), _observed_range(s_tgt, valid_t)
        change = change * np.where(rs > 1e-9, rt / np.maximum(rs, 1e-9), 0.0)
    return rest_t + change


def named_transfer(source_model, target_model, p_s, q_s, qs_ref, valid_s, p_t, q_t, qt_ref, valid_t, q_out, scaling: str = "relative"):
    """(coefficients (T, K), out_of_range (T, K) bool, stats dict) of the named blendshapes that make the
    target (identity ``p_t``, expressions ``q_out`` (T, K_t)) show the source's named signal changes
    (``q_s`` (T, K_s) about ``qs_ref``) about the target's rest (``qt_ref``); the target's own track ``q_t``
    over ``valid_t`` gives its observed range. Module docstring."""
    if scaling not in NAMED_SCALINGS:
        raise ValueError(f"named scaling must be one of {list(NAMED_SCALINGS)}, got {scaling!r}")
    valid_s = np.asarray(valid_s, bool) & np.isfinite(q_s).all(axis=1)
    valid_t = np.asarray(valid_t, bool) & np.isfinite(q_t).all(axis=1)
    s_src, _ = actor_signals(source_model, p_s, np.where(valid_s[:, None], q_s, qs_ref))
    s_tgt, _ = actor_signals(target_model, p_t, np.where(valid_t[:, None], q_t, qt_ref))
    rest_s = actor_signals(source_model, p_s, qs_ref[None])[0][0]
    rest_t = actor_signals(target_model, p_t, qt_ref[None])[0][0]
    desired = desired_signals(s_src, rest_s, rest_t, scaling, valid_s, s_tgt, valid_t)

    lv = landmark_vertices(target_model)
    L0 = target_model.shape(p_t)[lv]
    size = face_scale(L0)
    B = named_blendshapes(target_model, p_t)
    J = np.einsum("kld,jld->kj", signal_operator(size), B[:, lv])  # (K signals, K blendshapes)
    Lq = target_model.shape(p_t, np.asarray(q_out, float))[..., lv, :]
    current = named_signals(Lq, size)
    lo, hi = _limits(Lq, L0, size)
    desired_c = np.clip(desired, lo, hi)
    diag = np.diag(J)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (lo - current) / diag, (hi - current) / diag
    c_lo = np.where(np.abs(diag) > 1e-12, np.fmin(a, b), -np.inf)
    c_hi = np.where(np.abs(diag) > 1e-12, np.fmax(a, b), np.inf)
    for k, side in enumerate(("left", "right")):  # each lid pair's gap stays ≥ 0 (no crossing)
        up, dn = [u for u, _ in LID_PAIRS[side]], [b for _, b in LID_PAIRS[side]]
        gap = Lq[:, up, 1] - Lq[:, dn, 1]  # (T, 7)
        closing = -B[k, lv[up], 1] + B[k, lv[dn], 1]  # gap lost per unit coefficient, (7,)
        pos = closing > 1e-12
        lim = np.min(np.where(pos, gap / np.where(pos, closing, 1.0), np.inf), axis=1)
        c_hi[:, k] = np.minimum(c_hi[:, k], np.maximum(lim, np.minimum(c_lo[:, k], 0.0)))
        c_lo[:, k] = np.minimum(c_lo[:, k], c_hi[:, k])
    c_lo, c_hi = np.minimum(c_lo, 0.0), np.maximum(c_hi, 0.0)  # never forced: 0 is always allowed
    c = solve_named(current, desired_c, J, c_lo, c_hi)
    c[~valid_s] = 0.0
    t_lo, t_hi = (s_tgt[valid_t].min(axis=0), s_tgt[valid_t].max(axis=0)) if valid_t.any() else (rest_t, rest_t)
    out_of_range = ((desired < t_lo - RANGE_TOLERANCE) | (desired > t_hi + RANGE_TOLERANCE)) & valid_s[:, None]
    moved = np.abs(c * diag) > RANGE_TOLERANCE  # frames whose signal the blendshape changed by more than the tolerance
    stats = {
        "scaling": scaling,
        "out_of_range_fraction": dict(zip(NAMED_EXPRESSIONS, np.round(out_of_range.mean(axis=0), 4).tolist())),
        "synthesised_fraction": dict(zip(NAMED_EXPRESSIONS, np.round(moved[valid_s].mean(axis=0), 4).tolist() if valid_s.any() else [0.0] * 8)),
    }
    return c, out_of_range, stats


def shared_eye_closure(source_model, target_model, p_s, q_s, qs_ref, valid_s, p_t, q_t, qt_ref, valid_t, q_out, components,
                       scaling: str = "relative") -> tuple[np.ndarray, dict]:  # fmt: skip
    """Named eye closure for models that share an expression basis (ICT: the coefficients are copied). ``q_out``
    (T, K) with the target's own eye components changed so that each eye shows the source's change of its
    ``eye_left`` / ``eye_right`` signal as :func:`named_transfer` wants it (``relative``: closing by the same fraction
    of its rest aperture). ``components`` (2, 2): ``[[close left, close right], [open left, open right]]`` (ICT's
    eyeBlink_L/R, eyeWide_L/R). A copied coefficient moves the lid by the same distance on every face, which closes a
    wider eye by less: d6's eyes, 1.5 times d3's, stayed half open in d3's blinks.

    Per eye and frame the closing component takes the change; where that would take it below 0 (an eye opening
    wider than the copy shows), it stops at 0 and the opening component takes the rest. The closing component may
    pass 1, up to :data:`CLOSING_LIMIT` (ICT's eyeBlink = 1 closes the eye it was made on; a wider one needs more),
    the opening one stays within [0, 1], neither is moved out of the range the copy had when it already was outside;
    the wanted signal is bounded like the named blendshapes' (the lid gap between 0 and 1.5× the rest face's), so
    the lids never cross. Works on any landmark correspondence (ICT's barycentric landmarks too),
    through the models' landmark bases."""
    close, opening = np.asarray(components, np.int64)
    valid_s = np.asarray(valid_s, bool) & np.isfinite(q_s).all(axis=1)
    valid_t = np.asarray(valid_t, bool) & np.isfinite(q_t).all(axis=1)

    def eyes(model, p, q):  # (T, 2): eye_left, eye_right
        return actor_signals(model, p, q)[0][:, :2]

    s_src = eyes(source_model, p_s, np.where(valid_s[:, None], q_s, qs_ref))
    rest_s, rest_t = eyes(source_model, p_s, qs_ref)[0], eyes(target_model, p_t, qt_ref)[0]
    s_tgt = eyes(target_model, p_t, np.where(valid_t[:, None], q_t, qt_ref))
    desired = desired_signals(s_src, rest_s, rest_t, scaling, valid_s, s_tgt, valid_t)
    desired = np.clip(desired, 0.0, EYE_OPEN_LIMIT * np.maximum(rest_t, 0.0))
    need = desired - eyes(target_model, p_t, q_out)  # (T, 2) signal change wanted
    out = np.array(q_out, float)
    for ids, top in ((close, CLOSING_LIMIT), (opening, 1.0)):  # the closing component first, the opening one takes the rest
        unit = np.zeros((3, out.shape[1]))
        unit[[0, 1], ids] = 1.0
        J = np.diag(eyes(target_model, p_t, unit)[:2] - eyes(target_model, p_t, unit)[2])  # each eye's signal per unit of its own component
        usable = np.abs(J) > 1e-12
        w = out[:, ids]
        new = np.clip(w + np.where(usable, need / np.where(usable, J, 1.0), 0.0), np.minimum(w, 0.0), np.maximum(w, top))
        new[~valid_s] = w[~valid_s]
        need = need - (new - w) * J
        out[:, ids] = new
    change = np.abs(out[:, close] - q_out[:, close]) + np.abs(out[:, opening] - q_out[:, opening])
    stats = {"scaling": scaling, "components": np.asarray(components).tolist(),
             "changed_fraction": np.round((change > 1e-3)[valid_s].mean(axis=0), 4).tolist() if valid_s.any() else [0.0, 0.0],
             "mean_abs_change": np.round(change[valid_s].mean(axis=0), 4).tolist() if valid_s.any() else [0.0, 0.0],
             "unreached_fraction": np.round((np.abs(need) > RANGE_TOLERANCE)[valid_s].mean(axis=0), 4).tolist() if valid_s.any() else [0.0, 0.0]}  # fmt: skip
    return out, stats


def named_landmarks(model: MorphableModel, p, q: np.ndarray, camera: np.ndarray, coefficients: np.ndarray | None) -> np.ndarray:
    """Image positions (T, 478, 3) of the detector landmarks of a transfer's mesh (expressions ``q`` plus the named
    ``coefficients``, either may be all zero) under ``camera`` (T, 7): what the pair render draws."""
    v = model.shape(p, np.asarray(q, float))
    offsets = None if coefficients is None else named_offsets(model, p, coefficients)
    return model.landmark_points(project(v if offsets is None else v + offsets, np.asarray(camera, float)))


def named_offsets(model: MorphableModel, p, coefficients: np.ndarray) -> np.ndarray | None:
    """Per-frame vertex offsets (T, N, 3) of named ``coefficients`` (T, K) on identity ``p``; None when all are 0."""
    c = np.asarray(coefficients, float)
    if not c.size or not c.any():
        return None
    return np.tensordot(c, named_blendshapes(model, p), axes=(1, 0))
