"""Snakemake adapter: download one lens from MAST with retries and a verified manifest (lensinfer.observe.mast)."""

from pathlib import Path

from lensinfer.observe.lenses import lens_specs_from_config
from lensinfer.observe.mast import fetch_hst
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    entries = [e if isinstance(e, str) else {k: v for k, v in e.items() if k != "file"} for e in p.lenses]
    specs = lens_specs_from_config(entries, pixel_scale_arcsec=p.instrument["pixel_scale"], num_pix=p.instrument["num_pix"])
    lens = next(s for s in specs if s.name == snakemake.wildcards.lens)  # noqa: F821
    manifest = fetch_hst(lens, Path(snakemake.output.frame).parent, method=p.mast["method"],  # noqa: F821
                         size_arcsec=p.mast["size_arcsec"], instrument=p.mast["instrument"], filter=p.mast["filter"],
                         retries=p.mast["retries"])
    log.info("manifest: %s", manifest)
