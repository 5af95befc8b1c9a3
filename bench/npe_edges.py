#!/usr/bin/env python3
"""Edge peaks of single-lens γ curves: NPE beside NRE beside the truths (issue 17, item 5).

For every simulated dataset whose curves the DAG computed (``results/curves/{nre,npe}/{dataset}.npz``: the demo's
test sets ``test`` (EPL subhalos, γ on a fixed list) and ``test_nfw`` (NFW subhalos, no γ), and the KDE
calibration set ``val`` (γ from the training prior U(1.1, 2.9))), the share of single-lens curves whose maximum
lies within ``--width`` (default 0.05) of a prior edge (the grid range [low, high]), per estimator, beside the
share of true γ values there (NaN for NFW sets). A well-calibrated estimator peaks at an edge about as often as
truths lie there (more when the data are uninformative); spikes of the flow's density at the prior bounds show up
as an NPE share far above both.

    python bench/npe_edges.py [--results results] [--width 0.05]

Before/after the fix: run the DAG with ``flow: {prior_support: false}`` (the flow over the whitened γ itself) and
with the default (``true``: the flow over the prior box), each into its own working directory, and point
``--results`` at each.

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lensinfer.calibrate import grid_range


def edge_share(grid: np.ndarray, curves: np.ndarray, width: float) -> float:
    """Share of curves (B, G) whose arg-max lies within ``width`` of either end of the grid range."""
    low, high = grid_range(grid)
    peak = grid[np.argmax(curves, axis=1)]
    return float(np.mean((peak - low < width) | (high - peak < width)))


def truth_share(grid: np.ndarray, truths: np.ndarray, width: float) -> float | None:
    """Share of (finite) true γ values within ``width`` of either end of the grid range (None if none are finite)."""
    low, high = grid_range(grid)
    t = truths[np.isfinite(truths)]
    return float(np.mean((t - low < width) | (high - t < width))) if t.size else None


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--width", type=float, default=0.05)
    args = ap.parse_args()
    root = Path(args.results) / "curves"
    out: dict = {"width": args.width, "datasets": {}}
    datasets = sorted({p.stem for est in ("nre", "npe") for p in (root / est).glob("*.npz")})
    for ds in datasets:
        row: dict = {}
        for est in ("nre", "npe"):
            path = root / est / f"{ds}.npz"
            if not path.exists():
                continue
            blob = np.load(path)
            row[est] = edge_share(blob["grid"], blob["curves"], args.width)
            row["n"] = int(len(blob["curves"]))
            row["truth"] = truth_share(blob["grid"], blob["gamma"], args.width)
        out["datasets"][ds] = row
        truth = "n/a" if row["truth"] is None else f"{row['truth']:.3f}"
        print(f"{ds:10s} n={row['n']:5d}  NRE {row.get('nre', float('nan')):.3f}  NPE {row.get('npe', float('nan')):.3f}"
              f"  truths {truth}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
