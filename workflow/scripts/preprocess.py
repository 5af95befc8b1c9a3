"""Snakemake adapter: preprocess one observation onto the simulator's grid (lensinfer.observe.pipeline)."""

from pathlib import Path

from lensinfer.observe.pipeline import preprocess_observation
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    meta = preprocess_observation(
        lens_name=snakemake.wildcards.lens,  # noqa: F821
        frame=snakemake.input.frame,  # noqa: F821
        observations=snakemake.params.observations,  # noqa: F821
        instrument=snakemake.params.instrument,  # noqa: F821
        radius_theta_e=snakemake.params.mask["radius_theta_E"],  # noqa: F821
        outdir=Path(snakemake.output.metadata).parent,  # noqa: F821
    )
    log.info("preprocessed %s: noise σ %.4g", snakemake.wildcards.lens, meta["noise_sigma"])  # noqa: F821
