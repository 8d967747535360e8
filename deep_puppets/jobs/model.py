"""The morphable model a video is fitted with (its own person model or the configured model file), and its
per-frame mesh vertices on screen: what the texture, render, diagnostics, transfer and export jobs share."""

from __future__ import annotations

import numpy as np

from ..camera import project
from ..models.person import load_person_model
from ..models.registry import load_model
from ..named_expressions import named_blendshapes


def load_video_model(model_cfg: dict, model_file):
    """The morphable model a video is fitted with: its own person model, or the configured model file."""
    if model_cfg["type"] == "person":
        return load_person_model(model_file)
    spec = {"type": model_cfg["type"], "path": model_file, "allow_pickle": model_cfg["allow_pickle"], **model_cfg["options"]}
    return load_model(spec)


def screen_vertices(model, identity: np.ndarray, q: np.ndarray, camera: np.ndarray, named: np.ndarray | None = None,
                    named_basis: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """One frame's mesh vertices (N, 3) in image coordinates: ``identity`` (N, 3, ``model.shape(p)``) plus the
    expression ``q`` and, when given, named blendshape coefficients ``named`` on ``named_basis``
    (:func:`deep_puppets.named_expressions.named_blendshapes`), projected by ``camera`` (7,)."""
    v = identity + np.tensordot(q, model.exp_basis, axes=(0, 0)) if model.n_exp else identity
    if named is not None:
        v = v + np.tensordot(named, named_basis, axes=(0, 0))
    return project(v, camera)


class ScreenVertices:
    """Per-frame mesh vertices in image coordinates, computed lazily (dense models need not fit in memory)."""

    def __init__(self, model, p, q, camera, named=None):
        self.model, self.p, self.q, self.camera = model, np.asarray(p), np.asarray(q), np.asarray(camera)
        self.identity = model.shape(self.p)
        # named blendshape coefficients (T, K) of a transfer (deep_puppets.named_expressions), added when any is non-zero
        self.named = None if named is None or not np.any(named) else np.asarray(named, float)
        self.named_basis = None if self.named is None else named_blendshapes(model, self.p)

    def __len__(self):
        return len(self.q)

    def __getitem__(self, t):
        return screen_vertices(self.model, self.identity, self.q[t], self.camera[t], None if self.named is None else self.named[t], self.named_basis)


class LandmarkPoints:
    """The 478 detector points (irises for the gaze image) of :class:`ScreenVertices`, lazily per frame."""

    def __init__(self, screen: ScreenVertices):
        self.screen = screen

    def __len__(self):
        return len(self.screen)

    def __getitem__(self, t):
        return self.screen.model.landmark_points(self.screen[t])
