"""Snakemake adapter: MLE spread of CDM test sets (lensinfer.infer.infer_simulated_sets)."""

from lensinfer.infer import infer_simulated_sets
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    result = infer_simulated_sets(
        snakemake.input.curves, snakemake.input.thresholds, snakemake.params.inference,  # noqa: F821
        snakemake.params.seed, snakemake.output[0],  # noqa: F821
    )
    log.info("MLE percentiles: %s", result["mle_percentiles"])
