"""Snakemake adapter: per-lens and combined γ inference on observations (lensinfer.infer.infer_observations)."""

import json

from lensinfer.infer import infer_observations
from lensinfer.observe.sources import record_in_summary
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp = snakemake.input  # noqa: F821
    summary = infer_observations(
        model_path=inp.model, thresholds_path=inp.thresholds, kde_path=inp.kde,
        names=snakemake.params.lenses, images=list(inp.images), masks=list(inp.masks),  # noqa: F821
        inference_cfg=snakemake.params.inference,  # noqa: F821
        out_summary=snakemake.output.summary, out_curves=snakemake.output.curves,  # noqa: F821
        misspecification=json.loads(open(inp.misspecification).read()),
        coverage_curves=inp.coverage_curves, calibrate_cfg=snakemake.params.calibrate,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        metadata=list(inp.metadata),
    )
    # where each observation came from (source, file, sha256, MAST product) and how it was preprocessed
    summary = record_in_summary(snakemake.output.summary, snakemake.params.lenses, list(inp.metadata))  # noqa: F821
    log.info("combined: %s", summary["combined"])
