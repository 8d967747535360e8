"""Shared fixtures. Real clips and licensed models come from ../shared (beside the checkout) and the tests
that need them skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEP_PUPPETS_SHARED", REPO.parent / "shared"))


def shared_file(rel: str) -> Path:
    """Path of a file under ../shared, or skip the test when it is not there."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is only available on development machines)")
    return p


@pytest.fixture
def real_clip():
    return shared_file("data/videos/LivePortrait__d6.mp4")


@pytest.fixture
def ict_model_path():
    return shared_file("models/ict-facekit-light/ict_facekit_light_packed.npz")
