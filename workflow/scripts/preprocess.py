"""Snakemake adapter: preprocess one observation (lensinfer.observe.pipeline.preprocess_observation)."""

from pathlib import Path

from lensinfer.observe.pipeline import preprocess_observation
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp, settings = snakemake.input, snakemake.params.settings  # noqa: F821
    meta = preprocess_observation(
        lens_name=snakemake.wildcards.lens,  # noqa: F821
        frame=inp.frame,
        observations=settings["observations"],
        instrument=settings["instrument"],
        radius_theta_e=settings["mask"]["radius_theta_E"],
        outdir=Path(snakemake.output.metadata).parent,  # noqa: F821
        manifest=inp.get("manifest"),
        truth=inp.get("truth"),
    )
    log.info("preprocessed %s (%s, %s): noise σ %.4g", snakemake.wildcards.lens,  # noqa: F821
             meta["observation"]["source"], meta["preprocess"], meta["noise_sigma"])
