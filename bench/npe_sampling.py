#!/usr/bin/env python3
"""Posterior-sampling speed of flow configurations: time to draw S samples for each of N lenses (default
2 500 × 5 000, the issue's target ≤ 20 s) for an 8-parameter macro-model posterior, side by side in one run.

Untrained flows of the given sizes on random 64-feature contexts (sampling cost does not depend on the weights);
timed on ``--timed`` lenses and scaled to ``--lenses``. Last line: one JSON object {config name: seconds}.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lensinfer.models.flow import build_flow_posterior

CONFIGS = {
    "nsf_128x2_8bins": dict(type="nsf", transforms=4, hidden_features=[128, 128], bins=8),
    "nsf_64x2_8bins": dict(type="nsf", transforms=4, hidden_features=[64, 64], bins=8),
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
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    args = ap.parse_args()
    if args.quick:
        args.lenses, args.samples, args.timed = 4, 50, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict[str, float | int] = {"lenses": args.lenses, "samples": args.samples, "threads": args.threads}
    for name, cfg in CONFIGS.items():
        cfg = dict(cfg, passes=2, context_features=64, embedding={"depth": "small", "width": 16})
        model = build_flow_posterior(cfg, args.params, 1).eval()
        feats = torch.randn(args.timed, 64)
        with torch.inference_mode():
            model.sample_features(feats[:1], 10)  # warm-up
            t0 = time.perf_counter()
            z = model.sample_features(feats, args.samples)
            dt = time.perf_counter() - t0
        assert z.shape == (args.timed, args.samples, args.params)
        result[f"seconds_{name}"] = dt * args.lenses / args.timed  # unrounded: quick runs take milliseconds
        print(f"{name:18s} {result[f'seconds_{name}']:8.1f} s for {args.lenses} lenses x {args.samples} samples")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
