#!/usr/bin/env python3
"""CPU cost of one training step: the settings of ``lensinfer.train`` vs PyTorch's defaults, side by side.

One optimiser step (loss, backward, AdamW) on a batch of ``--batch`` random 1×``--num-pix``² images, for

* ``npe``: the posterior estimator of ``bench/science_npe.py`` (small ResNet width 16 with the arcsinh stretch →
  NSF, 4 transforms [64, 64], 5 targets; ``lensinfer.models.flow.flow_loss``);
* ``nre``: the ratio estimator of the ``model`` section (``--depth``/``--width``, default the demo's small/16;
  ``lensinfer.models.ratio.ratio_loss``).

Both sides use deterministic kernels (``torch.use_deterministic_algorithms``, as training on CPU does) and the same
weights and batch:

* **defaults**: NCHW tensors, the NaN-filling of fresh tensors that deterministic mode switches on, the per-tensor
  (``foreach``) AdamW, and ``torch.asinh`` for the stretch (a scalar loop on CPU);
* **lensinfer** (what ``lensinfer.train`` does): channels_last images and weights, no NaN-filling,
  :func:`lensinfer.train.build_optimizer` (fused AdamW), :func:`lensinfer.models.flow.fast_asinh`.

AdamW's default weight decay (0.01) on both sides.

Timed alternately (``--repeats`` rounds of ``--steps`` steps per side; median ms per step), torch threads
``--threads``. The last line is one JSON object with ``ms_per_step_*``, ``speedup_*`` = defaults / lensinfer and
``loss_diff_*``, the difference of the two sides' losses on the same batch before training (rounding only).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any, Callable

import torch
import torch.utils.deterministic

from lensinfer.models.flow import FlowPosterior, flow_loss
from lensinfer.models.ratio import RatioEstimator, ratio_loss
from lensinfer.train import build_optimizer

STRETCH = 0.05


class _TorchAsinh(torch.nn.Module):
    """The stretch with ``torch.asinh`` in front of a linear (stretch-free) posterior estimator: the defaults side."""

    def __init__(self, model: FlowPosterior, zero_level: float) -> None:
        super().__init__()
        self.model, self.zero_level = model, zero_level

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(torch.asinh((x - self.zero_level) / STRETCH))

    def log_prob(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob_features(theta, self.embed(x))


def make_sides(kind: str, depth: str, width: int, seed: int = 0) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """{side: (model, loss)} with equal weights on both sides."""
    torch.manual_seed(seed)
    if kind == "npe":
        kw: dict[str, Any] = dict(depth="small", width=16, transforms=4, hidden_features=[64, 64], bins=8,
                                  context_features=64)
        ours = FlowPosterior(5, 1, stretch=STRETCH, zero_level=-0.5, **kw)
        linear = FlowPosterior(5, 1, **kw)
        linear.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "zero_level"}, strict=False)
        return {"defaults": (_TorchAsinh(linear, -0.5), flow_loss), "lensinfer": (ours, flow_loss)}
    ours = RatioEstimator(depth, width, head_hidden=128)
    return {"defaults": (copy.deepcopy(ours), ratio_loss), "lensinfer": (ours, ratio_loss)}


def time_steps(model: torch.nn.Module, loss_fn: Callable, opt: torch.optim.Optimizer, x: torch.Tensor,
               theta: torch.Tensor, steps: int, lensinfer: bool) -> float:
    """Mean ms per optimiser step over ``steps`` steps (after one warm-up step)."""
    torch.utils.deterministic.fill_uninitialized_memory = not lensinfer  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    xin = x.contiguous(memory_format=torch.channels_last) if lensinfer else x

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model, xin, theta, gen).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small images, one round (smoke test)")
    ap.add_argument("--num-pix", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="steps per side per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", default="small", help="NRE trunk depth (small, 18, 34, 50)")
    ap.add_argument("--width", type=int, default=16, help="NRE trunk width")
    args = ap.parse_args()
    if args.quick:
        args.num_pix, args.batch, args.steps, args.repeats = 32, 8, 2, 1
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 1, args.num_pix, args.num_pix, generator=gen) * 2
    result: dict[str, Any] = {"num_pix": args.num_pix, "batch": args.batch, "threads": args.threads,
                              "nre_model": f"{args.depth}/{args.width}"}
    for kind in ("npe", "nre"):
        sides = make_sides(kind, args.depth, args.width)
        theta = torch.randn(args.batch, 5 if kind == "npe" else 1, generator=gen)
        opts = {}
        for side, (model, _) in sides.items():
            if side == "lensinfer":
                model.to(memory_format=torch.channels_last)
            model.train()
            opts[side] = (build_optimizer(model, {"lr": 1e-4, "weight_decay": 1e-2}, torch.device("cpu"))
                          if side == "lensinfer" else torch.optim.AdamW(model.parameters(), lr=1e-4))
        with torch.no_grad():  # same weights and batch: the two sides compute the same loss (up to rounding)
            losses = [float(loss_fn(model, x, theta, torch.Generator().manual_seed(0)))
                      for model, loss_fn in sides.values()]
        result[f"loss_diff_{kind}"] = abs(losses[0] - losses[1])
        times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, (model, loss_fn) in sides.items():
                times[side].append(time_steps(model, loss_fn, opts[side], x, theta, args.steps, side == "lensinfer"))
        med = {side: statistics.median(v) for side, v in times.items()}
        result[f"ms_per_step_{kind}_defaults"] = round(med["defaults"], 1)
        result[f"ms_per_step_{kind}_lensinfer"] = round(med["lensinfer"], 1)
        result[f"speedup_{kind}"] = round(med["defaults"] / med["lensinfer"], 2)
        print(f"{kind}: defaults {med['defaults']:.1f} ms/step, lensinfer {med['lensinfer']:.1f} ms/step "
              f"({med['defaults'] / med['lensinfer']:.2f}×)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
