"""Every HDF5 layout the workflow writes, listed by name, and their documentation (``docs/hdf5.md``).

Each layout is defined in the module of the stage that writes it; this module only imports and lists them, so
nothing registers itself as a side effect of an import. ``python -m deep_puppets.layouts > docs/hdf5.md``
regenerates the documentation (a test keeps it current). It imports every stage module (cv2, scipy among them):
the stages import their own layouts directly, never this list.
"""

from __future__ import annotations

from .demo import DEMO_TRUTH
from .fit_files import FIT_IDENTITY, FIT_SEGMENT
from .gan.flow import FLOW
from .h5io import LANDMARKS, Layout
from .models.person import PERSON_MODEL
from .render.conditioning_file import CONDITIONING
from .texture.texture_file import TEXTURE
from .tracks import TRACK
from .transfer_files import TRANSFER

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        LANDMARKS,
        FIT_SEGMENT,
        FIT_IDENTITY,
        TRACK,
        PERSON_MODEL,
        TEXTURE,
        TRANSFER,
        CONDITIONING,
        FLOW,
        DEMO_TRUTH,
    )
}


def markdown() -> str:
    """Documentation of every layout (written to docs/hdf5.md)."""
    lines = [
        "# HDF5 layouts",
        "",
        "Generated from the layouts listed in `deep_puppets/layouts.py` "
        "(`python -m deep_puppets.layouts > docs/hdf5.md`). Every file carries the attributes `layout` and "
        "`layout_version`. Shapes use symbols shared across a file's datasets (T = frames). Every non-empty "
        "dataset is stored with a Fletcher-32 checksum (the deflated conditioning images with the zlib stream's "
        "Adler-32); a read that fails it names the file and the dataset.",
        "",
    ]
    for layout in sorted(LAYOUTS.values(), key=lambda lay: lay.name):
        lines += [f"## `{layout.name}` (version {layout.version})", "", layout.doc, "", "| dataset | dtype | shape | meaning |", "|---|---|---|---|"]
        for name, d in layout.datasets.items():
            shape = "(" + ", ".join(str(s) for s in d.shape) + ")"
            opt = " (optional)" if d.optional else ""
            lines.append(f"| `{name}` | {d.dtype} | {shape} | {d.doc}{opt} |")
        if layout.attrs:
            lines += ["", "| attribute | meaning |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in layout.attrs.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
