# Stage 4: train the ResNet likelihood-ratio estimator (a GPU rule; runs on the CPU when no GPU is present).


rule train_nre:
    input:
        train=multiext(
            f"results/data/{config['train']['dataset']}/",
            "manifest.json",
            "stats.json",
        ),
        train_masks=merged(config["train"]["dataset"])["masks"],
        val=f"results/data/{config['train']['val_dataset']}/manifest.json",
        val_masks=merged(config["train"]["val_dataset"])["masks"],
    output:
        model="results/models/nre/model.pt",
        history="results/models/nre/history.csv",
    log:
        "logs/train/nre.log",
    benchmark:
        "logs/train/nre.benchmark.tsv"
    conda:
        "../envs/train.yaml"
    # the main process + train.num_workers loader processes (lensinfer.train.loader_workers caps them to this)
    threads: max(2, 1 + config["train"]["num_workers"])
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=1440,
    params:
        model=canonical(config["model"]),
        train=canonical(config["train"]),
        seed=config["seed"],
        checkpoint_dir="results/models/nre/checkpoints",
    script:
        "../workflow/scripts/train.py"


# The normalizing-flow posterior (NPE): same data, masks and whitening as the NRE (a GPU rule as well).


rule train_flow:
    input:
        train=multiext(
            f"results/data/{config['train']['dataset']}/",
            "manifest.json",
            "stats.json",
        ),
        train_masks=merged(config["train"]["dataset"])["masks"],
        val=f"results/data/{config['train']['val_dataset']}/manifest.json",
        val_masks=merged(config["train"]["val_dataset"])["masks"],
    output:
        model="results/models/npe/model.pt",
        history="results/models/npe/history.csv",
    log:
        "logs/train/npe.log",
    benchmark:
        "logs/train/npe.benchmark.tsv"
    conda:
        "../envs/train.yaml"
    # the main process + train.num_workers loader processes (lensinfer.train.loader_workers caps them to this)
    threads: max(2, 1 + config["train"]["num_workers"])
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=1440,
    params:
        # what defines the trained flow: the sampling settings (n_samples, diagnostics_dataset) only change curves
        # and posterior draws, so editing them does not retrain
        flow=canonical(
            {k: v for k, v in config["flow"].items() if k not in FLOW_SAMPLING_KEYS}
        ),
        train=canonical(config["train"]),
        seed=config["seed"],
        checkpoint_dir="results/models/npe/checkpoints",
        gamma_prior=GAMMA_PRIOR,
    script:
        "../workflow/scripts/train.py"
