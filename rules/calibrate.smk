# Stage 5: γ-grid curves of simulated datasets, KDE calibration and coverage-recalibrated thresholds.


rule curves:
    input:
        model="results/models/{est}/model.pt",
        manifest="results/data/{dataset}/manifest.json",
        masks="results/data/{dataset}/masks.zarr",
    output:
        "results/curves/{est}/{dataset}.npz",
    log:
        "logs/curves/{est}/{dataset}.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        # host peak 0.9 GB on the CPU with the paper's ResNet-50 / NSF at 100×100 (bench/memory.py --num-pix 100
        # --paper-models --single --n 500), flat in N (bench/memory.py); + the CUDA runtime's host memory on a GPU
        # node (not measurable here)
        mem_mb=4000,
        runtime=120,
    params:
        grid=canonical(config["inference"]["grid"]),
        seed=config["seed"],
        gamma_prior=GAMMA_PRIOR,
        # posterior draws per image for the NPE's γ marginal (flow.n_samples, as for the observed lenses); none for the NRE
        n_samples=lambda w: config["flow"]["n_samples"] if w.est == "npe" else None,
        # the torch device (lensinfer.device.select_device): auto uses the granted GPU or fails
        device=config["train"]["device"],
    script:
        "../workflow/scripts/curves.py"


rule calibrate:
    input:
        kde=f"results/curves/{{est}}/{config['calibrate']['kde_dataset']}.npz",
        coverage=f"results/curves/{{est}}/{config['calibrate']['coverage_dataset']}.npz",
    output:
        kde="results/calibration/{est}/kde.npz",
        thresholds="results/calibration/{est}/thresholds.json",
        coverage="results/calibration/{est}/coverage.csv",
    log:
        "logs/calibrate/{est}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        # peak 411 MB (bench/memory.py --num-pix 100 --paper-models --single --n 500; curves read as memory maps,
        # flat in N): ×3
        mem_mb=1250,
        runtime=60,
    params:
        # thresholds also for the number of observed lenses (calibrate.set_sizes filled from the observation list)
        calibrate=canonical(
            config["calibrate"]
            | {
                "set_sizes": sorted(
                    set(config["calibrate"]["set_sizes"]) | {1, len(LENSES)}
                )
            }
        ),
        levels=config["inference"]["levels"],
        seed=config["seed"],
    script:
        "../workflow/scripts/calibrate.py"
