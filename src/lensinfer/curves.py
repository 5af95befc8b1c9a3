"""Algebra of γ-grid curves shared by inference and calibration (spec/science.md §4).

A *curve* is log r̂(x | θ_g) (NRE) or log q(γ_g | x) − log π(γ_g) (NPE) on the grid of γ values θ_g. Curves are
normalised to a maximum of 0 (reference ``get_logrs``); the combined curve of N independent lenses is the sum of
their curves (flat prior on the grid range), renormalised. Intervals are {θ : −2Δlog r̂(θ) ≤ t}, the connected part
around the maximum, with the crossings located by linear interpolation between grid points (the reference took the
nearest grid point) and flagged when they hit the grid edge; t is the Wilks threshold χ²₁ isf(1 − p) or a
coverage-recalibrated one (:mod:`lensinfer.calibrate`).

:mod:`lensinfer.infer` (observations, simulated sets) and :mod:`lensinfer.calibrate` (coverage, thresholds) both
build on this module, which imports neither of them; the names stay importable from :mod:`lensinfer.infer`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy.stats import chi2

__all__ = [
    "grid_centres",
    "normalise",
    "combine",
    "mle",
    "Interval",
    "interval",
    "wilks_threshold",
    "summarise_curve",
]


def grid_centres(low: float, high: float, n: int) -> np.ndarray:
    """Centres of ``n`` equal bins on [low, high] (reference: 150 centres of linspace(1.1, 2.9, 151))."""
    edges = np.linspace(low, high, n + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def normalise(curves: np.ndarray) -> np.ndarray:
    """Subtract each curve's maximum (reference ``get_logrs``)."""
    return curves - curves.max(axis=-1, keepdims=True)


def combine(curves: np.ndarray) -> np.ndarray:
    """Combined normalised curve of independent lenses: Σ_i log r̂(x_i|θ), renormalised."""
    return normalise(normalise(curves).sum(axis=0))


def mle(grid: np.ndarray, curve: np.ndarray) -> float:
    """Maximum of the curve, refined by the parabola through the best grid point and its neighbours."""
    k = int(np.argmax(curve))
    if k == 0 or k == len(grid) - 1:
        return float(grid[k])
    y0, y1, y2 = curve[k - 1], curve[k], curve[k + 1]
    denom = y0 - 2 * y1 + y2
    if denom >= 0:
        return float(grid[k])
    shift = 0.5 * (y0 - y2) / denom
    return float(grid[k] + np.clip(shift, -0.5, 0.5) * (grid[1] - grid[0]))


@dataclass(frozen=True)
class Interval:
    """A confidence interval; ``*_open`` is True where it runs into the grid edge (the prior bound)."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def interval(grid: np.ndarray, curve: np.ndarray, threshold: float) -> Interval:
    """{θ : −2(log r̂(θ) − max) ≤ threshold}, the connected part around the maximum, linearly interpolated."""
    stat = -2.0 * (curve - curve.max())
    k = int(np.argmax(curve))
    lo_open = hi_open = False
    j = k
    while j > 0 and stat[j - 1] <= threshold:
        j -= 1
    if j == 0:
        low, lo_open = float(grid[0]), True
    else:
        f = (threshold - stat[j]) / (stat[j - 1] - stat[j])
        low = float(grid[j] + f * (grid[j - 1] - grid[j]))
    j = k
    while j < len(grid) - 1 and stat[j + 1] <= threshold:
        j += 1
    if j == len(grid) - 1:
        high, hi_open = float(grid[-1]), True
    else:
        f = (threshold - stat[j]) / (stat[j + 1] - stat[j])
        high = float(grid[j] + f * (grid[j + 1] - grid[j]))
    return Interval(low, high, lo_open, hi_open)


def wilks_threshold(level: float) -> float:
    """Nominal threshold χ²₁ isf(1 − level): 1.0 for 68.27 %, 3.84 for 95 %."""
    return float(chi2.isf(1.0 - level, df=1))


def summarise_curve(grid: np.ndarray, curve: np.ndarray, levels: Iterable[float],
                    thresholds: dict[str, float] | None = None) -> dict:
    """MLE and, for every level, the Wilks interval and (if given) the coverage-recalibrated interval."""
    out: dict = {"mle": mle(grid, curve), "intervals": {}}
    for level in levels:
        key = f"{level:g}"
        entry = {"nominal": asdict(interval(grid, curve, wilks_threshold(level)))}
        if thresholds and key in thresholds:
            entry["recalibrated"] = asdict(interval(grid, curve, thresholds[key]))
            entry["recalibrated_threshold"] = thresholds[key]
        out["intervals"][key] = entry
    return out
