"""The ``texture`` HDF5 layout (per-vertex albedo and SH lighting of one video) and its plausibility check, and
the albedo/SH dataset descriptions a track may carry."""

from __future__ import annotations

from .. import h5io
from ..h5io import Dataset

# What the lead stores in the track HDF5 (not registered here: the track layout owns them).
TRACK_DATASETS = {
    "albedo": Dataset("float32", ("N", 3), "per-vertex RGB albedo in [0, 1] (deep_puppets.texture gauge)"),
    "sh": Dataset("float32", (9, 3), "SH lighting, camera coordinates, irradiance-folded basis, DC = SH_DC_UNIT"),
}


ALBEDO_LIMIT = 4.0  # albedo is clipped to [0, 1] when estimated; beyond a few it is damage, not a texture
SH_LIMIT = 1e3  # SH lighting coefficients (the DC term is SH_DC_UNIT for unit irradiance)


def _check_texture(arrays: dict, attrs: dict) -> str | None:
    return h5io.first_problem(
        h5io.nonfinite("albedo", arrays["albedo"]),
        h5io.out_of_range("albedo", arrays["albedo"], 0.0, ALBEDO_LIMIT),
        h5io.nonfinite("sh", arrays["sh"]),
        h5io.out_of_range("sh", arrays["sh"], -SH_LIMIT, SH_LIMIT),
    )


TEXTURE = h5io.Layout(
    name="texture",
    version=1,
    doc=(
        "Per-vertex albedo and spherical-harmonics lighting of the person in one video, estimated from the "
        "first frames with a face (deep_puppets.texture.albedo, estimate_albedo_and_lighting)."
    ),
    datasets=TRACK_DATASETS,
    attrs={
        "video": "video name",
        "model_hash": "content hash of the model whose vertices the albedo belongs to",
        "frames": "JSON list of the frames used",
        "stats": "JSON of the estimate's statistics (reproduction error, fraction of vertices seen, ...)",
    },
    check=_check_texture,
)
