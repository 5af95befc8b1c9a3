"""Snakemake adapter: simulate one shard (lensinfer.simulate.shard.simulate_shard)."""

from lensinfer.simulate.shard import simulate_shard
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    cfg = snakemake.config  # noqa: F821
    data = simulate_shard(cfg, snakemake.wildcards.dataset, int(snakemake.wildcards.shard), snakemake.output[0])  # noqa: F821
    log.info("wrote %d images to %s", data.images.shape[0], snakemake.output[0])  # noqa: F821
