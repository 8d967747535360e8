"""Job of the re-enactment: a pair's conditioning through the target's trained generator, composited into the
target's frames (inference, kept apart from the training jobs of :mod:`.gan`)."""

from __future__ import annotations

from .. import h5io
from ..errors import InputError
from ..framing import frame_box
from ..ingest import read_probe
from ..reenactment import CompositeSettings, write_reenactment
from ..transfer_files import read_transfer


def gan_synthesize(*, generator, conditioning_file, transfer_file, source_video, source_probe, target_video, target_probe,
                   target_conditioning, out_mp4, side_mp4, composite_cfg: dict | None = None):
    """The re-enactment: G over the pair's conditioning, each crop composited into the target's own full-resolution
    frame (deep_puppets.reenactment), at the target's size and rate, as long as the source, with the source's
    audio; and the preview source | conditioning | output crop."""
    src, tgt = read_probe(source_probe), read_probe(target_probe)
    transfer, attrs = read_transfer(transfer_file)
    with h5io.open_file(conditioning_file) as f:
        if len(f["valid"]) != len(transfer.valid):
            raise InputError(conditioning_file, f"has {len(f['valid'])} frames, its transfer {transfer_file} {len(transfer.valid)}")
    return write_reenactment(generator, conditioning_file, target_conditioning, source_video, src, target_video, tgt, out_mp4,
                             side_mp4, str(attrs["mode"]), transfer.target_pose_frame, CompositeSettings.from_config(composite_cfg),
                             source_box=frame_box(src.width, src.height))
