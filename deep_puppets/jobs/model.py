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
        v = self.identity + np.tensordot(self.q[t], self.model.exp_basis, axes=(0, 0)) if self.model.n_exp else self.identity
        if self.named is not None:
            v = v + np.tensordot(self.named[t], self.named_basis, axes=(0, 0))
        return project(v, self.camera[t])


class LandmarkPoints:
    """The 478 detector points (irises for the gaze image) of :class:`ScreenVertices`, lazily per frame."""

    def __init__(self, screen: ScreenVertices):
        self.screen = screen

    def __len__(self):
        return len(self.screen)

    def __getitem__(self, t):
        return self.screen.model.landmark_points(self.screen[t])
