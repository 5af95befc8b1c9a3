"""Snakemake adapter: TARP, SBC and regression diagnostics of posterior samples (lensinfer.diagnostics)."""

from lensinfer.diagnostics import write_diagnostics
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    result = write_diagnostics(snakemake.input[0], snakemake.output[0], seed=snakemake.params.seed)  # noqa: F821
    log.info("TARP max deviation %.3f over %d lenses", result["tarp"]["max_dev"], result["n_lenses"])
