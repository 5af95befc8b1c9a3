"""Snakemake adapter: write mock HST-like observations (lensinfer.simulate.mock.write_mock_observations)."""

from pathlib import Path

from lensinfer.observe.lenses import reference_lens
from lensinfer.simulate.mock import write_mock_observations
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    lenses = [reference_lens(name) for name in snakemake.params.lenses]  # noqa: F821
    truths = write_mock_observations(snakemake.params.sim, lenses, [Path(p).parent for p in snakemake.output.frames])  # noqa: F821
    log.info("wrote %d mock observations", len(truths))
