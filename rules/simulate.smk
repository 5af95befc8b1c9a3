# Stage 1: simulate lens images in shards (one zarr store per shard, seeds derived from (seed, dataset, shard)).
# The paper config has ~5000 shard jobs, so this rule is kept cheap for the DAG builder (bench/dag.py): a static
# input list, no benchmark file (each shard's log ends with its wall time and peak memory instead).
from lensinfer.resources import simulate_shard_runtime_min


rule simulate_shard:
    input:
        COSMOS_PREPARED,
    output:
        directory("results/sims/{dataset}/shard_{shard}.zarr"),
    log:
        "logs/simulate/{dataset}/shard_{shard}.log",
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        # minutes from the measured cost per image and subhalo (bench/simulate.py) × 6 + 5: paper training shard 19
        # (was 240; measured ≈ 8 with line-of-sight halos); lensinfer.resources.simulate_shard_runtime_min
        runtime=lambda wildcards: simulate_shard_runtime_min(config, wildcards.dataset),
    params:
        sim=simulation_params,
    script:
        "../workflow/scripts/simulate_shard.py"


# COSMOS galaxy sources (lens.source.type: cosmos): optional download, then one job that builds paltas' galaxy
# cache in the catalog folder before parallel simulation jobs use it (it is written on first use and would race).


localrules:
    download_cosmos,


rule download_cosmos:
    output:
        f"{COSMOS_DIR}/lensinfer_verified.json",
    log:
        "logs/cosmos/download.log",
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        download=canonical(config["lens"]["source"].get("download", {})),
    script:
        "../workflow/scripts/download_cosmos.py"


rule prepare_cosmos:
    input:
        cosmos_download_marker,
    output:
        "results/cosmos/prepared.json",
    log:
        "logs/cosmos/prepare.log",
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        source=canonical(config["lens"]["source"]),
        zero_point=config["instrument"]["magnitude_zero_point"],
        cosmology=config["cosmology"],
    script:
        "../workflow/scripts/prepare_cosmos.py"
