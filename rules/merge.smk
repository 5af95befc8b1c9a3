# Stage 2: gather the shards of a dataset: manifest with checksums, merged parameter table, whitening stats.


rule merge:
    input:
        shards_of,
    output:
        manifest="results/data/{dataset}/manifest.json",
        table=directory("results/data/{dataset}/table.zarr"),
        stats="results/data/{dataset}/stats.json",
    log:
        "logs/merge/{dataset}.log",
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        # peak 144 MB at the paper's 100×100 (bench/memory.py --num-pix 100 --paper-models --single --n 500) and flat
        # in N (bench/memory.py: 10 N / N peak ratio ≤ 1.3): ×3
        mem_mb=450,
        runtime=60,
    params:
        pixel_scale=config["instrument"]["pixel_scale"],
        radius_theta_E=config["mask"]["radius_theta_E"],
    script:
        "../workflow/scripts/merge.py"
