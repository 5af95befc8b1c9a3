# Stage 1: simulate lens images in shards (one zarr store per shard, seeds derived from (seed, dataset, shard)).


rule simulate_shard:
    output:
        directory("results/sims/{dataset}/shard_{shard}.zarr"),
    params:
        sim=simulation_params,
    log:
        "logs/simulate/{dataset}/shard_{shard}.log",
    benchmark:
        "logs/simulate/{dataset}/shard_{shard}.benchmark.tsv"
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    script:
        "../workflow/scripts/simulate_shard.py"
