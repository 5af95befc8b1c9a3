"""Snakemake adapter: fetch and verify the COSMOS 23.5 sample (lensinfer.simulate.cosmos_download)."""

from pathlib import Path

from lensinfer.simulate.cosmos_download import download_cosmos
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    p = snakemake.params.download  # noqa: F821
    record = download_cosmos(p["url"], Path(snakemake.output[0]).parent, sha256=p.get("sha256"))  # noqa: F821
    log.info("verified COSMOS catalog: %s", record)
