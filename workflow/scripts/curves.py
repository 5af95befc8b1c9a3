"""Snakemake adapter: γ-grid curves of a simulated dataset (lensinfer.infer.dataset_curves)."""

from pathlib import Path

import torch

from lensinfer.infer import dataset_curves
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    dataset_curves(
        snakemake.input.model,  # noqa: F821
        Path(snakemake.input.manifest).parent,  # noqa: F821
        snakemake.input.masks,  # noqa: F821
        snakemake.params.grid,  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
