"""A quick, reduced-protocol screen of generator variants on one target of an existing results folder.

Not the issue-16 protocol (that is `snakemake experiments`: the render size, the full budget, the full-resolution
evaluation). This trains each variant for a fixed number of iterations on the target's own conditioning and flow
files resized to ``--size`` (default 128²: a variant in ~5 minutes on 2 cores), then scores the face region
(the evaluation's blend mask >= 0.5) of the head crop as PSNR on every third held-out frame and on every ninth
training frame, with the mean training crop as a floor. One JSON line per run is appended to ``--out``; the table
of all lines so far is printed at the end.

Variants are JSON objects of ``gan`` keys (e.g. ``{"lr_g": 5e-4}``, ``{"ema_decay": 0.995}``) plus three inputs and
losses tried for issue 16 that are not in the package (they did not win; see README "Experiments"):

* ``"lambda_face": w`` — an extra L1 term over the face mask, weight w;
* ``"context": 1`` — the real crop outside the blend mask (the plate the composite keeps) as 3 more input channels;
* ``"reference": 1`` — the real crop of the nearest training frame by fitted expression and pose (at least 15
  frames away, so training never sees a near copy) as 3 more input channels;
* ``"augment": z`` — each training clip zoomed by a random factor in [1 - z, 1 + z] and shifted by up to z/2 of
  the crop (the same similarity for every frame of the clip, its conditioning, real frames and flow).

    .venv/bin/python scripts/screen_generator.py RESULTS TARGET --variant default '{}' --variant ema '{"ema_decay": 0.995}' --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from deep_puppets.composite import face_alpha
from deep_puppets.evaluation import FACE_LEVEL
from deep_puppets.gan.baselines import standardise
from deep_puppets.gan.data import ClipDataset, batch_items, resize, split_frames, stack_window, window_indices
from deep_puppets.gan.headroom import region_psnr
from deep_puppets.gan.inference import build_generator, to_uint8
from deep_puppets.gan.settings import TrainSettings
from deep_puppets.gan.trainer import Trainer, seed_everything
from deep_puppets.tracks import read_track

STREAMS = ("colour", "correspondence", "gaze")
REFERENCE_GAP = 15


def load(results: Path, target: str, size: int):
    folder = results / "videos" / target
    with h5py.File(folder / "conditioning.h5") as fc, h5py.File(folder / "gan" / "flow.h5") as ff:
        cond = {k: np.stack([resize(x, (size, size)) for x in fc[k][()]]) for k in STREAMS}
        frames = np.stack([resize(x, (size, size)) for x in ff["frames"][()]])
        scale = size / ff["flow"].shape[1]
        flow = np.stack([cv2.resize(f.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) * scale for f in ff["flow"][()]])
        valid = fc["valid"][()]
    track, _ = read_track(folder / "track.h5")
    return cond, frames, flow.astype(np.float32), valid & track.valid, np.hstack([track.q, track.camera])


def extra_inputs(kind: str, frames, alpha, features, train) -> np.ndarray:
    """(T, 3, S, S) float32: the context (the crop outside the blend mask) or the nearest training crop."""
    img = frames.astype(np.float32) / 255.0
    if kind == "context":
        out = img * (alpha == 0)[..., None]
    else:
        z = standardise(features, train)
        ref = np.empty(len(frames), np.int64)
        for t in range(len(frames)):
            d = ((z[train] - z[t]) ** 2).sum(1)
            d[np.abs(train - t) < REFERENCE_GAP] = np.inf
            ref[t] = train[np.argmin(d)]
        out = img[ref]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def augment(batch: dict, zoom: float, rng) -> dict:
    """The clips of ``batch`` under a random similarity each (zoom in [1 - zoom, 1 + zoom], shift up to zoom / 2
    of the crop); flow vectors scale with the zoom. ``theta`` (B, 2, 3) is kept for the face mask."""
    import torch.nn.functional as F

    cond, real, flow = (torch.from_numpy(np.ascontiguousarray(batch[k])).float() for k in ("cond", "real", "flow"))
    b, k = real.shape[:2]
    z = rng.uniform(1 - zoom, 1 + zoom, b)
    shift = rng.uniform(-zoom, zoom, (b, 2))  # in [-1, 1] grid units: half of the crop per unit
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = torch.from_numpy(1 / z).float()  # output magnified by z
    theta[:, :, 2] = torch.from_numpy(shift).float()
    x = torch.cat([cond.flatten(1, 2), real.flatten(1, 2), flow.flatten(1, 2)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    nc, nr = cond.shape[2] * k, 3 * k
    out = dict(batch)
    out["cond"] = y[:, :nc].unflatten(1, (k, -1)).numpy()
    out["real"] = y[:, nc:nc + nr].unflatten(1, (k, 3)).numpy()
    out["flow"] = (y[:, nc + nr:].unflatten(1, (k, 2)) * torch.from_numpy(z).float().view(b, 1, 1, 1, 1)).numpy()
    out["theta"] = theta
    return out


def augment_mask(mask: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    b, k = mask.shape[:2]
    x = mask.flatten(1, 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False).unflatten(1, (k, 1))


def run(args, name: str, variant: dict, seed: int, data) -> dict:
    cond, frames, flow, valid, features = data
    variant = dict(variant)
    lambda_face = float(variant.pop("lambda_face", 0.0))
    kind = next((k for k in ("context", "reference") if variant.pop(k, 0)), None)
    zoom = float(variant.pop("augment", 0.0))
    aug_rng = np.random.default_rng([seed, 7])
    s = TrainSettings(**{"size": (args.size, args.size), "di_num_D": 3 if args.size >= 256 else 2, "iterations": args.iterations,
                         "threads": args.threads, **variant, "seed": seed})
    train, held = split_frames(len(frames), s.held_out_fraction)
    train = train[valid[train]]
    alpha = np.stack([face_alpha(c) for c in cond["colour"]])
    extra = extra_inputs(kind, frames, alpha, features, train) if kind else None
    dataset = ClipDataset(cond, frames, flow, train, s.streams, s.size, s.window, s.clip_len)
    torch.set_num_threads(args.threads)
    seed_everything(seed)

    class Screened(Trainer):
        def step(self, batch):
            self._face = torch.from_numpy((alpha[batch["frames"]] >= FACE_LEVEL).astype(np.float32)).unsqueeze(2)
            if extra is not None:  # in front, so that the current conditioning stays the last channels
                batch = {**batch, "cond": np.concatenate([extra[batch["frames"]], batch["cond"]], 2)}
            if zoom:
                batch = augment(batch, zoom, aug_rng)
                self._face = augment_mask(self._face, batch["theta"])
            return super().step(batch)

        def _generator_losses(self, cur, real, flow, fake, fv):
            parts = super()._generator_losses(cur, real, flow, fake, fv)
            if lambda_face:
                face = ((fake.float() - real) .abs() * self._face).sum() / (3 * self._face.sum()).clamp_min(1)
                parts["loss_g"] = parts["loss_g"] + lambda_face * face
            return parts

    trainer = Screened(s, "cpu")
    if extra is not None:  # G takes 3 more channels (built like one fed-back frame)
        trainer.G = build_generator(dataclasses.replace(s, prev_frames=s.prev_frames + 1))
        trainer.opt_G = torch.optim.Adam(trainer.G.parameters(), lr=s.lr_g, betas=(s.beta1, s.beta2))
        if trainer.G_ema is not None:
            import copy

            trainer.G_ema = copy.deepcopy(trainer.G).eval().requires_grad_(False)
    t0 = time.perf_counter()
    for i in range(s.iterations):
        trainer.step(dataset.batch(batch_items(i, s.batch_size, len(dataset), seed)))
        if (i + 1) % 100 == 0:
            print(f"{name} seed {seed}: {i + 1}/{s.iterations} iterations, {time.perf_counter() - t0:.0f} s", flush=True)
    seconds = time.perf_counter() - t0
    G = trainer.generator.eval()

    @torch.no_grad()
    def score(ts) -> float:
        values = []
        for t in ts:
            x = stack_window(cond, s.streams, window_indices(int(t), s.window), s.size)
            if extra is not None:
                x = np.concatenate([extra[t], x], 0)
            fake = to_uint8(G(torch.from_numpy(x)[None])[0])
            values.append(region_psnr(fake, frames[t], alpha[t] >= FACE_LEVEL))
        return float(np.nanmean(values))

    scored = held[valid[held]][::3]
    mean_crop = frames[train].astype(np.float32).mean(0).round().astype(np.uint8)
    extras = {**({"lambda_face": lambda_face} if lambda_face else {}), **({kind: 1} if kind else {}), **({"augment": zoom} if zoom else {})}
    return {"name": name, "variant": {**variant, **extras},
            "seed": seed, "size": args.size, "iterations": s.iterations, "seconds": round(seconds),
            "held_out_face_psnr": round(score(scored), 3), "training_face_psnr": round(score(train[::9]), 3),
            "mean_crop_face_psnr": round(float(np.nanmean([region_psnr(mean_crop, frames[t], alpha[t] >= FACE_LEVEL) for t in scored])), 3),
            "held_out_frames": len(scored)}


def table(lines: list[dict]) -> str:
    by = {}
    for r in lines:
        by.setdefault(r["name"], []).append(r)
    rows = ["| variant | seeds | held-out face PSNR (mean ± sd) | training face PSNR | minutes |", "|---|---|---|---|---|"]
    for name, rs in by.items():
        h = np.array([r["held_out_face_psnr"] for r in rs])
        tr = np.array([r["training_face_psnr"] for r in rs])
        rows.append(f"| {name} `{json.dumps(rs[0]['variant'])}` | {', '.join(str(r['seed']) for r in rs)} | {h.mean():.2f} ± {h.std():.2f} | "
                    f"{tr.mean():.2f} | {np.mean([r['seconds'] for r in rs]) / 60:.1f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("target")
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("screen.jsonl"))
    args = ap.parse_args()
    data = load(args.results, args.target, args.size)
    for name, spec in args.variant or [("default", "{}")]:
        for seed in args.seeds:
            line = run(args, name, json.loads(spec), seed, data)
            print(json.dumps(line), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")
    print(table([json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]))


if __name__ == "__main__":
    main()
