"""Training of the rendering-to-video GAN on one target: the run (:func:`train`, :func:`train_from_files`),
resuming it, evaluating the held-out frames at checkpoints.

Runs are seeded (python, numpy, torch) and the batch of iteration ``i`` is a pure function of (seed, i)
(:func:`~.data.batch_items`); one iteration is :meth:`~.trainer.Trainer.step`.

Files under ``out_dir`` (a run folder, :mod:`.run_folder`): ``checkpoints/iter_XXXXXXXX.pt`` every
``checkpoint_every`` iterations (:mod:`.checkpoints`), ``losses.csv`` and ``losses.png`` (:mod:`.training_log`),
``train.log`` (every attempt, appended) and, once the final generator (:func:`~.inference.save_generator`, a
separate file written atomically) is written, the done mark ``done.json``. A killed run started again with the
same ``out_dir`` resumes from the newest checkpoint (on CPU it reproduces the uninterrupted one exactly); a
completed one (done mark) trains afresh. Only the same training resumes: checkpoints record the settings and the
content hashes of the inputs (:func:`~.run_folder.input_digests`; the workflow names the run folder by both), and
other ones are refused. Checkpoints and generators carry a sha256 over all their tensors and values, verified on
load with the weights' finiteness (a damaged checkpoint is skipped, a damaged generator is an
:class:`~deep_puppets.errors.InputError`); everything is loaded with ``torch.load(..., weights_only=True)``
(:mod:`.torch_files`). A trainer holds :class:`~.run_folder.TrainingLock` on ``out_dir/.train.lock``: a second
one fails at once naming the first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import h5io
from ..errors import ConfigError, InputError
from ..files import write_json
from ..progress import report as report_progress
from ..workflow import attempt_header
from .baselines import photometric_error
from .checkpoints import (
    check_same_training,
    latest_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .data import ClipDataset, batch_items, clip_ends, split_frames
from .flow import open_flow_file
from .inference import generate, save_generator
from .networks import count_parameters, receptive_fields
from .run_folder import (
    DONE_NAME,
    LOCK_NAME,
    LOG_NAME,
    TrainingLock,
    clear_run,
    file_sha256,
    input_digests,
    read_done_mark,
)
from .settings import TrainSettings
from .trainer import Trainer, seed_everything
from .training_log import TrainingProgress, plot_losses, trim_csv

log = logging.getLogger("deep_puppets.gan")


@dataclass
class TrainResult:
    iterations: int
    resumed_from: int  # iteration of the checkpoint the run resumed from (0 = fresh)
    final_path: Path | None
    seconds: float
    last_losses: dict = field(default_factory=dict)


def _load_batch(dataset: ClipDataset, iteration: int, s: TrainSettings) -> dict:
    return dataset.batch(batch_items(iteration, s.batch_size, len(dataset), s.seed))


def held_out_error(trainer: Trainer, dataset: ClipDataset, frames: np.ndarray) -> float:
    """Mean E_col of the generator on the (contiguous) held-out ``frames`` (evaluation only, no training)."""
    fake = np.stack(list(generate(trainer.generator, dataset.conditioning, frames, trainer.s, trainer.device)))
    real = np.stack([dataset.frames_at(t) for t in frames])
    return float(np.mean(photometric_error(fake, real)))


def resume(trainer: Trainer, out_dir: Path, inputs: Mapping[str, str] | None = None) -> int:
    """Load the newest usable checkpoint under ``out_dir`` into ``trainer``; returns its iteration (0: none).

    Only the same training resumes: a checkpoint (or done mark) of other settings than :attr:`TrainSettings.RUN_KEYS`
    is refused (:class:`ConfigError`), one of other ``inputs`` (content hashes) too (:class:`InputError`). A
    completed run (done mark with at least ``iterations``) is cleared and trains afresh: running the job again
    (Snakemake deleted its output: ``--forcerun``) means training again, not returning the old weights.
    """
    remove_stale_temporaries(out_dir)
    done = read_done_mark(out_dir)
    if done is not None:
        check_same_training(out_dir / DONE_NAME, done, trainer.s, inputs)
        if int(done["iteration"]) >= trainer.s.iterations:
            log.info("%s completed before (iteration %d): training afresh", out_dir, int(done["iteration"]))
            clear_run(out_dir)
            return 0
    found = latest_checkpoint(out_dir)
    if found is None:
        return 0
    path, state = found
    check_same_training(path, state, trainer.s, inputs)
    trainer.load_state_dict(state)
    log.info("resuming from %s (iteration %d)", path, trainer.iteration)
    return trainer.iteration


def train(conditioning: Mapping[str, object], frames, flow, settings: TrainSettings, out_dir, final_path=None,
          *, valid=None, boxes=None, stop_after: int | None = None, inputs: Mapping[str, str] | None = None) -> TrainResult:
    """Train (or resume) on one target; writes checkpoints/logs under ``out_dir`` and the generator to ``final_path``.

    ``conditioning``: stream -> (T, H, W, 3) uint8 array-likes; ``frames``: real frames (T, H', W', 3);
    ``flow``: (T, H, W, 2) at the training size, or None (then D_V sees zero flow and the warp term is off);
    ``valid``: (T,) bool, frames whose conditioning was rendered (clips with an invalid frame are not trained
    on; None: all); ``boxes``: (T, 4) crop boxes of the conditioning, applied to ``frames`` (None: frames are
    resized whole, e.g. the already-cropped frames of a flow file). The split is :func:`~.data.split_frames`
    of T. ``stop_after``: stop (without the final file) once that many iterations are done — to simulate a
    killed run, or to train in pieces. ``inputs``: content hashes of the data (:func:`input_digests`), recorded in
    checkpoints, generator and done mark; a checkpoint of other inputs is never resumed. The run holds
    :class:`TrainingLock` on ``out_dir`` throughout and appends its log to ``out_dir/train.log``.
    """
    out_dir = Path(out_dir)
    with TrainingLock(out_dir / LOCK_NAME):
        handler = logging.FileHandler(out_dir / LOG_NAME, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        with open(out_dir / LOG_NAME, "a") as f:
            f.write(attempt_header())
        log.addHandler(handler)
        try:
            return _train_locked(conditioning, frames, flow, settings, out_dir, final_path, valid, boxes, stop_after, inputs)
        finally:
            log.removeHandler(handler)
            handler.close()


def _train_locked(conditioning, frames, flow, settings, out_dir: Path, final_path, valid, boxes, stop_after, inputs) -> TrainResult:
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    if inputs:
        log.info("inputs: %s", ", ".join(f"{k} sha256 {v}" for k, v in sorted(inputs.items())))
    if flow is None and (s.lambda_warp > 0 or s.use_video_d):
        log.warning("no optical flow given: D_V is conditioned on zero flow and the warp term is off")
        s = TrainSettings(**{**s.to_dict(), "lambda_warp": 0.0})
    train_idx, held_idx = split_frames(len(frames), s.held_out_fraction)
    usable = train_idx if valid is None else train_idx[np.asarray(valid, bool)[train_idx]]
    if not len(clip_ends(usable, s.clip_len)):
        raise ConfigError(f"'gan.clip_len' {s.clip_len}: no run of {s.clip_len} consecutive training frames with a rendered face "
                          f"({len(usable)} of the {len(train_idx)} training frames have one); lower gan.clip_len")
    dataset = ClipDataset(conditioning, frames, flow, usable, s.streams, s.size, s.window, s.clip_len, boxes)
    seed_everything(s.seed)
    trainer = Trainer(s)
    csv_path, png_path = out_dir / "losses.csv", out_dir / "losses.png"
    start = resume(trainer, out_dir, inputs)
    if start:
        trim_csv(csv_path, start)
    else:
        csv_path.unlink(missing_ok=True)

    rf_i, rf_v = receptive_fields(s.di_layers, s.di_num_D), receptive_fields(s.dv_layers, s.dv_num_D)
    precision = f" ({str(trainer.amp_dtype).removeprefix('torch.')} autocast)" if trainer.amp else ""
    log.info("GAN on %s%s: %d frames, %d for training (%d usable, %d clips of %d), last %d held out; size %dx%d; "
             "G %d params; D_I patches %s px, D_V patches %s px", trainer.device, precision,
             len(frames), len(train_idx), len(usable), len(dataset), s.clip_len, len(held_idx), s.size[0], s.size[1],
             count_parameters(trainer.G), rf_i, rf_v)
    if max(rf_i) < 0.75 * max(s.size):
        log.warning("D_I's largest patch (%d px) covers less than 3/4 of the frame (%d px): the report saw heads "
                    "detach from bodies with too small patches; raise gan.di_num_D or gan.di_layers", max(rf_i), max(s.size))
    eval_idx = held_idx[: s.eval_frames]
    end = s.iterations if stop_after is None else min(s.iterations, stop_after)
    progress = TrainingProgress(s, csv_path, start)
    losses: dict[str, float] = {}
    with ThreadPoolExecutor(1) as prefetch:  # the next batch is assembled while this one trains
        nxt = prefetch.submit(_load_batch, dataset, start, s)
        while trainer.iteration < end:
            batch = nxt.result()
            if trainer.iteration + 1 < end:
                nxt = prefetch.submit(_load_batch, dataset, trainer.iteration + 1, s)
            losses = trainer.step(batch)
            progress.add(losses)
            it = trainer.iteration
            checkpoint = it % s.checkpoint_every == 0 or it == s.iterations
            ecol = None
            if it % s.log_every == 0 or checkpoint or it == end:
                ecol = held_out_error(trainer, dataset, eval_idx) if checkpoint and len(eval_idx) else None
                progress.report(it, ecol)
                if checkpoint:
                    log.info("checkpoint %s", save_checkpoint(trainer, out_dir, s.keep_checkpoints, inputs))
                    plot_losses(csv_path, png_path)
                progress.restart(it)
            report_progress("GAN training", it, s.iterations, "iterations", **{"held-out E_col": ecol})
    done = None
    if trainer.iteration >= s.iterations and final_path is not None:
        done = save_generator(trainer, final_path, inputs)
        if csv_path.exists():
            plot_losses(csv_path, png_path)
        write_json(out_dir / DONE_NAME, {"iteration": int(trainer.iteration), "settings": trainer.s.to_dict(),
                                         "inputs": dict(inputs or {}), "generator": str(final_path),
                                         "generator_sha256": file_sha256(final_path)})
        log.info("final generator %s (iteration %d)", final_path, trainer.iteration)
    return TrainResult(trainer.iteration, start, done, time.perf_counter() - progress.t0, losses)


def train_from_files(conditioning_path, flow_path, settings: TrainSettings, out_dir, final_path,
                     *, stop_after=None, inputs: Mapping[str, str] | None = None) -> TrainResult:
    """:func:`train` on a conditioning HDF5 file (datasets named like ``settings.streams``, (T, H, W, 3) uint8;
    ``valid`` (T,) and ``box`` (T, 4) used when present) and a ``flow`` file (:mod:`.flow`, which holds the real
    frames already cropped by those boxes and resized to the training size). ``inputs``: their
    :func:`input_digests` (computed when None)."""
    inputs = input_digests(conditioning_path, flow_path) if inputs is None else inputs
    with h5io.open_file(conditioning_path) as fc:  # a corrupted chunk read during training names the file
        missing = [n for n in settings.streams if n not in fc]
        if missing:
            raise InputError(conditioning_path, f"lacks conditioning stream(s) {missing}")
        valid = fc["valid"][()] if "valid" in fc else None
        boxes = fc["box"][()] if "box" in fc else None
        ff, flow, frames = open_flow_file(flow_path, settings.size, boxes)
        try:
            if len(frames) != len(fc[settings.streams[0]]):
                raise InputError(flow_path, f"has {len(frames)} frames, the conditioning {len(fc[settings.streams[0]])}")
            return train({n: fc[n] for n in settings.streams}, frames, flow, settings, out_dir, final_path,
                         valid=valid, stop_after=stop_after, inputs=inputs)
        finally:
            ff.close()
