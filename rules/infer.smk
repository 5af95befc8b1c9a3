# Stage 7: inference — per-lens γ curves, the combined curve, MLEs and intervals; CDM (NFW/TNFW) test sets.


rule infer:
    input:
        model="results/models/{est}/model.pt",
        thresholds="results/calibration/{est}/thresholds.json",
        kde="results/calibration/{est}/kde.npz",
        images=expand("results/observations/processed/{lens}/image.npy", lens=LENSES),
        masks=expand("results/observations/processed/{lens}/mask.npy", lens=LENSES),
        metadata=expand(
            "results/observations/processed/{lens}/metadata.json", lens=LENSES
        ),
    output:
        summary="results/inference/{est}/summary.json",
        curves="results/inference/{est}/curves.csv",
    log:
        "logs/infer/{est}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        inference=canonical(config["inference"]),
        lenses=LENSES,
    script:
        "../workflow/scripts/infer.py"


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
