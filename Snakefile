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


# Library code in the rerun triggers: Snakemake's `code` trigger hashes a rule's script, a thin adapter; the science is
# in src/lensinfer. Every script rule gets one more param, the sha256 of the lensinfer modules its script imports
# (lensinfer.dag.library_code_hash), so an edit of the library reruns exactly the rules that run the edited code.
for _rule in workflow.rules:
    if _rule.script:
        _rule.set_params(
            library_code=library_code_hash(
                Path(workflow.basedir)
                / "workflow"
                / "scripts"
                / Path(str(_rule.script)).name,
                SRC,
            )
        )


rule all:
    default_target: True
    input:
        all_targets(),
