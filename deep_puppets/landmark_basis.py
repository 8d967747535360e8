"""The morphable model at the detector landmarks: :class:`LandmarkBasis` (the model restricted to the MediaPipe
landmarks it places, what the fit compares with the detections) and :func:`projected_landmarks` (a fit's model
landmarks in the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import project
from .fit_types import FitError, FitResult
from .models.base import MorphableModel
from .models.ict import activation_components


@dataclass(frozen=True)
class LandmarkBasis:
    """The morphable model restricted to the detector landmarks it places (weight > 0)."""

    index: np.ndarray  # (L,) which of the 478 detector landmarks
    weight: np.ndarray  # (L,) the model's confidence a_l
    mean: np.ndarray  # (L, 3)
    id_basis: np.ndarray  # (K_id, L, 3)
    exp_basis: np.ndarray  # (K_exp, L, 3)
    id_std: np.ndarray
    exp_std: np.ndarray
    activation: np.ndarray  # (K_exp,) bool: components that are activations in [0, 1]

    @classmethod
    def from_model(cls, model: MorphableModel, all_landmarks: bool = False) -> LandmarkBasis:
        w = np.ones(model.lm_tri.shape[0]) if model.lm_weight is None else np.asarray(model.lm_weight, float)
        index = np.arange(len(w)) if all_landmarks else np.flatnonzero(w > 0)
        if len(index) < 4:
            raise FitError(f"model {model.name!r} places fewer than 4 detector landmarks")
        tri = model.triangles[model.lm_tri[index]]  # (L, 3) vertex ids
        bary = model.lm_bary[index]

        def at(arr):  # (..., N, 3) -> (..., L, 3)
            return np.einsum("...lkd,lk->...ld", arr[..., tri, :], bary)

        return cls(index, w[index], at(model.mean), at(model.id_basis), at(model.exp_basis), model.id_std, model.exp_std,
                   activation_components(model))  # fmt: skip

    def points(self, p, q) -> np.ndarray:
        """Landmark positions (model frame): (T, L, 3) for p (K_id,) and q (T, K_exp)."""
        q = np.atleast_2d(np.asarray(q, float))
        base = self.mean if not len(p) else self.mean + np.tensordot(np.asarray(p, float), self.id_basis, 1)
        return base + (q @ self.exp_basis.reshape(len(self.exp_basis), -1)).reshape(len(q), -1, 3)


def projected_landmarks(model: MorphableModel, result: FitResult) -> np.ndarray:
    """Image positions (T, 478, 3) = (u, v, d) of the model landmarks of a fit; what the fit compares."""
    basis = LandmarkBasis.from_model(model, all_landmarks=True)
    return project(basis.points(result.p, result.q), result.camera)
