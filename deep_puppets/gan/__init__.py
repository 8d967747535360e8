"""Rendering-to-video translation: a person-specific conditional video GAN (vid2vid / Deep Video Portraits).

Modules (import them directly; this package imports none of them, so importing it imports no torch):

* :mod:`.data` — time split (held-out last part), conditioning windows, training clips;
* :mod:`.flow` — DIS optical flow of the real frames, cached in a ``flow`` HDF5 file;
* :mod:`.networks` — U-Net generator, multi-scale PatchGAN discriminators, receptive-field arithmetic;
* :mod:`.losses` — LSGAN/hinge, feature matching, L1, flow-warp temporal term;
* :mod:`.train` — :class:`~.train.TrainSettings`, :class:`~.train.Trainer`, :func:`~.train.train` (checkpoints,
  resume, logs);
* :mod:`.synthesize` — generation, mp4 output, side-by-side videos;
* :mod:`.baselines` — nearest-neighbour and mean-frame baselines, photometric error E_col.
"""

