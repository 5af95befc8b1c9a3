"""Snakemake adapter: fetch and verify the COSMOS 23.5 sample (lensinfer.simulate.cosmos_download).

The URL and checksum come from the config, not the rule's params: where the archive is fetched from does not change
the catalogue, and a folder that already holds a verified catalogue is kept (nothing is fetched again). The rule's
output is a copy of the folder's verification record.
"""

import shutil

from lensinfer.simulate.cosmos_download import download_cosmos
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    d = snakemake.config["lens"]["source"]["download"]  # noqa: F821
    record = download_cosmos(d["url"], snakemake.params.catalog_dir, sha256=d.get("sha256"))  # noqa: F821
    shutil.copyfile(record, snakemake.output[0])  # noqa: F821
    log.info("verified COSMOS catalog: %s", record)
