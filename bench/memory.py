#!/usr/bin/env python3
"""Peak memory of every whole-dataset stage at N and 10 N images (issue 21 item 2): memory must not grow with the
dataset.

Builds two synthetic datasets through the real store API (``lensinfer.data.store.write_shard``): N and 10 N noisy
float32 images (default 24×24 pixels, 40 parameter columns like a real shard, shards of ``--shard-size`` images in
chunks of ``--chunk`` images). Then runs each stage on each dataset **in its own subprocess** (a fresh interpreter
that imports the stage's modules, runs the library call the workflow's script makes, and reports its own peak
resident set size, the kernel's high-water mark ``VmHWM``):

* ``merge``            ``lensinfer.data.merge.merge_dataset`` — creation digests verified (hashing every shard),
                       merged table, whitening statistics (rule ``merge``)
* ``verify``           ``load_manifest(verify=True)`` — every shard re-hashed against the manifest
* ``mask``             ``write_masks`` (rule ``mask``)
* ``curves_nre``       ``lensinfer.infer.dataset_curves`` with a small ratio estimator (rule ``curves``, est=nre)
* ``curves_npe``       ``lensinfer.npe.dataset_curves`` with a small flow on (γ, e1): the γ marginal from
                       ``--n-samples`` posterior samples per image (rule ``curves``, est=npe)
* ``posterior_samples`` ``lensinfer.npe.posterior_samples``, ``--n-samples`` draws per image (rule ``posterior_samples``)
* ``calibrate``        ``lensinfer.calibrate.run_calibration`` on the NRE curves (rule ``calibrate``)
* ``train_nre``        ``lensinfer.train.train_ratio_estimator``, one epoch of the small NRE over the whole dataset
                       (batch 64, the loader in the main process; the same set as validation) on the CPU (rules
                       ``train_nre``/``train_flow`` share the loader): the host memory of training must not grow with
                       the number of training images
* ``baseline_data``    ``import lensinfer.data.merge`` and nothing else (the floor of the data stages)
* ``baseline_torch``   ``import torch, lensinfer.infer, lensinfer.npe, lensinfer.calibrate`` (the other stages' floor)

Each child imports only what its stage's workflow script imports, so a peak is not diluted by an unused floor, and
fixes glibc's mmap threshold as every workflow job does (``lensinfer.workflow.logged``); ``--glibc-default`` leaves
glibc's dynamic threshold, whose heap fragmentation adds ~20 MB that grows with the number of blocks processed.

Per stage it prints the peak at N and 10 N (MB; the median of ``--repeat`` runs for stages of up to a minute, since
a run's high-water mark varies by ~10 MB between identical runs), their ratio, and ``growth_mb`` (10 N − N). The last line is one
JSON object with ``max_peak_ratio_10x`` (the goal is ≤ 1.3) and the per-stage figures. The models are untrained
(weights do not change memory); the images are tiny so that anything held per image would dominate the peak.

``--num-pix 100 --paper-models --n-samples 5000`` measures at the paper's image size with the paper config's networks
(ResNet-50 NRE and NPE embedding, 5-transform NSF on γ alone) and sample count: the peaks the workflow's
``resources: mem_mb`` are set from (``--single``: at N only, since the peaks do not grow with N). ``--quick``: N = 300 (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIXEL_SCALE = 0.04
N_COLUMNS = 40
GRID = {"low": 1.1, "high": 2.9, "n": 150}
STAGES = ["baseline_data", "merge", "verify", "mask", "baseline_torch", "curves_nre", "curves_npe", "posterior_samples",
          "calibrate", "train_nre"]
SMALL_NRE = {"depth": "small", "width": 8, "head_hidden": 16, "dropout": 0.0}
SMALL_FLOW = {"type": "nsf", "transforms": 2, "hidden_features": [16, 16], "bins": 4, "passes": 2,
              "context_features": 8, "embedding": {"depth": "small", "width": 8, "dropout": 0.0}}
# config/paper.yaml's model and flow sections
PAPER_NRE = {"depth": "50", "width": 64, "head_hidden": 512, "dropout": 0.0}
PAPER_FLOW = {"type": "nsf", "transforms": 5, "hidden_features": [256, 256], "bins": 8, "passes": 2,
              "context_features": 128, "embedding": {"depth": "50", "width": 64, "dropout": 0.0}}
TARGETS = ["gamma_pop", "lens_e1"]
PAPER_TARGETS = ["gamma_pop"]  # config/paper.yaml flow.targets: γ curves evaluated exactly on the grid


def build_shards(root: Path, n: int, num_pix: int, shard_size: int, chunk: int, seed: int = 0) -> list[Path]:
    """``n`` noisy ring images with 40 parameter columns, as shards written by ``write_shard``."""
    from lensinfer.data.store import ShardData, write_shard

    rng = np.random.default_rng(seed)
    coords = (np.arange(num_pix) - (num_pix - 1) / 2) * PIXEL_SCALE * 100 / num_pix
    xx, yy = np.meshgrid(coords, coords)
    columns = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub", "lens_e1"]
    columns += [f"extra_{i}" for i in range(N_COLUMNS - len(columns))]
    paths = []
    for s, start in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - start)
        params = rng.normal(size=(m, N_COLUMNS))
        params[:, 0] = rng.uniform(0.9, 1.3, m)
        params[:, 1:3] = rng.uniform(-0.2, 0.2, (m, 2))
        params[:, 3] = rng.uniform(1.1, 2.9, m)
        params[:, 4] = rng.integers(0, 100, m)
        params[:, 5] = rng.uniform(-0.2, 0.2, m)
        r = np.hypot(xx[None] - params[:, 1, None, None], yy[None] - params[:, 2, None, None])
        images = (params[:, 3, None, None] * np.exp(-0.5 * ((r - params[:, 0, None, None]) / 0.1) ** 2)
                  + rng.normal(0, 0.05, r.shape)).astype(np.float32)
        data = ShardData(images=images, params=params, columns=columns,
                         image_seed=rng.integers(0, 2**63, m, dtype=np.uint64), subhalos=np.zeros((0, 1)),
                         subhalo_columns=["mass"], subhalo_offsets=np.zeros(m + 1, np.int64))
        path = root / "sims" / f"shard_{s}.zarr"
        write_shard(path, data, {"dataset": "bench", "shard": s}, chunk_images=chunk)
        paths.append(path)
    return paths


def save_models(root: Path, paper: bool) -> None:
    """Untrained NRE and NPE ``model.pt`` files in the format ``lensinfer.train.load_estimator`` reads."""
    import torch

    from lensinfer.data.loader import load_whitening
    from lensinfer.models.flow import build_flow_posterior
    from lensinfer.models.ratio import build_ratio_estimator

    torch.manual_seed(0)
    merged = root / "merged"
    w = load_whitening(merged / "stats.json")
    nre_cfg = PAPER_NRE if paper else SMALL_NRE
    nre = build_ratio_estimator(dict(nre_cfg))
    torch.save({"kind": "nre", "model_cfg": dict(nre_cfg), "model": nre.state_dict(), "in_channels": 1,
                "whitening": w.to_dict()}, root / "nre.pt")
    targets = PAPER_TARGETS if paper else TARGETS
    flow_cfg = dict(PAPER_FLOW if paper else SMALL_FLOW, targets=targets)
    wf = load_whitening(merged / "stats.json", targets)
    flow = build_flow_posterior(flow_cfg, len(targets), 1, wf.zero_level)
    torch.save({"kind": "npe", "flow_cfg": flow_cfg, "targets": targets, "model": flow.state_dict(), "in_channels": 1,
                "whitening": wf.to_dict()}, root / "npe.pt")


DATA_STAGES = ("baseline_data", "merge", "verify", "mask")


def run_stage(stage: str, root: Path, args: argparse.Namespace) -> dict:
    """One stage in this process (called in the child); returns its peak RSS. The child imports what the
    workflow's script of that stage imports (numpy/zarr for the data stages, torch for the others), so the peak is
    not diluted by an unused import floor; ``baseline_data`` / ``baseline_torch`` measure those floors."""
    from lensinfer.workflow import fix_mmap_threshold, peak_rss_mb

    if not args.glibc_default:
        fix_mmap_threshold()  # as every workflow job does (lensinfer.workflow.logged)
    from lensinfer.data import merge, store

    if stage not in DATA_STAGES:
        import torch

        from lensinfer import calibrate, infer, npe

        torch.set_num_threads(1)
    merged = root / "merged"
    t0 = time.perf_counter()
    if stage == "merge":
        shards = sorted((root / "sims").glob("shard_*.zarr"), key=lambda p: int(p.stem.split("_")[1]))
        merge.merge_dataset("bench", shards, merged, pixel_scale=PIXEL_SCALE, radius_theta_e=1.5)
    elif stage == "verify":
        store.load_manifest(merged / "manifest.json", verify=True)
    elif stage == "mask":
        merge.write_masks(merged, merged / "masks.zarr", pixel_scale=PIXEL_SCALE, radius_theta_e=1.5,
                          chunk_images=args.chunk)
    elif stage == "curves_nre":
        infer.dataset_curves(root / "nre.pt", merged, merged / "masks.zarr", GRID, root / "curves_nre.npz")
    elif stage == "curves_npe":
        npe.dataset_curves(root / "npe.pt", merged, merged / "masks.zarr", GRID, root / "curves_npe.npz",
                           n_samples=args.n_samples, seed=0)
    elif stage == "posterior_samples":
        npe.posterior_samples(root / "npe.pt", merged, merged / "masks.zarr", args.n_samples, root / "samples.npz",
                              seed=0)
    elif stage == "calibrate":
        calibrate.run_calibration(kde_curves=root / "curves_nre.npz", coverage_curves=root / "curves_nre.npz",
                                  calibrate_cfg={"bandwidths": [0.02, 0.05, 0.1, 0.2], "set_sizes": [1], "n_sets": 4,
                                                 "n_nominal": 20},
                                  levels=[0.68, 0.95], seed=0, out_kde=root / "kde.npz",
                                  out_thresholds=root / "thresholds.json", out_coverage=root / "coverage.csv")
    elif stage == "train_nre":
        from lensinfer.config import load_config
        from lensinfer.data.loader import load_whitening
        from lensinfer.train import train_ratio_estimator

        cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "test.yaml")["train"]
        cfg.update(batch_size=64, max_epochs=1, num_workers=0, device="cpu")
        train_ratio_estimator(train_dir=merged, train_masks=merged / "masks.zarr", val_dir=merged,
                              val_masks=merged / "masks.zarr", whitening=load_whitening(merged / "stats.json"),
                              model_cfg=dict(SMALL_NRE), train_cfg=cfg, seed=0, out_model=root / "trained.pt",
                              out_history=root / "history.csv", checkpoint_dir=root / "ckpt", threads=1)
    elif not stage.startswith("baseline"):
        raise ValueError(f"unknown stage {stage!r}")
    # VmHWM, not ru_maxrss: Linux carries the pre-exec high-water mark (the forking parent's RSS) into ru_maxrss
    return {"stage": stage, "peak_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0}


def measure(stage: str, root: Path, args: argparse.Namespace) -> dict:
    """Run ``stage`` in fresh interpreters and return its report with the median peak: ``--repeat`` runs (a
    single run when the first takes longer than ``--repeat-below`` seconds). Native allocators (blosc, zstd, thread
    arenas) make one run's high-water mark vary by some 10 MB between identical runs."""
    reports = [_measure_once(stage, root, args)]
    if reports[0]["seconds"] <= args.repeat_below:
        reports += [_measure_once(stage, root, args) for _ in range(args.repeat - 1)]
    peaks = sorted(r["peak_mb"] for r in reports)
    return dict(reports[0], peak_mb=float(np.median(peaks)), peaks_mb=peaks)


