#!/usr/bin/env python3
"""Cost of a full 150-point γ curve per lens: embed once + head × grid vs 150 full forward passes (issue 4, item 6).

Same weights on both sides: a ResNet-18 ratio estimator (late fusion, 11.4 M parameters, 1×100×100 input,
random initialisation — the cost does not depend on the weights' values), 150-point grid.

* **ours** (``ms_per_lens``): :meth:`lensinfer.models.ratio.RatioEstimator.log_ratio_grid` of the inference copy
  :meth:`~lensinfer.models.ratio.RatioEstimator.fused` (BatchNorm folded into the convolutions, channels_last),
  on batches of ``--batch`` lenses under ``torch.inference_mode``: one trunk pass per lens, then fc1 split as
  W_f·f + w_θ·θ so the 150 grid points cost a (150 × 512) broadcast add, a ReLU and a dot product.
* **naive** (``naive_ms_per_lens``): the reference's procedure — per lens, one batch of 150 copies of the image
  paired with the 150 grid values through the full network (``model(x, θ)``) — with the *same* fused model and
  ``inference_mode``, so the ratio measures the algorithm, not the execution tricks. ``naive_eager_ms_per_lens``
  is the reference exactly as it ran (eager model with BatchNorm layers).
* ``bf16_ms_per_lens``: ours under CPU bf16 autocast (oneDNN uses AMX/AVX-512-bf16 where the CPU has it), with its
  largest deviation from the float32 curves (``bf16_max_abs_diff``); not used by the pipeline.

Both sides are timed alternately in the same run (``--repeats`` rounds, median per side), with torch's threads set
to ``--threads``; the float32 curves of the two agree to rounding (``max_abs_diff``). ``--quick``: fewer
lenses/rounds. The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from lensinfer.infer import grid_centres
from lensinfer.models.ratio import RatioEstimator


def time_ours(model: RatioEstimator, x: torch.Tensor, theta: torch.Tensor, batch: int,
              bf16: bool = False) -> tuple[float, torch.Tensor]:
    """(seconds, curves (N, G)) for all lenses in ``x`` (N, 1, H, W), ``batch`` lenses per call."""
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        curves = torch.cat([model.log_ratio_grid(x[i:i + batch], theta).float() for i in range(0, len(x), batch)])
    return time.perf_counter() - t0, curves


def time_naive(model: RatioEstimator, x: torch.Tensor, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(seconds, curves (N, G)): per lens, one batch of G image copies through the full network."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        curves = torch.stack([model(xi.expand(len(theta), *xi.shape), theta) for xi in x])
    return time.perf_counter() - t0, curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few lenses, one round, 48×48 images (smoke test)")
    ap.add_argument("--lenses", type=int, default=128, help="lenses per round, ours")
    ap.add_argument("--naive-lenses", type=int, default=2, help="lenses per round, naive")
    ap.add_argument("--batch", type=int, default=64, help="lenses per embedding batch, ours")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: robust on a shared machine — OpenMP barriers stall when a core is busy)")
    ap.add_argument("--depth", default="18")
    ap.add_argument("--num-pix", type=int, default=100)
    args = ap.parse_args()
    if args.quick:
        args.lenses, args.naive_lenses, args.repeats, args.batch, args.num_pix = 16, 1, 1, 16, 48
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = RatioEstimator(args.depth, 64, 512).eval()
    for m in eager.modules():  # non-trivial BatchNorm statistics, so that folding them is actually exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model = eager.fused()
    theta = torch.as_tensor((grid_centres(1.1, 2.9, 150) - 2.0) / 0.52, dtype=torch.float32)
    x = torch.randn(args.lenses, 1, args.num_pix, args.num_pix)

    warm = x[: min(args.batch, len(x))]  # warm-up: allocator, oneDNN primitives for every shape
    time_ours(model, warm, theta, args.batch)
    time_ours(model, warm, theta, args.batch, bf16=True)
    time_naive(model, x[:1], theta)
    time_naive(eager, x[:1], theta)
    rounds: dict[str, list[float]] = {"ours": [], "naive": [], "bf16": [], "eager": []}
    diffs, bf16_diffs, eager_diffs = [], [], []
    k = args.naive_lenses
    for _ in range(args.repeats):
        t, curves = time_ours(model, x, theta, args.batch)
        rounds["ours"].append(t / len(x))
        t, slow = time_naive(model, x[:k], theta)
        rounds["naive"].append(t / k)
        diffs.append(float((curves[:k] - slow).abs().max()))
        t, half = time_ours(model, x, theta, args.batch, bf16=True)
        rounds["bf16"].append(t / len(x))
        bf16_diffs.append(float((half - curves).abs().max()))
        t, ref = time_naive(eager, x[:k], theta)
        rounds["eager"].append(t / k)
        eager_diffs.append(float((curves[:k] - ref).abs().max()))
    ms = {key: 1e3 * statistics.median(v) for key, v in rounds.items()}
    for key, what in (("ours", f"embed once + head × 150, batches of {args.batch} lenses"),
                      ("naive", "150 full passes as one batch of 150, same fused model"),
                      ("eager", "150 full passes as one batch of 150, eager model (reference)"),
                      ("bf16", f"ours under bf16 autocast, batches of {args.batch} lenses")):
        print(f"{key:>6}: {ms[key]:9.2f} ms per lens ({what}); rounds: "
              f"{', '.join(f'{1e3 * t:.2f}' for t in rounds[key])}")
    print(json.dumps({
        "ms_per_lens": round(ms["ours"], 3), "naive_ms_per_lens": round(ms["naive"], 2),
        "speedup": round(ms["naive"] / ms["ours"], 1), "naive_eager_ms_per_lens": round(ms["eager"], 2),
        "speedup_vs_eager": round(ms["eager"] / ms["ours"], 1), "bf16_ms_per_lens": round(ms["bf16"], 3),
        "bf16_max_abs_diff": max(bf16_diffs), "max_abs_diff": max(diffs), "eager_max_abs_diff": max(eager_diffs),
        "grid_points": len(theta), "depth": args.depth, "num_pix": args.num_pix, "batch_lenses": args.batch,
        "naive_batch": len(theta), "lenses_per_round": args.lenses, "naive_lenses_per_round": k,
        "repeats": args.repeats, "threads": args.threads, "load_avg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
