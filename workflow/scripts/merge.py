"""Snakemake adapter: merge the shards of a dataset (lensinfer.data.merge.merge_dataset)."""

from pathlib import Path

from lensinfer.data.merge import merge_dataset
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    stats = merge_dataset(
        snakemake.wildcards.dataset,  # noqa: F821
        list(snakemake.input),  # noqa: F821
        Path(snakemake.output.manifest).parent,  # noqa: F821
        pixel_scale=snakemake.params.pixel_scale,  # noqa: F821
        radius_theta_e=snakemake.params.radius_theta_E,  # noqa: F821
    )
    log.info("stats: %s", stats)
