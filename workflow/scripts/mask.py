"""Snakemake adapter: write the masks of a merged dataset (lensinfer.data.merge.write_masks)."""

from pathlib import Path

from lensinfer.data.merge import write_masks
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    kept = write_masks(
        Path(snakemake.input.manifest).parent,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        pixel_scale=snakemake.params.pixel_scale,  # noqa: F821
        radius_theta_e=snakemake.params.radius_theta_E,  # noqa: F821
        chunk_images=snakemake.params.chunk_images,  # noqa: F821
    )
    log.info("kept pixel fraction: mean %.3f, min %.3f", kept["mean"], kept["min"])
