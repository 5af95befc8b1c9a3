"""Snakemake adapter: NPE inference on the observed lenses (lensinfer.npe.infer_observations)."""

import torch

from lensinfer.npe import infer_observations
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    summary = infer_observations(
        model_path=inp.model,
        thresholds_path=inp.thresholds or None,
        kde_path=inp.kde or None,
        names=list(params.lenses),
        images=list(inp.images),
        masks=list(inp.masks),
        inference_cfg=params.inference,
        out_summary=snakemake.output.summary,  # noqa: F821
        out_curves=snakemake.output.curves,  # noqa: F821
        out_samples=snakemake.output.samples,  # noqa: F821
        n_samples=params.n_samples,
        seed=params.seed,
        gamma_prior=params.gamma_prior,
        metadata=list(inp.metadata),
    )
    log.info("NPE summary of %d lenses written", summary["n_lenses"])
