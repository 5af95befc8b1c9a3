# Stage 3: masks of radius 1.5·θE around the true lens centre (lenstronomy pixel-centre convention).


rule mask:
    input:
        manifest="results/data/{dataset}/manifest.json",
        table="results/data/{dataset}/table.zarr",
    output:
        directory("results/data/{dataset}/masks.zarr"),
    log:
        "logs/mask/{dataset}.log",
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        # peak 78 MB at the paper's 100×100 in chunks of 250 (bench/memory.py --num-pix 100 --paper-models --single
        # --n 500 --chunk 250) and flat in N (bench/memory.py): ×3
        mem_mb=250,
        runtime=30,
    params:
        pixel_scale=config["instrument"]["pixel_scale"],
        radius_theta_E=config["mask"]["radius_theta_E"],
        chunk_images=config["storage"]["chunk_images"],
    script:
        "../workflow/scripts/mask.py"
