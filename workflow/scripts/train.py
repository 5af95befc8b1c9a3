"""Snakemake adapter: train the calling rule's estimator (lensinfer.train: train_ratio_estimator for train_nre,
train_flow_posterior for train_flow)."""

from pathlib import Path

from lensinfer.data.loader import load_whitening
from lensinfer.train import train_flow_posterior, train_ratio_estimator
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    common = dict(
        train_dir=Path(inp.train[0]).parent,
        train_masks=inp.train_masks,
        val_dir=Path(inp.val).parent,
        val_masks=inp.val_masks,
        train_cfg=params.train,
        seed=params.seed,
        out_model=snakemake.output.model,  # noqa: F821
        out_history=snakemake.output.history,  # noqa: F821
        checkpoint_dir=params.checkpoint_dir,
        threads=snakemake.threads,  # noqa: F821
    )
    if snakemake.rule == "train_flow":  # noqa: F821
        summary = train_flow_posterior(whitening=inp.train[1], flow_cfg=params.flow,
                                       target_priors={"gamma_pop": getattr(params, "gamma_prior", None)}, **common)
    else:
        summary = train_ratio_estimator(whitening=load_whitening(inp.train[1]), model_cfg=params.model, **common)
    log.info("training summary: %s", summary)
