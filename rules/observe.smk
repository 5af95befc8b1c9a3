# Stage 6: observations — mock HST-like frames (offline demo), local FITS files, or MAST downloads — then the
# same preprocessing for all (observations.preprocess: reference = the published cutouts, calibrated = background,
# recentring, resampling, zero point).
#
# Each source has its own raw-frame folder (lensinfer.observe.sources): observe_mock writes
# results/observations/mock/, fetch_hst results/observations/mast/, and `local` reads the user's files. No two rules
# can produce the same file, so no ruleorder decides which one runs: preprocess asks for the configured source's
# files and only that source's rule can make them. Parameters are per lens and hold only what determines that
# lens's data, so adding a lens or changing e.g. the exposure time neither re-downloads nor re-preprocesses the
# others; switching the source changes preprocess's inputs and params, so the observation branch reruns.

# (the paths below are lensinfer.observe.sources.MOCK_DIR / MAST_DIR, which preprocess's inputs are built from)
from lensinfer.observe.sources import (
    fetch_params,
    observation_inputs,
    preprocess_params,
)


localrules:
    fetch_hst,


rule observe_mock:
    input:
        COSMOS_PREPARED,
    output:
        frames=expand("results/observations/mock/{lens}/science.fits", lens=LENSES),
        truths=expand("results/observations/mock/{lens}/truth.json", lens=LENSES),
    log:
        "logs/observe/mock.log",
    conda:
        "../envs/observe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        sim=mock_params,
        lenses=LENSES,
    script:
        "../workflow/scripts/observe_mock.py"


rule fetch_hst:
    output:
        frame="results/observations/mast/{lens}/science.fits",
        manifest="results/observations/mast/{lens}/manifest.json",
    log:
        "logs/observe/fetch_{lens}.log",
    conda:
        "../envs/observe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        # the request only: observations.mast.retries is read from the config by the script (it changes no data)
        request=lambda w: canonical(fetch_params(config, w.lens)),
    script:
        "../workflow/scripts/fetch_hst.py"


rule preprocess:
    input:
        unpack(lambda w: observation_inputs(config, w.lens)),
    output:
        image="results/observations/processed/{lens}/image.npy",
        mask="results/observations/processed/{lens}/mask.npy",
        metadata="results/observations/processed/{lens}/metadata.json",
        figure=report(
            "results/observations/processed/{lens}/diagnostic.png",
            caption="../report/preprocess.rst",
            category="Observations",
            labels={"lens": "{lens}"},
        ),
    log:
        "logs/observe/preprocess_{lens}.log",
    conda:
        "../envs/observe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda w: canonical(preprocess_params(config, w.lens)),
    script:
        "../workflow/scripts/preprocess.py"
