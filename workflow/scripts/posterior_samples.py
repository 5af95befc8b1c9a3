"""Snakemake adapter: flow posterior samples of a simulated dataset (lensinfer.npe.posterior_samples) on the rule's
device (lensinfer.device.select_device: fails when a granted GPU is not visible to torch)."""

from pathlib import Path

import torch

from lensinfer.device import select_device
from lensinfer.npe import posterior_samples
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    device = select_device(snakemake.params.device)  # noqa: F821
    log.info("device: %s", device)
    out = posterior_samples(
        snakemake.input.model,  # noqa: F821
        Path(snakemake.input.manifest).parent,  # noqa: F821
        snakemake.input.masks,  # noqa: F821
        snakemake.params.n_samples,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        device=device,
    )
    log.info("samples %s of %s", out["samples"].shape, out["columns"])
