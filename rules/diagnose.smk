# Stage 6b (NPE): posterior samples of simulations (flow.diagnostics_dataset), their coverage diagnostics (TARP, SBC, R², bias…),
# and derived quantities (image positions, time delays) of the observed lenses when the config has a point source.


rule posterior_samples:
    input:
        model="results/models/npe/model.pt",
        manifest="results/data/{dataset}/manifest.json",
        masks="results/data/{dataset}/masks.zarr",
    output:
        "results/posterior/npe/{dataset}.npz",
    log:
        "logs/posterior/npe/{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        # host peak 0.86 GB on the CPU with the paper's NSF, 5 000 samples per image (bench/memory.py --num-pix 100
        # --paper-models --n-samples 5000 --single --n 500), flat in N; + the CUDA runtime's host memory on a GPU node
        mem_mb=4000,
        runtime=120,
    params:
        n_samples=config["flow"]["n_samples"],
        seed=config["seed"],
        # the torch device (lensinfer.device.select_device): auto uses the granted GPU or fails
        device=config["train"]["device"],
    script:
        "../workflow/scripts/posterior_samples.py"


rule diagnose:
    input:
        "results/posterior/npe/{dataset}.npz",
    output:
        "results/diagnostics/npe/{dataset}.json",
    log:
        "logs/diagnostics/npe/{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        seed=config["seed"],
    script:
        "../workflow/scripts/diagnose.py"


rule derive:
    input:
        samples="results/inference/npe/samples.npz",
        truths=(
            expand("results/observations/mock/{lens}/truth.json", lens=LENSES)
            if config["observations"]["source"] == "mock"
            else []
        ),
    output:
        "results/derived/npe/derived.json",
    log:
        "logs/derived/npe.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cosmology=config["cosmology"],
        derived=canonical(config["derived"]),
        seed=config["seed"],
    script:
        "../workflow/scripts/derive.py"
