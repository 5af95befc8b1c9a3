# Stage 8: figures, each a function of saved results; all tagged for `snakemake --report`.


rule plot_training:
    input:
        history=f"results/models/{ESTIMATOR}/history.csv",
    output:
        report(
            "results/plots/training.png",
            caption="../report/training.rst",
            category="Training",
        ),
    log:
        "logs/plot/training.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"


rule plot_examples:
    input:
        manifest=f"results/data/{config['train']['dataset']}/manifest.json",
        masks=merged(config["train"]["dataset"])["masks"],
    output:
        report(
            "results/plots/examples.png",
            caption="../report/examples.rst",
            category="Data",
        ),
    log:
        "logs/plot/examples.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        n=config["plot"]["n_examples"],
    script:
        "../workflow/scripts/plot.py"


rule plot_observations:
    input:
        images=expand("results/observations/processed/{lens}/image.npy", lens=LENSES),
        masks=expand("results/observations/processed/{lens}/mask.npy", lens=LENSES),
    output:
        report(
            "results/plots/observations.png",
            caption="../report/observations.rst",
            category="Observations",
        ),
    log:
        "logs/plot/observations.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        lenses=LENSES,
    script:
        "../workflow/scripts/plot.py"


rule plot_gamma_curves:
    input:
        summary=f"results/inference/{ESTIMATOR}/summary.json",
        curves=f"results/inference/{ESTIMATOR}/curves.csv",
        cdm=expand(
            "results/inference/{est}/cdm_{dataset}.json",
            est=ESTIMATOR,
            dataset=config["inference"]["cdm_datasets"],
        ),
    output:
        report(
            "results/plots/gamma_curves.png",
            caption="../report/gamma_curves.rst",
            category="Inference",
        ),
    log:
        "logs/plot/gamma_curves.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"


rule plot_coverage:
    input:
        coverage=f"results/calibration/{ESTIMATOR}/coverage.csv",
        thresholds=f"results/calibration/{ESTIMATOR}/thresholds.json",
    output:
        report(
            "results/plots/coverage.png",
            caption="../report/coverage.rst",
            category="Calibration",
        ),
    log:
        "logs/plot/coverage.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"
