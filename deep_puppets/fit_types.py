"""What a fit takes and gives: its settings (:class:`FitSettings`, with the robust losses they name), its result
(:class:`FitResult`: a fitted segment or a merged track) and its error (:class:`FitError`).

Numpy only, so that modules reading fits (tracks, transfer, framing, the fit files) do not import the solver
(:mod:`deep_puppets.fitting`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .errors import ConfigError, DeepPuppetsError


class FitError(DeepPuppetsError):
    """The fit cannot run on this input (e.g. no frame with a face)."""


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FitSettings:
    """Weights and stopping rules of the fit; every length is in pixels of the video frame."""

    lambda_q: float = 1.0  # expression smoothing (Whittaker λ per landmark track, see deep_puppets.fitting; 0 = off)
    lambda_c: float = 10.0  # camera smoothing (same units)
    iterations: int = 15  # most Levenberg-Marquardt iterations
    tolerance: float = 1e-3  # stop when an iteration lowers the energy by less than this per landmark (σ² units)
    sigma_px: float = 2.0  # landmark noise σ; weighs the data against the model priors
    robust: str = "huber"  # "huber" or "geman_mcclure" (IRLS), "none" for plain least squares
    robust_px: float = 5.0  # robust scale: residuals beyond it count less than quadratically
    z_weight: float = 0.1  # weight of the detector depth (relative to x, y) in the landmark distance
    id_prior: float = 1.0  # weight of the identity prior ‖p/id_std‖²
    exp_prior: float = 1.0  # weight of the expression prior ‖q/exp_std‖²
    hold: float = 1e-3  # faceless frames between faces: pull of the camera to its start value (× U, one frame's data)
    activation_bounds: float = 0.0  # > 0 keeps activation coefficients (ICT's ARKit shapes) in [0, 1] (× U per frame); 0 = off

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
                raise ConfigError(f"fit.{f.name} must be a number, got {v!r}")
        for name in ("lambda_q", "lambda_c", "tolerance", "z_weight", "id_prior", "exp_prior", "hold", "activation_bounds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"fit.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("sigma_px", "robust_px"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"fit.{name} must be > 0, got {getattr(self, name)!r}")
        if self.robust not in ROBUST:
            raise ConfigError(f"fit.robust must be one of {sorted(ROBUST)}, got {self.robust!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ConfigError(f"fit.iterations must be a non-negative integer, got {self.iterations!r}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> FitSettings:
        """Settings from the ``fit`` section of the config; missing keys take the defaults above."""
        from .config import settings_from_section

        return settings_from_section(cls, "fit", cfg)

    @classmethod
    def from_fit_section(cls, section: dict) -> FitSettings:
        """The fit's settings from the whole ``fit`` section (``identity_frames`` is the identity job's, not the fit's)."""
        return cls.from_config({k: v for k, v in section.items() if k != "identity_frames"})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)


def _huber(e, k):
    rho = np.where(e <= k, e * e, 2 * k * e - k * k)
    return rho, np.where(e <= k, 1.0, k / np.maximum(e, 1e-300))


def _geman_mcclure(e, k):
    f = 1 / (1 + (e / k) ** 2)
    return e * e * f, f * f


def _least_squares(e, k):
    return e * e, np.ones_like(e)


# ρ(e) with ρ = e² near 0, and the IRLS weight ψ = ρ'(e) / 2e ∈ (0, 1]
ROBUST = {"huber": _huber, "geman_mcclure": _geman_mcclure, "none": _least_squares}


# ---------------------------------------------------------------------------------------------- results


@dataclass
class FitResult:
    """A fitted segment (or a merged track): everything the renderer and the transfer need."""

    p: np.ndarray  # (K_id,) identity
    q: np.ndarray  # (T, K_exp) expression
    camera: np.ndarray  # (T, 7) rx, ry, rz, tx, ty, tz, scale (camera.CAMERA_FIELDS)
    valid: np.ndarray  # (T,) bool: the detector found a face (others are bridged, not measured)
    residual: np.ndarray  # (T,) mean 2D landmark error in pixels; NaN where not valid
    iterations: int = 0
    energy: float = float("nan")
    converged: bool = False
    settings: FitSettings = field(default_factory=FitSettings)

    @property
    def n_frames(self) -> int:
        return len(self.valid)

