"""Snakemake adapter: misspecification check of the observations (lensinfer.misspecification.run_misspecification)."""

import torch

from lensinfer.misspecification import run_misspecification
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    record = run_misspecification(
        model_path=inp.model,
        reference_datasets=[(str(m).rsplit("/", 1)[0], k) for m, k in zip(inp.manifests, inp.masks_ref)],
        names=list(params.lenses),
        images=list(inp.images),
        masks=list(inp.masks),
        metadata=list(inp.metadata),
        cfg=params.misspecification,
        instrument=params.instrument,
        out_path=snakemake.output[0],  # noqa: F821
    )
    log.info("flagged: %s", record["flagged"] or "none")
