"""The one morphable-model type every provider returns and the fitter consumes.

Shape of a face:  ``V = mean + Σ_i p_i · id_basis[i] + Σ_j q_j · exp_basis[j]``  (N vertices × 3).
Coefficients are in *model units*: the priors are Gaussian with standard deviations ``id_std`` / ``exp_std``
(so ``p_i / id_std[i]`` is the number of standard deviations). Lengths are in the model's own unit
(``unit`` says which); the fitter's camera absorbs the scale.

Detector correspondence: each of the 478 MediaPipe landmarks maps to a point on the mesh given as a
triangle and barycentric weights (``lm_tri``, ``lm_bary``); a landmark that sits on a vertex has weights
(1, 0, 0). ``lm_weight`` (478,) lets a provider switch off landmarks it cannot place (weight 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

N_LANDMARKS = 478


@dataclass(frozen=True, eq=False)
class MorphableModel:
    name: str
    mean: np.ndarray  # (N, 3) float64
    id_basis: np.ndarray  # (K_id, N, 3) float64, shape change per unit coefficient
    id_std: np.ndarray  # (K_id,) prior standard deviations of identity coefficients
    exp_basis: np.ndarray  # (K_exp, N, 3)
    exp_std: np.ndarray  # (K_exp,)
    triangles: np.ndarray  # (F, 3) int32, 0-based, counter-clockwise seen from the front
    lm_tri: np.ndarray  # (478,) int64 triangle of each detector landmark
    lm_bary: np.ndarray  # (478, 3) float64 barycentric weights in that triangle
    exp_names: tuple = ()  # names of the expression components where they have meaning (ARKit for ICT)
    lm_weight: np.ndarray | None = None  # (478,) per-landmark confidence in the correspondence, default 1
    unit: str = "unknown"
    albedo: np.ndarray | None = None  # (N, 3) mean albedo in [0, 1] when the model has one
    extra: dict = field(default_factory=dict)  # provider-specific arrays (e.g. iris vertices)

    def __post_init__(self):
        n = self.mean.shape[0]
        assert self.mean.shape == (n, 3)
        assert self.id_basis.ndim == 3 and self.id_basis.shape[1:] == (n, 3)
        assert self.exp_basis.ndim == 3 and self.exp_basis.shape[1:] == (n, 3)
        assert self.id_std.shape == (self.id_basis.shape[0],)
        assert self.exp_std.shape == (self.exp_basis.shape[0],)
        assert self.lm_tri.shape == (N_LANDMARKS,) and self.lm_bary.shape == (N_LANDMARKS, 3)

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[0]

    def shape(self, p=None, q=None) -> np.ndarray:
        """Vertices (N, 3) for identity ``p`` and expression ``q`` (``q`` may be (T, K_exp) → (T, N, 3))."""
        v = self.mean
        if p is not None and len(p):
            v = v + np.tensordot(np.asarray(p), self.id_basis, axes=(-1, 0))
        if q is not None and np.size(q):
            v = v + np.tensordot(np.asarray(q), self.exp_basis, axes=(-1, 0))
        return v

    def landmark_points(self, vertices: np.ndarray) -> np.ndarray:
        """The 478 detector points on a mesh ``vertices`` (..., N, 3) → (..., 478, 3)."""
        tri = self.triangles[self.lm_tri]  # (478, 3)
        return np.einsum("...lkd,lk->...ld", vertices[..., tri, :], self.lm_bary)

    def content_hash(self) -> str:
        """SHA-256 over every array that changes a fit (recorded in fit files)."""
        h = hashlib.sha256(self.name.encode())
        for a in (self.mean, self.id_basis, self.id_std, self.exp_basis, self.exp_std, self.triangles, self.lm_tri, self.lm_bary):
            a = np.ascontiguousarray(a)
            h.update(str(a.shape).encode() + str(a.dtype).encode())
            h.update(a.tobytes())
        return h.hexdigest()
