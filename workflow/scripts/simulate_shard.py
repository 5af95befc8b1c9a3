"""Snakemake adapter: simulate the shards of the job (lensinfer.simulate.shard.simulate_shard) from the rule's params.

Used by both ``simulate_shard`` (one shard) and ``simulate_shards`` (ten): the shard index is read from each output
path (``shard_<index>.zarr``), and the shards are written one after the other.
"""

import re

from lensinfer.simulate.shard import simulate_shard
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    for out in snakemake.output:  # noqa: F821
        shard = int(re.fullmatch(r".*shard_(\d+)\.zarr", str(out)).group(1))
        data = simulate_shard(
            snakemake.params.sim,  # noqa: F821
            snakemake.wildcards.dataset,  # noqa: F821
            shard,
            out,
            threads=snakemake.threads,  # noqa: F821
        )
        log.info("wrote %d images to %s", data.images.shape[0], out)
