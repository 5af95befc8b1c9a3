"""Snakemake adapter: draw the figure of the calling plot rule (lensinfer.plots)."""

from lensinfer import plots
from lensinfer.workflow import logged

with logged(snakemake.log[0]):  # noqa: F821
    plots.for_rule(snakemake.rule, snakemake.input, snakemake.params, snakemake.output[0])  # noqa: F821