def _measure_once(stage: str, root: Path, args: argparse.Namespace) -> dict:
    """Run ``stage`` in a fresh interpreter and return its report (last stdout line)."""
    cmd = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--chunk", str(args.chunk),
           "--n-samples", str(args.n_samples)] + (["--glibc-default"] if args.glibc_default else [])
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))  # compile once
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed on {root}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="N: the small dataset (the large one has 10 N images)")
    ap.add_argument("--num-pix", type=int, default=24)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=100, help="images per stored chunk (storage.chunk_images)")
    ap.add_argument("--n-samples", type=int, default=50, help="posterior samples per image (flow.n_samples)")
    ap.add_argument("--paper-models", action="store_true", help="the paper config's networks instead of small ones")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--single", action="store_true", help="measure N only (no 10 N run): absolute peaks")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage and size; the median peak is reported")
    ap.add_argument("--repeat-below", type=float, default=60.0,
                    help="repeat only stages whose first run took at most this many seconds")
    ap.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold in the stages")
    ap.add_argument("--quick", action="store_true", help="N = 300 (smoke test)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the datasets here (default: a temp dir)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:  # child: one stage
        print(json.dumps(run_stage(args.stage, args.root, args)))
        return
    if args.quick:
        args.n, args.shard_size, args.chunk, args.repeat = 300, 100, 50, 1
    stages = [s for s in args.stages.split(",") if s]
    tmp = None
    base = args.workdir
    if base is None:
        tmp = tempfile.mkdtemp(prefix="bench_memory_")
        base = Path(tmp)
    results: dict[str, dict] = {}
    try:
        sizes = [args.n] if args.single else [args.n, 10 * args.n]
        for n in sizes:
            root = base / f"n{n}"
            if root.exists():
                shutil.rmtree(root)
            t0 = time.perf_counter()
            build_shards(root, n, args.num_pix, args.shard_size, args.chunk)
            print(f"built {n} images of {args.num_pix}x{args.num_pix} in {time.perf_counter() - t0:.1f} s", flush=True)
            for stage in stages:
                if stage in ("curves_nre", "curves_npe", "posterior_samples") and not (root / "nre.pt").exists():
                    save_models(root, args.paper_models)
                rep = measure(stage, root, args)
                results.setdefault(stage, {})[str(n)] = rep
                print(f"{stage:18s} N={n:7d}  peak {rep['peak_mb']:8.1f} MB  ({rep['seconds']:.1f} s)", flush=True)
            shutil.rmtree(root)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out: dict = {"n": args.n, "num_pix": args.num_pix, "n_columns": N_COLUMNS, "shard_size": args.shard_size,
                 "chunk_images": args.chunk, "n_samples": args.n_samples, "paper_models": args.paper_models,
                 "glibc_default": args.glibc_default,
                 "python": platform.python_version()}
    ratios = {}
    for stage, by_n in results.items():
        small = by_n[str(args.n)]["peak_mb"]
        out[f"{stage}_peak_mb"] = round(small, 1)
        if not args.single:
            large = by_n[str(10 * args.n)]["peak_mb"]
            out[f"{stage}_peak_mb_10x"] = round(large, 1)
            out[f"{stage}_growth_mb"] = round(large - small, 1)
            out[f"{stage}_peak_ratio_10x"] = round(large / small, 3)
            if not stage.startswith("baseline"):
                ratios[stage] = large / small
    if ratios:
        worst = max(ratios, key=ratios.get)
        out["max_peak_ratio_10x"] = round(ratios[worst], 3)
        out["worst_stage"] = worst
    print(json.dumps(out))


if __name__ == "__main__":
    main()
