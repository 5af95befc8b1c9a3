"""Snakemake adapter: KDE calibration and coverage-recalibrated thresholds (lensinfer.calibrate.run_calibration)."""

from lensinfer.calibrate import run_calibration
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    out = snakemake.output  # noqa: F821
    result = run_calibration(
        kde_curves=snakemake.input.kde,  # noqa: F821
        coverage_curves=snakemake.input.coverage,  # noqa: F821
        calibrate_cfg=snakemake.params.calibrate,  # noqa: F821
        levels=snakemake.params.levels,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        out_kde=out.kde,
        out_thresholds=out.thresholds,
        out_coverage=out.coverage,
    )
    log.info("thresholds: %s", result)
