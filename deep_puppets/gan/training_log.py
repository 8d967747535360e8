"""A training run's record of its losses: ``losses.csv`` (one row per logged iteration), the log line per row
(with the rate and ETA), and the loss curves ``losses.png``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

from .settings import TrainSettings

log = logging.getLogger("deep_puppets.gan")

LOSS_COLUMNS = ("loss_g", "g_gan_image", "g_gan_video", "g_fm", "g_l1", "g_warp", "g_texture", "d_image", "d_video")
CSV_COLUMNS = ("iteration", "elapsed_s", "it_per_s") + LOSS_COLUMNS + ("heldout_ecol",)


def trim_csv(path: Path, last_iteration: int) -> None:
    """Keep the header and the rows up to ``last_iteration`` (rows a killed run logged after its checkpoint go)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= last_iteration]
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_COLUMNS})


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves (G terms, D terms, held-out E_col) from the CSV into a PNG (matplotlib, Agg)."""
    import matplotlib  # here, not at the top: matplotlib and pandas only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    if df.empty:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 5))
    for col in ("loss_g", "g_gan_image", "g_gan_video", "g_fm", "g_l1", "g_warp", "g_texture"):
        if col in df and not (col == "g_texture" and (df[col].fillna(0) == 0).all()):  # no texture: no line
            axes[0].plot(df["iteration"], df[col], label=col)
    axes[0].set_yscale("symlog", linthresh=1e-2)
    for col in ("d_image", "d_video"):
        axes[1].plot(df["iteration"], df[col], label=col)
    ev = df.dropna(subset=["heldout_ecol"])
    axes[2].plot(ev["iteration"], ev["heldout_ecol"], "o-", label="held-out E_col")
    for ax, title in zip(axes, ("generator", "discriminators", "held-out photometric error")):
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("iteration", fontsize=10)
        ax.legend(fontsize=9.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)  # below: never over the lines
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class TrainingProgress:
    """Mean losses and training rate since the previous log line; one CSV row and one log line per report."""

    def __init__(self, s: TrainSettings, csv_path: Path, iteration: int):
        self.s, self.csv_path = s, csv_path
        self.t0 = self.t_last = time.perf_counter()
        self.it_last = iteration
        self.sums: dict[str, float] = {}

    def add(self, losses: dict) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def report(self, it: int, heldout_ecol: float | None = None) -> dict:
        now = time.perf_counter()
        n = max(it - self.it_last, 1)
        rate = (it - self.it_last) / max(now - self.t_last, 1e-9)
        row = {"iteration": it, "elapsed_s": round(now - self.t0, 3), "it_per_s": round(rate, 4)}
        row.update({k: v / n for k, v in self.sums.items()})
        if heldout_ecol is not None:
            row["heldout_ecol"] = heldout_ecol
        append_csv(self.csv_path, row)
        log.info("iter %d/%d  G %.4f (gan_i %.3f gan_v %.3f fm %.3f l1 %.4f warp %.4f texture %.4f)  D_I %.3f D_V %.3f  %.2f it/s  ETA %s%s",
                 it, self.s.iterations, *(row.get(k, float("nan")) for k in LOSS_COLUMNS), rate,
                 _fmt_eta((self.s.iterations - it) / max(rate, 1e-9)),
                 "" if heldout_ecol is None else f"  held-out E_col {heldout_ecol:.4f}")
        return row

    def restart(self, it: int) -> None:
        """Start the next interval (called after evaluation and checkpointing, which the rate leaves out)."""
        self.sums, self.t_last, self.it_last = {}, time.perf_counter(), it

