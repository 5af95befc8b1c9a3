# Stage 8: figures, each a function of saved results; all tagged for `snakemake --report`.
# Per-estimator figures live under results/plots/{est}/ (est = nre | npe), shared ones under results/plots/.


rule plot_training:
    input:
        history="results/models/{est}/history.csv",
    output:
        report(
            "results/plots/{est}/training.png",
            caption="../report/training.rst",
            category="Training",
            subcategory="{est}",
        ),
    log:
        "logs/plot/{est}/training.log",
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
        misspecification=expand(
            "results/inference/{est}/misspecification.json", est=ESTIMATORS
        ),
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
        summary="results/inference/{est}/summary.json",
        curves="results/inference/{est}/curves.csv",
        cdm=lambda w: expand(
            "results/inference/{est}/cdm_{dataset}.json",
            est=w.est,
            dataset=CDM_BANDS,
        ),
    output:
        report(
            "results/plots/{est}/gamma_curves.png",
            caption="../report/gamma_curves.rst",
            category="Inference",
            subcategory="{est}",
        ),
    log:
        "logs/plot/{est}/gamma_curves.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"


rule plot_cdm_sweep:
    input:
        cdm=lambda w: expand(
            "results/inference/{est}/cdm_{dataset}.json",
            est=w.est,
            dataset=[r["dataset"] for r in CDM_SWEEP],
        ),
    output:
        report(
            "results/plots/{est}/cdm_sweep.png",
            caption="../report/cdm_sweep.rst",
            category="Inference",
            subcategory="{est}",
        ),
    log:
        "logs/plot/{est}/cdm_sweep.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        sweep=CDM_SWEEP,
    script:
        "../workflow/scripts/plot.py"


rule plot_coverage:
    input:
        coverage="results/calibration/{est}/coverage.csv",
        thresholds="results/calibration/{est}/thresholds.json",
    output:
        report(
            "results/plots/{est}/coverage.png",
            caption="../report/coverage.rst",
            category="Calibration",
            subcategory="{est}",
        ),
    log:
        "logs/plot/{est}/coverage.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"


rule plot_estimator_comparison:
    input:
        nre="results/inference/nre/curves.csv",
        npe="results/inference/npe/curves.csv",
    output:
        report(
            "results/plots/estimator_comparison.png",
            caption="../report/estimator_comparison.rst",
            category="Inference",
        ),
    log:
        "logs/plot/estimator_comparison.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"


# NPE diagnostics on simulations drawn from the prior (flow.diagnostics_dataset; default: the validation set).


rule plot_npe_samples:
    input:
        samples=f"results/posterior/npe/{DIAGNOSTICS_DATASET}.npz",
        diagnostics=f"results/diagnostics/npe/{DIAGNOSTICS_DATASET}.json",
    output:
        report(
            "results/plots/npe/{figure}.png",
            caption="../report/npe_diagnostics.rst",
            category="NPE diagnostics",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/plot/npe/{figure}.log",
    wildcard_constraints:
        figure="|".join(NPE_DIAGNOSTIC_PLOTS),
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        n_corner=config["plot"]["n_corner"],
    script:
        "../workflow/scripts/plot.py"


rule plot_derived:
    input:
        derived="results/derived/npe/derived.json",
    output:
        report(
            "results/plots/npe/derived.png",
            caption="../report/derived.rst",
            category="Inference",
            subcategory="npe",
        ),
    log:
        "logs/plot/npe/derived.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../workflow/scripts/plot.py"
