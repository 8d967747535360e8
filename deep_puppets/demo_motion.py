"""The demo clips' motion: seeded smooth curves of head angles, translation, scale and expressions.

:func:`motion_script` draws head yaw/pitch/roll (degrees), 2D translation, scale and the three expression
scalars in [0, 1] (:data:`deep_puppets.demo_rig.EXPRESSIONS`) of one clip kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("source", "target")  # the demo clips; the position seeds each one's motion


def smooth_curve(rng: np.random.Generator, t: np.ndarray, amplitude: float, freqs=(0.15, 0.6),
                 n_waves: int = 3) -> np.ndarray:
    """A sum of ``n_waves`` sinusoids (random frequencies in ``freqs`` Hz, phases, weights) scaled so its
    largest absolute value is ``amplitude``."""
    f = rng.uniform(*freqs, n_waves)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    weight = rng.uniform(0.5, 1.0, n_waves)
    c = (weight[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + phase[:, None])).sum(0)
    peak = np.abs(c).max()
    return amplitude * c / peak if peak > 0 else c


def blink_curve(rng: np.random.Generator, t: np.ndarray, interval=(1.3, 2.8), close_s: float = 0.05) -> np.ndarray:
    """Blinks in [0, 1]: quick closures (Gaussian, ``close_s`` closing, 1.6x slower opening) at random
    intervals; the first comes 0.3-1.0 s in."""
    b = np.zeros_like(t)
    t0 = rng.uniform(0.3, 1.0)
    while t0 < t[-1] + 0.5:
        width = np.where(t < t0, close_s, 1.6 * close_s)
        b = np.maximum(b, np.exp(-0.5 * ((t - t0) / width) ** 2))
        t0 += rng.uniform(*interval)
    return b


def talk_curve(rng: np.random.Generator, t: np.ndarray, amplitude: float, rate: float = 3.5) -> np.ndarray:
    """Talking-like mouth opening in [0, amplitude]: syllables at about ``rate`` Hz under a phrase envelope."""
    dt = np.diff(t, prepend=t[0])
    freq = rate * (1 + smooth_curve(rng, t, 0.25))
    phase = np.cumsum(2 * np.pi * freq * dt) + rng.uniform(0, 2 * np.pi)
    syllables = 0.5 - 0.5 * np.cos(phase)
    envelope = np.clip(0.65 + 0.45 * smooth_curve(rng, t, 1.0, freqs=(0.2, 0.5)), 0, 1)
    return amplitude * syllables * envelope


@dataclass(frozen=True)
class MotionStyle:
    """Amplitudes of one clip's motion: head angles (degrees), translation (fraction of the frame size),
    scale change (fraction), talking mouth, wide mouth opening, brow raise (expression units)."""

    yaw: float
    pitch: float
    roll: float
    shift: float
    zoom: float
    talk: float
    wide_mouth: float
    brow: float


STYLES = {
    "target": MotionStyle(yaw=7, pitch=4, roll=5, shift=0.012, zoom=0.025, talk=0.5, wide_mouth=0.0, brow=0.25),
    "source": MotionStyle(yaw=14, pitch=8, roll=9, shift=0.025, zoom=0.05, talk=0.25, wide_mouth=0.75, brow=1.0),
}


def motion_script(kind: str, n_frames: int, fps: float, size: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded smooth motion of clip ``kind``: ``yaw_pitch_roll_deg`` (T, 3), ``translation`` (T, 2) pixels,
    ``scale`` (T,), ``expression`` (T, 3) in [0, 1] (order :data:`EXPRESSIONS`)."""
    st = STYLES[kind]
    rng = np.random.default_rng([int(seed), KINDS.index(kind)])
    t = np.arange(n_frames) / float(fps)
    ypr = np.stack([smooth_curve(rng, t, a) for a in (st.yaw, st.pitch, st.roll)], axis=1)
    translation = np.stack([smooth_curve(rng, t, st.shift * size) for _ in range(2)], axis=1)
    scale = 1 + smooth_curve(rng, t, st.zoom)
    mouth = talk_curve(rng, t, st.talk)
    if st.wide_mouth:
        mouth = mouth + st.wide_mouth * (0.5 + 0.5 * smooth_curve(rng, t, 1.0, freqs=(0.3, 0.8), n_waves=2))
    blink = blink_curve(rng, t)
    brow = st.brow * (0.5 + 0.5 * smooth_curve(rng, t, 1.0, freqs=(0.2, 0.6), n_waves=2))
    expression = np.clip(np.stack([mouth, blink, brow], axis=1), 0, 1)
    return {"yaw_pitch_roll_deg": ypr, "translation": translation, "scale": scale, "expression": expression}
