"""Benchmark of GAN training: iterations per second at 128² and 256², batch 1, on CPU and on CUDA if present.

One iteration is what :func:`deep_puppets.gan.train.train` does per step: assemble a batch of clips from
in-memory per-frame arrays (windows stacked and resized on the fly), generate the clip, one G update, one
D_I + D_V update. Synthetic data (random conditioning, random frames, zero flow: the arithmetic does not depend
on the content). The first ``--warmup`` iterations are not timed. ``it_per_s`` is 1 / the median iteration time
(robust to other jobs on a shared machine), ``it_per_s_best`` 1 / the fastest iteration (close to what a quiet
machine gives), ``it_per_s_mean`` the plain mean rate.

Usage: ``python benchmarks/gan.py [--threads 2] [--iters 12] [--sizes 128 256] [--set key=value ...]``
(``--set`` overrides :class:`~deep_puppets.gan.settings.TrainSettings`, e.g. ``--set gen_base=64``). On CUDA it also
times the settings suggested for GPUs (:data:`GPU_SETTINGS`). ``--channels-last`` puts the networks in channels-last
memory format (issue 16's "cheaper generator" candidates; measured slower on CPU, so not in the package). The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# what the TrainSettings docstring suggests for a GPU (size is set per run)
GPU_SETTINGS = dict(gen_base=64, gen_depth=7, gen_max_ch=512, d_base=64, d_max_ch=512, di_num_D=3)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def time_training(settings, device: str, n_frames: int, iters: int, warmup: int, channels_last: bool = False) -> dict:
    import numpy as np
    import torch

    from deep_puppets.gan.data import ClipDataset, batch_items, split_frames
    from deep_puppets.gan.trainer import Trainer, seed_everything

    h, w = settings.size
    rng = np.random.default_rng(0)
    cond = {k: rng.integers(0, 255, (n_frames, h, w, 3), dtype=np.uint8) for k in settings.streams}
    frames = rng.integers(0, 255, (n_frames, h, w, 3), dtype=np.uint8)
    flow = np.zeros((n_frames, h, w, 2), np.float16)
    train_idx, _ = split_frames(n_frames, settings.held_out_fraction)
    ds = ClipDataset(cond, frames, flow, train_idx, settings.streams, settings.size, settings.window, settings.clip_len)
    seed_everything(0)
    tr = Trainer(settings, device)
    if channels_last:
        for net in (tr.G, tr.D_I, tr.D_V):
            net.to(memory_format=torch.channels_last)

    def sync():
        if tr.device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        tr.step(ds.batch(batch_items(i, settings.batch_size, len(ds), 0)))
    sync()
    times = []
    for i in range(warmup, warmup + iters):
        t0 = time.perf_counter()
        tr.step(ds.batch(batch_items(i, settings.batch_size, len(ds), 0)))
        sync()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    out = {"it_per_s": round(1 / med, 3), "it_per_s_mean": round(len(times) / sum(times), 3),
           "it_per_s_best": round(1 / min(times), 3), "s_per_it_median": round(med, 4), "iters": iters, "amp": tr.amp,
           "G_params": sum(p.numel() for p in tr.G.parameters())}
    if tr.device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--iters", type=int, default=12, help="timed iterations per configuration (CPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--frames", type=int, default=30, help="frames of the synthetic video")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainSettings overrides")
    ap.add_argument("--no-cpu", action="store_true", help="only CUDA")
    ap.add_argument("--channels-last", action="store_true", help="networks in channels-last memory format")
    args = ap.parse_args(argv)

    import torch

    from deep_puppets.gan.settings import TrainSettings

    torch.set_num_threads(args.threads)
    overrides = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg_1min_before": load, "overrides": overrides, "channels_last": args.channels_last, "cpu_it_per_s": {}}
    if not args.no_cpu:
        for size in args.sizes:
            s = TrainSettings(**{**overrides, "size": size, "device": "cpu"})
            r = time_training(s, "cpu", args.frames, args.iters, args.warmup, args.channels_last)
            result["cpu_it_per_s"][str(size)] = r["it_per_s"]
            result.setdefault("cpu_it_per_s_best", {})[str(size)] = r["it_per_s_best"]
            print(f"cpu {size}x{size}: {r}", flush=True)
    if torch.cuda.is_available():
        result["cuda_device"] = torch.cuda.get_device_name(0)
        result["cuda_it_per_s"], result["cuda_gpu_settings_it_per_s"] = {}, {}
        for size in args.sizes:
            for key, extra in (("cuda_it_per_s", {}), ("cuda_gpu_settings_it_per_s", GPU_SETTINGS)):
                s = TrainSettings(**{**overrides, **extra, "size": size, "device": "cuda"})
                r = time_training(s, "cuda", args.frames, max(args.iters, 30), max(args.warmup, 5), args.channels_last)
                result[key][str(size)] = r["it_per_s"]
                print(f"cuda {size}x{size} {'gpu settings' if extra else 'defaults'}: {r}", flush=True)
    else:
        result["cuda_device"] = None
    result["load_avg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
