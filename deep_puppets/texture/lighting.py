"""The spherical-harmonics lighting model of the face (conventions: :mod:`deep_puppets.texture`): the 9 real SH
of a unit normal (irradiance-folded or plain), SH coefficients of a directional light, the dominant light
direction and the Lambertian shading ``albedo × (sh_basis(n) @ sh)`` that the renderer reproduces."""

from __future__ import annotations

import math

import numpy as np

SH_ORDER_DOC = "1; y, z, x; xy, yz, 3z^2-1, xz, x^2-y^2"
SH_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])  # degree l of each coefficient
# Normalisation constants of the real SH (orthonormal on the unit sphere) in the order of SH_ORDER_DOC:
# 0.282095, 0.488603 ×3, 1.092548 ×2, 0.315392, 1.092548, 0.546274.
_Y0, _Y1, _Y2 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi)), math.sqrt(15 / (4 * math.pi))
SH_Y_CONST = np.array([_Y0, _Y1, _Y1, _Y1, _Y2, _Y2, math.sqrt(5 / (16 * math.pi)), _Y2, _Y2 / 2])
SH_A_HAT = np.array([math.pi, 2 * math.pi / 3, math.pi / 4])  # Â_l: clamped-cosine convolution per band
# Folded (Ramamoorthi–Hanrahan): 0.886227, 1.023327 ×3, 0.858086 ×2, 0.247708, 0.858086, 0.429043.
SH_IRRADIANCE_CONST = SH_Y_CONST * SH_A_HAT[SH_BAND]
SH_DC_UNIT = 1.0 / SH_IRRADIANCE_CONST[0]  # DC coefficient of a uniform environment with irradiance 1


def sh_basis(normals: np.ndarray, irradiance: bool = True) -> np.ndarray:
    """The 9 real SH of unit directions (…, 3) → (…, 9), order :data:`SH_ORDER_DOC`.

    With ``irradiance=True`` (default) each function is multiplied by the Ramamoorthi–Hanrahan factor
    ``Â_l`` (:data:`SH_IRRADIANCE_CONST`), so ``sh_basis(n) @ L`` is the irradiance at normal ``n`` of an
    environment with radiance SH coefficients ``L`` (9, C). With ``irradiance=False`` it is the plain
    orthonormal basis ``Y_lm`` (use it to project a radiance onto ``L``).
    """
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = np.ones_like(x)
    raw = np.stack([one, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], axis=-1)
    return raw * (SH_IRRADIANCE_CONST if irradiance else SH_Y_CONST)


def sh_directional(direction, color=1.0, ambient=0.0) -> np.ndarray:
    """SH coefficients (9, 3) of a distant light towards ``direction`` plus a uniform ambient.

    ``direction`` points from the surface towards the light (camera coordinates); ``color`` (scalar or (3,))
    is the irradiance it gives a surface facing it, ``ambient`` (scalar or (3,)) the irradiance of the uniform
    part. The shading ``sh_basis(n) @ L`` is the order-2 approximation of ``ambient + color · max(n·d, 0)``.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    col = np.broadcast_to(np.asarray(color, dtype=np.float64), (3,))
    amb = np.broadcast_to(np.asarray(ambient, dtype=np.float64), (3,))
    L = sh_basis(d, irradiance=False)[:, None] * col[None, :]
    L[0] += amb * SH_DC_UNIT
    return L


def sh_light_direction(sh: np.ndarray) -> np.ndarray:
    """Unit direction (camera coordinates) of the dominant light: the channel-mean l=1 band as (x, y, z)."""
    l1 = np.asarray(sh, dtype=np.float64)[1:4].mean(axis=1)  # coefficients of y, z, x
    d = np.array([l1[2], l1[0], l1[1]])
    nrm = np.linalg.norm(d)
    return d / nrm if nrm > 0 else d


def shade(albedo: np.ndarray, normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Lambertian colours ``albedo × (sh_basis(normals) @ sh)``: (N, 3), (…, N, 3), (9, 3) → (…, N, 3).

    Not clipped (a renderer writing 8-bit images clips to [0, 1]).
    """
    return np.asarray(albedo) * (sh_basis(normals) @ np.asarray(sh, dtype=np.float64))
