"""Rendering-to-video translation: a person-specific conditional video GAN (vid2vid / Deep Video Portraits).

Modules (import them directly; this package imports none of them, so importing it imports no torch):

* :mod:`.data` — time split (held-out last part), conditioning windows, training clips;
* :mod:`.flow` — DIS optical flow of the real frames, cached in a ``flow`` HDF5 file;
* :mod:`.networks` — U-Net generator, multi-scale PatchGAN discriminators, receptive-field arithmetic;
* :mod:`.losses` — LSGAN/hinge, feature matching, L1, flow-warp temporal term;
* :mod:`.settings` — :class:`~.settings.TrainSettings` (the ``gan`` config section), validated;
* :mod:`.torch_files` — atomic save, sha256 seal and verified load of the torch files below;
* :mod:`.inference` — the generator: built from settings, its file (save, verified load), generation;
* :mod:`.trainer` — :class:`~.trainer.Trainer`: one training iteration, the state a resumed run needs;
* :mod:`.checkpoints` — checkpoints of a run: save, verified load, the newest usable one, same-training check;
* :mod:`.run_folder` — a run folder's lock, done mark, log name, inputs' hashes, superseded folders;
* :mod:`.training_log` — ``losses.csv``, the log line per logged iteration, ``losses.png``;
* :mod:`.train` — :func:`~.train.train` / :func:`~.train.train_from_files`: a run on one target, resume, held-out
  error at checkpoints;
* :mod:`.synthesize` — generated frames as mp4 videos, side-by-side videos;
* :mod:`.held_out` — held-out self-reenactment: the generator and the baselines pasted over the real frames;
* :mod:`.baselines` — nearest-neighbour and mean-frame baselines, photometric error E_col.

Inference (:mod:`.inference`, :mod:`.synthesize`, :mod:`.held_out` and what they use: :mod:`.settings`,
:mod:`.torch_files`, :mod:`.networks`, :mod:`.data`, :mod:`.flow`, :mod:`.baselines`) imports no training module
(:mod:`.losses`, :mod:`.trainer`, :mod:`.checkpoints`, :mod:`.run_folder`, :mod:`.training_log`, :mod:`.train`).
"""

