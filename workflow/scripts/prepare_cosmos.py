"""Snakemake adapter: warm paltas' COSMOS cache once and record the galaxies of each split."""

import json

from lensinfer.simulate.sources import SPLITS, CosmosSource
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    counts = {}
    for split in SPLITS:
        try:
            counts[split] = int(CosmosSource(p.source, split, p.zero_point, p.cosmology).eligible.size)
        except ValueError as err:  # a split with no galaxy fails only if a dataset uses it
            counts[split] = 0
            log.warning("%s", err)
    with open(snakemake.output[0], "w") as fh:  # noqa: F821
        json.dump({"catalog_dir": p.source["catalog_dir"], "eligible_galaxies": counts}, fh, indent=2)
    log.info("eligible galaxies per split: %s", counts)
