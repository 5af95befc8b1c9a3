"""Snakemake adapter: simulate one shard (lensinfer.simulate.shard.simulate_shard) from the rule's params."""

from lensinfer.simulate.shard import simulate_shard
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    data = simulate_shard(
        snakemake.params.sim,  # noqa: F821
        snakemake.wildcards.dataset,  # noqa: F821
        int(snakemake.wildcards.shard),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
    log.info("wrote %d images to %s", data.images.shape[0], snakemake.output[0])  # noqa: F821
