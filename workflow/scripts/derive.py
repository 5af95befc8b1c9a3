"""Snakemake adapter: image positions and time delays of the observed lenses (lensinfer.derived)."""

from lensinfer.derived import derive_observations
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    result = derive_observations(
        snakemake.input.samples,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        derived_cfg=snakemake.params.derived,  # noqa: F821
        cosmology=snakemake.params.cosmology,  # noqa: F821
        truth_paths=list(snakemake.input.truths),  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
    )
    log.info("derived quantities of %d lenses", len(result["lenses"]))
