"""Calibration of the ratio estimator (spec/science.md §4).

(a) **KDE calibration** of the classifier statistic (Cranmer, Pavez & Louppe 2015): for every grid value θ_i,
    densities of s = exp(normalised log r̂(x, θ_i)) under p(x|θ_i) (validation images whose true γ falls in bin i)
    and under the marginal p(x) (all validation images); log r_c = log p̂(s|θ_i) − log p̂_ref(s|θ_i). The bandwidths
    are chosen by cross-validated likelihood (the reference fixed 0.1 and left its CV helper unused).
(b) **Coverage-recalibrated thresholds**: on test sets at fixed γ values, the empirical coverage of the
    Wilks intervals {−2Δlog r̂ ≤ χ²₁ isf(1 − p)} is measured for nominal p ∈ (0, 1); the threshold reaching 68 % /
    95 % empirical coverage is interpolated. Done separately for sets of N = 1 and N = 13 combined lenses.
(c) **Expected coverage of the final intervals**, cross-fitted: thresholds fitted on half of the sets are
    applied to the other half, so the reported coverage is not measured on the data that set it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from .infer import combine, interval, normalise, wilks_threshold

__all__ = [
    "make_sets",
    "coverage_curve",
    "recalibrated_threshold",
    "cross_fitted_coverage",
    "coverage_tables",
    "run_calibration",
    "fit_kde_calibration",
    "apply_kde_calibration",
]


def make_sets(true_gamma: np.ndarray, set_size: int, n_sets: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of ``set_size`` images sharing one true γ: disjoint when there are enough images, else random."""
    sets: list[np.ndarray] = []
    for value in np.unique(true_gamma[np.isfinite(true_gamma)]):
        idx = np.nonzero(true_gamma == value)[0]
        if idx.size < set_size:
            continue
        perm = rng.permutation(idx)
        n_disjoint = idx.size // set_size
        if n_disjoint >= n_sets:
            sets.extend(perm[i * set_size:(i + 1) * set_size] for i in range(n_sets))
        else:
            sets.extend(rng.choice(idx, set_size, replace=False) for _ in range(n_sets))
    return sets


def _combined(curves: np.ndarray, sets: list[np.ndarray]) -> np.ndarray:
    return np.stack([combine(curves[s]) for s in sets]) if sets else np.zeros((0, curves.shape[1]))


