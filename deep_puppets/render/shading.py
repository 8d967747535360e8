"""The renderer's lighting: an order-2 spherical-harmonics basis rewritten in the 9 quadratic monomials that
the vertex shader evaluates (:mod:`deep_puppets.render.gl`), whatever the basis's constants, order and signs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def quadratic_monomials(normals: np.ndarray) -> np.ndarray:
    """The basis the shader evaluates (…, 9): ``1, x, y, z, xy, yz, xz, x² - y², 3z² - 1``.

    On the unit sphere these span every polynomial of degree ≤ 2, i.e. every order-2 SH basis.
    """
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return np.stack([np.ones_like(x), x, y, z, x * y, y * z, x * z, x * x - y * y, 3.0 * z * z - 1.0], axis=-1)


def fibonacci_sphere(n: int = 256) -> np.ndarray:
    """``n`` deterministic, evenly spread unit vectors (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def quadratic_basis_matrix(sh_basis: Callable) -> np.ndarray:
    """Matrix ``M`` (9, 9) with ``sh_basis(n) = quadratic_monomials(n) @ M`` for unit normals ``n``.

    Shading ``sh_basis(n) @ sh`` is then ``quadratic_monomials(n) @ (M @ sh)``: the shader needs only the 9×3
    product, whatever the constants, order and signs of the basis. Raises ``ValueError`` when ``sh_basis`` is
    not an order-2 (quadratic) basis of 9 functions.
    """
    n = fibonacci_sphere(256)
    target = np.asarray(sh_basis(n), dtype=np.float64)
    if target.shape != (len(n), 9):
        raise ValueError(f"sh_basis must map (K, 3) normals to (K, 9), got {target.shape}")
    mono = quadratic_monomials(n)
    m, *_ = np.linalg.lstsq(mono, target, rcond=None)
    err = np.abs(mono @ m - target).max()
    if err > 1e-6 * max(1.0, np.abs(target).max()):
        raise ValueError(f"sh_basis is not a quadratic polynomial of the normal (fit error {err:.2g})")
    return m
