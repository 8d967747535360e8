"""Deep Puppets: monocular face tracking, expression/pose transfer, conditioning renders and a
person-specific rendering-to-video GAN, driven by a Snakemake workflow.

All real logic lives in this package; the Snakemake rules and ``workflow_scripts/`` are thin wrappers.
"""

__version__ = "0.1.0"
