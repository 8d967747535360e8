"""3D morphable face models: one type (:class:`MorphableModel`), several providers (loaders/builders)."""

from .base import MorphableModel

__all__ = ["MorphableModel"]
