# Stage 6: observations — mock HST-like frames (offline demo), local FITS files, or MAST downloads —
# then the same preprocessing for all: background, recentring, flux-conserving resampling, noise, mask.


localrules:
    fetch_hst,


rule observe_mock:
    input:
        COSMOS_PREPARED,
    output:
        frames=expand("results/observations/raw/{lens}/science.fits", lens=LENSES),
        truths=expand("results/observations/raw/{lens}/truth.json", lens=LENSES),
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
        frame="results/observations/raw/{lens}/science.fits",
        manifest="results/observations/raw/{lens}/manifest.json",
    log:
        "logs/observe/fetch_{lens}.log",
    conda:
        "../envs/observe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        mast=canonical(config["observations"]["mast"]),
        lenses=canonical(config["observations"].get("lenses", [])),
        instrument=canonical(config["instrument"]),
    script:
        "../workflow/scripts/fetch_hst.py"


ruleorder: observe_mock > fetch_hst


rule preprocess:
    input:
        frame=raw_frame,
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
        observations=canonical(config["observations"]),
        instrument=canonical(config["instrument"]),
        mask=canonical(config["mask"]),
    script:
        "../workflow/scripts/preprocess.py"
