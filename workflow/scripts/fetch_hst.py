"""Snakemake adapter: download one lens from MAST with retries and a verified manifest (lensinfer.observe.mast)."""

from pathlib import Path

from lensinfer.observe.lenses import LensSpec
from lensinfer.observe.mast import fetch_hst
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    request = snakemake.params.request  # noqa: F821
    lens = LensSpec(name=request["lens"]["name"], ra_deg=request["lens"]["ra_deg"], dec_deg=request["lens"]["dec_deg"])
    manifest = fetch_hst(lens, Path(snakemake.output.frame).parent, method=request["method"],  # noqa: F821
                         size_arcsec=request.get("size_arcsec", 30.0), instrument=request["instrument"],
                         filter=request["filter"],
                         retries=snakemake.config["observations"]["mast"]["retries"])  # noqa: F821
    log.info("manifest: %s", manifest)
