"""Snakemake adapter: γ-grid curves of a simulated dataset (lensinfer.infer / lensinfer.npe dataset_curves) on the
rule's device (lensinfer.device.select_device: fails when a granted GPU is not visible to torch)."""

from pathlib import Path

import torch

from lensinfer import infer, npe
from lensinfer.device import select_device
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    device = select_device(snakemake.params.device)  # noqa: F821
    log.info("device: %s", device)
    args = (
        snakemake.input.model,  # noqa: F821
        Path(snakemake.input.manifest).parent,  # noqa: F821
        snakemake.input.masks,  # noqa: F821
        snakemake.params.grid,  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
    if snakemake.wildcards.est == "npe":  # noqa: F821
        p = snakemake.params  # noqa: F821
        npe.dataset_curves(*args, seed=p.seed, gamma_prior=p.gamma_prior, n_samples=int(p.n_samples), device=device)
    else:
        infer.dataset_curves(*args, device=device)
