# lensinfer: simulation-based inference of the subhalo density slope γ from strong-lensing images.
# This file only loads and validates the config, includes the stage rules and defines the default target.
# Dry-run: snakemake -n · run: snakemake -c2 · report: snakemake --report results/report.html

from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default; a --configfile replaces it (Snakemake would otherwise deep-merge the two).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/merge.smk"
include: "rules/mask.smk"
include: "rules/train.smk"
include: "rules/calibrate.smk"
include: "rules/diagnose.smk"
include: "rules/observe.smk"
include: "rules/infer.smk"
include: "rules/plot.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
