"""Snakemake adapter: NPE inference on the observed lenses (lensinfer.npe.infer_observations)."""

import json

import torch

from lensinfer.npe import infer_observations
from lensinfer.observe.sources import record_in_summary
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
        misspecification=json.loads(open(inp.misspecification).read()),
        coverage_curves=inp.coverage_curves or None,
        calibrate_cfg=params.calibrate,
        metadata=list(inp.metadata),
    )
    # where each observation came from (source, file, sha256, MAST product) and how it was preprocessed
    summary = record_in_summary(snakemake.output.summary, snakemake.params.lenses, list(inp.metadata))  # noqa: F821
    log.info("NPE summary of %d lenses written", summary["n_lenses"])
