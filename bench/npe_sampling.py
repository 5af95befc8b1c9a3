#!/usr/bin/env python3
"""Posterior-sampling speed of flow configurations: time to draw S samples for each of N lenses (default
2 500 × 5 000, the issue's target ≤ 20 s) for an 8-parameter macro-model posterior, side by side in one run.

Untrained flows of the given sizes on random 64-feature contexts (sampling cost does not depend on the weights);
timed on ``--timed`` lenses and scaled to ``--lenses``. Each NSF is timed with the fused numba spline kernel
(``lensinfer.models.spline``) and with zuko's tensor splines (``_zuko``), alternately, so the ratio
``speedup_fused_<config>`` is measured side by side. Last line: one JSON object {config name: seconds, ratios}.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lensinfer.models.flow import build_flow_posterior

CONFIGS = {
    "nsf_64x2_8bins": dict(type="nsf", transforms=4, hidden_features=[64, 64], bins=8),  # bench/science_npe.py's flow
    "nsf_128x2_8bins": dict(type="nsf", transforms=4, hidden_features=[128, 128], bins=8),
    "nsf_128x2_4bins": dict(type="nsf", transforms=4, hidden_features=[128, 128], bins=4),
    "maf_128x2": dict(type="maf", transforms=4, hidden_features=[128, 128]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lenses", type=int, default=2500)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--timed", type=int, default=50, help="lenses actually timed (result scaled to --lenses)")
    ap.add_argument("--params", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="timings per variant (the minimum is reported)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    args = ap.parse_args()
    if args.quick:
        args.lenses, args.samples, args.timed = 4, 50, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict[str, float | int] = {"lenses": args.lenses, "samples": args.samples, "threads": args.threads}
    from lensinfer.models import spline

    fused_ok = spline.available
    for name, cfg in CONFIGS.items():
        cfg = dict(cfg, passes=2, context_features=64, embedding={"depth": "small", "width": 16})
        model = build_flow_posterior(cfg, args.params, 1).eval()
        feats = torch.randn(args.timed, 64)
        variants = [("", True), ("_zuko", False)] if cfg["type"] == "nsf" and fused_ok() else [("", False)]
        times: dict[str, list[float]] = {v: [] for v, _ in variants}
        with torch.inference_mode():
            for _ in range(args.repeat):
                for suffix, fused in variants:  # alternated: both see the same machine load
                    spline.available = fused_ok if fused else (lambda: False)
                    try:
                        model.sample_features(feats[:1], 10)  # warm-up (and numba compilation)
                        t0 = time.perf_counter()
                        z = model.sample_features(feats, args.samples)
                        times[suffix].append(time.perf_counter() - t0)
                    finally:
                        spline.available = fused_ok
                    assert z.shape == (args.timed, args.samples, args.params)
        for suffix, dts in times.items():
            key = f"seconds_{name}{suffix}"
            result[key] = min(dts) * args.lenses / args.timed  # unrounded: quick runs take milliseconds
            print(f"{name + suffix:24s} {result[key]:8.1f} s for {args.lenses} lenses x {args.samples} samples")
        if len(times) == 2:
            result[f"speedup_fused_{name}"] = min(times["_zuko"]) / min(times[""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
