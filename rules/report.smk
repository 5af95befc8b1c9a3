# Stage 9: the report's front page — the answer of the run (combined γ per estimator) as reStructuredText that
# report/workflow.rst includes when `snakemake --report` renders it, and as the report item "Result".

# the headline figure: the γ curves of the first estimator that gives γ (else the observations)
HEADLINE_FIGURE = (
    f"results/plots/{GAMMA_ESTIMATORS[0]}/gamma_curves.png"
    if GAMMA_ESTIMATORS
    else "results/plots/observations.png"
)


rule report_front_page:
    input:
        summaries=expand("results/inference/{est}/summary.json", est=ESTIMATORS),
        headline=HEADLINE_FIGURE,
    output:
        rst="results/report/front_page.rst",
        html=report(
            "results/report/result.html",
            caption="../report/result.rst",
            category="Result",
        ),
    log:
        "logs/report/front_page.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        estimators=ESTIMATORS,
        observation_source=config["observations"]["source"],
    script:
        "../workflow/scripts/front_page.py"