def coverage_curve(grid: np.ndarray, curves: np.ndarray, truths: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """Empirical coverage of the Wilks interval at each nominal level, over (combined) curves with known truths."""
    cov = np.zeros(len(nominal))
    for k, p in enumerate(nominal):
        t = wilks_threshold(p)
        cov[k] = np.mean([interval(grid, c, t).contains(g) for c, g in zip(curves, truths)])
    return cov


def recalibrated_threshold(nominal: np.ndarray, empirical: np.ndarray, target: float) -> float:
    """The threshold χ²₁ isf(1 − p*) with p* the nominal level whose empirical coverage is ``target``."""
    emp = np.maximum.accumulate(empirical)  # coverage is non-decreasing in the threshold; remove sampling wiggles
    if target <= emp[0]:
        p = nominal[0]
    elif target >= emp[-1]:
        p = nominal[-1]
    else:
        # first crossing, interpolated linearly between nominal levels
        k = int(np.searchsorted(emp, target))
        p = float(np.interp(target, emp[k - 1:k + 1], nominal[k - 1:k + 1])) if emp[k] > emp[k - 1] else nominal[k]
    return wilks_threshold(float(p))


def cross_fitted_coverage(grid: np.ndarray, combined: np.ndarray, truths: np.ndarray, nominal: np.ndarray,
                          levels: Sequence[float], rng: np.random.Generator) -> dict[str, float]:
    """Coverage of recalibrated intervals with thresholds fitted on one half of the sets and tested on the other."""
    perm = rng.permutation(len(combined))
    halves = [perm[: len(perm) // 2], perm[len(perm) // 2:]]
    out: dict[str, float] = {}
    for level in levels:
        hits, n = 0, 0
        for fit, test in (halves, halves[::-1]):
            if len(fit) == 0 or len(test) == 0:
                continue
            t = recalibrated_threshold(nominal, coverage_curve(grid, combined[fit], truths[fit], nominal), level)
            hits += sum(interval(grid, c, t).contains(g) for c, g in zip(combined[test], truths[test]))
            n += len(test)
        out[f"{level:g}"] = hits / n if n else float("nan")
    return out


def coverage_tables(grid: np.ndarray, curves: np.ndarray, true_gamma: np.ndarray, set_sizes: Sequence[int],
                    n_sets: int, levels: Sequence[float], n_nominal: int, seed: int) -> tuple[dict, list[dict]]:
    """Thresholds, cross-fitted coverage and coverage curves for every set size (the calibrate stage's content)."""
    rng = np.random.default_rng(seed)
    nominal = np.linspace(0.01, 0.99, n_nominal)
    result: dict = {"levels": [float(x) for x in levels], "set_sizes": {}}
    rows: list[dict] = []
    for n in set_sizes:
        sets = make_sets(true_gamma, n, n_sets, rng)
        if not sets:
            raise ValueError(f"calibrate: no γ value of the coverage dataset has {n} images; enlarge it or drop N={n}")
        combined = _combined(normalise(curves), sets)
        truths = np.array([true_gamma[s[0]] for s in sets])
        empirical = coverage_curve(grid, combined, truths, nominal)
        thresholds = {f"{lv:g}": recalibrated_threshold(nominal, empirical, lv) for lv in levels}
        nominal_cov = {f"{lv:g}": float(np.mean([interval(grid, c, wilks_threshold(lv)).contains(g)
                                                 for c, g in zip(combined, truths)])) for lv in levels}
        result["set_sizes"][str(n)] = {
            "n_sets": len(sets),
            "thresholds": thresholds,
            "wilks_thresholds": {f"{lv:g}": wilks_threshold(lv) for lv in levels},
            "coverage_wilks": nominal_cov,
            "coverage_recalibrated_crossfit": cross_fitted_coverage(grid, combined, truths, nominal, levels, rng),
        }
        rows.extend({"set_size": n, "nominal": float(p), "empirical": float(e)} for p, e in zip(nominal, empirical))
    return result, rows


def _cv_bandwidth(samples: np.ndarray, bandwidths: np.ndarray, max_samples: int = 2000, seed: int = 0) -> float:
    """Bandwidth with the best 5-fold cross-validated likelihood, on at most ``max_samples`` points (KDE CV is O(n²))."""
    x = samples.reshape(-1, 1)
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    if len(x) < 10:
        return float(np.median(bandwidths))
    search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": bandwidths}, cv=min(5, len(x)))
    search.fit(x)
    return float(search.best_params_["bandwidth"])


def fit_kde_calibration(grid: np.ndarray, curves: np.ndarray, true_gamma: np.ndarray,
                        bandwidths: np.ndarray, max_per_bin: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Samples and CV bandwidths of the KDE calibration (a); arrays for ``np.savez``.

    ``calib_values[i]`` are s(x, θ_i) of images with true γ in bin i (stored flat with ``calib_offsets``);
    ``ref_values`` is (G, n_ref): s(x, θ_i) of all images (the marginal). One bandwidth each, chosen by 5-fold CV on
    the pooled samples.
    """
    rng = np.random.default_rng(seed)
    s = np.exp(normalise(curves))
    edges = np.concatenate([[grid[0] - (grid[1] - grid[0]) / 2], 0.5 * (grid[1:] + grid[:-1]), [grid[-1] + (grid[1] - grid[0]) / 2]])
    which = np.clip(np.searchsorted(edges, true_gamma) - 1, 0, len(grid) - 1)
    calib, offsets = [], [0]
    for i in range(len(grid)):
        idx = np.nonzero(which == i)[0][:max_per_bin]
        calib.append(s[idx, i])
        offsets.append(offsets[-1] + idx.size)
    ref_idx = rng.permutation(len(s))[:max_per_bin]
    ref = s[ref_idx].T
    calib_flat = np.concatenate(calib)
    return {
        "grid": grid,
        "calib_values": calib_flat,
        "calib_offsets": np.asarray(offsets),
        "ref_values": ref,
        "bandwidth_calib": np.array(_cv_bandwidth(calib_flat, bandwidths)),
        "bandwidth_ref": np.array(_cv_bandwidth(ref.ravel(), bandwidths)),
    }


def apply_kde_calibration(curves: np.ndarray, kde: dict[str, np.ndarray], min_samples: int = 5) -> np.ndarray:
    """Calibrated normalised curves log p̂(s|θ_i) − log p̂_ref(s|θ_i); bins with too few samples keep the raw value."""
    s = np.exp(normalise(curves))
    out = normalise(curves).copy()
    offsets = kde["calib_offsets"]
    for i in range(curves.shape[1]):
        cal = kde["calib_values"][offsets[i]:offsets[i + 1]]
        if cal.size < min_samples:
            continue
        p = KernelDensity(bandwidth=float(kde["bandwidth_calib"])).fit(cal[:, None]).score_samples(s[:, i:i + 1])
        q = KernelDensity(bandwidth=float(kde["bandwidth_ref"])).fit(kde["ref_values"][i][:, None]).score_samples(s[:, i:i + 1])
        out[:, i] = p - q
    return normalise(out)


def run_calibration(*, kde_curves: str | Path, coverage_curves: str | Path, calibrate_cfg: dict,
                    levels: Sequence[float], seed: int, out_kde: str | Path, out_thresholds: str | Path,
                    out_coverage: str | Path) -> dict:
    """The calibrate stage: KDE artefacts (a), thresholds and cross-fitted coverage (b, c), coverage curves."""
    kde_blob = np.load(kde_curves)
    kde = fit_kde_calibration(kde_blob["grid"], kde_blob["curves"], kde_blob["gamma"],
                              np.asarray(calibrate_cfg["bandwidths"], dtype=float), seed=seed)
    np.savez(out_kde, **kde)
    cov_blob = np.load(coverage_curves)
    result, rows = coverage_tables(cov_blob["grid"], cov_blob["curves"], cov_blob["gamma"],
                                   calibrate_cfg["set_sizes"], int(calibrate_cfg["n_sets"]), levels,
                                   int(calibrate_cfg["n_nominal"]), seed)
    result["kde_bandwidths"] = {"calib": float(kde["bandwidth_calib"]), "ref": float(kde["bandwidth_ref"])}
    Path(out_thresholds).write_text(json.dumps(result, indent=2) + "\n")
    with open(out_coverage, "w") as fh:
        fh.write("set_size,nominal,empirical\n")
        fh.writelines(f"{r['set_size']},{r['nominal']:.4f},{r['empirical']:.4f}\n" for r in rows)
    return result
