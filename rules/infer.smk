# Stage 7: inference — per-lens γ curves, the combined curve, MLEs and intervals; CDM (NFW/TNFW) test sets;
# the misspecification check of every observation in each estimator's own embedding.

# simulated images held out from training that the observations are compared with (coverage and KDE datasets)
MISSPEC_DATASETS = sorted(
    {config["calibrate"]["coverage_dataset"], config["calibrate"]["kde_dataset"]}
)
COVERAGE_CURVES = (
    f"results/curves/{{est}}/{config['calibrate']['coverage_dataset']}.npz"
)


rule misspecification:
    input:
        model="results/models/{est}/model.pt",
        manifests=expand(
            "results/data/{dataset}/manifest.json", dataset=MISSPEC_DATASETS
        ),
        masks_ref=expand("results/data/{dataset}/masks.zarr", dataset=MISSPEC_DATASETS),
        images=expand("results/observations/processed/{lens}/image.npy", lens=LENSES),
        masks=expand("results/observations/processed/{lens}/mask.npy", lens=LENSES),
        metadata=expand(
            "results/observations/processed/{lens}/metadata.json", lens=LENSES
        ),
    output:
        "results/inference/{est}/misspecification.json",
    log:
        "logs/infer/{est}_misspecification.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        misspecification=canonical(config["inference"]["misspecification"]),
        instrument=canonical(config["instrument"]),
        lenses=LENSES,
    script:
        "../workflow/scripts/misspecification.py"


rule infer:
    input:
        model="results/models/nre/model.pt",
        thresholds="results/calibration/nre/thresholds.json",
        kde="results/calibration/nre/kde.npz",
        coverage_curves=COVERAGE_CURVES.format(est="nre"),
        misspecification="results/inference/nre/misspecification.json",
        images=expand("results/observations/processed/{lens}/image.npy", lens=LENSES),
        masks=expand("results/observations/processed/{lens}/mask.npy", lens=LENSES),
        metadata=expand(
            "results/observations/processed/{lens}/metadata.json", lens=LENSES
        ),
    output:
        summary="results/inference/nre/summary.json",
        curves="results/inference/nre/curves.csv",
    log:
        "logs/infer/nre.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        inference=canonical(config["inference"]),
        calibrate=canonical(config["calibrate"]),
        seed=config["seed"],
        lenses=LENSES,
    script:
        "../workflow/scripts/infer.py"


rule infer_flow:
    input:
        model="results/models/npe/model.pt",
        thresholds=(
            "results/calibration/npe/thresholds.json"
            if "npe" in GAMMA_ESTIMATORS
            else []
        ),
        kde="results/calibration/npe/kde.npz" if "npe" in GAMMA_ESTIMATORS else [],
        coverage_curves=(
            COVERAGE_CURVES.format(est="npe") if "npe" in GAMMA_ESTIMATORS else []
        ),
        misspecification="results/inference/npe/misspecification.json",
        images=expand("results/observations/processed/{lens}/image.npy", lens=LENSES),
        masks=expand("results/observations/processed/{lens}/mask.npy", lens=LENSES),
        metadata=expand(
            "results/observations/processed/{lens}/metadata.json", lens=LENSES
        ),
    output:
        summary="results/inference/npe/summary.json",
        curves="results/inference/npe/curves.csv",
        samples="results/inference/npe/samples.npz",
    log:
        "logs/infer/npe.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        inference=canonical(config["inference"]),
        n_samples=config["flow"]["n_samples"],
        lenses=LENSES,
        seed=config["seed"],
        gamma_prior=GAMMA_PRIOR,
        calibrate=canonical(config["calibrate"]),
    script:
        "../workflow/scripts/infer_flow.py"


rule infer_cdm:
    input:
        curves="results/curves/{est}/{dataset}.npz",
        thresholds="results/calibration/{est}/thresholds.json",
    output:
        "results/inference/{est}/cdm_{dataset}.json",
    log:
        "logs/infer/{est}_cdm_{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        inference=canonical(config["inference"]),
        seed=config["seed"],
    script:
        "../workflow/scripts/infer_cdm.py"
