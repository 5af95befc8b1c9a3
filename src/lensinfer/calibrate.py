"""Calibration of the ratio estimator (spec/science.md §4).

(a) **KDE calibration** of the classifier statistic (Cranmer, Pavez & Louppe 2015, arXiv:1506.02169: the
    likelihood ratio is recovered from the densities of the classifier score under each hypothesis): for every
    grid value θ_i, densities of s = exp(normalised log r̂(x, θ_i)) under p(x|θ_i) (validation images whose true γ
    falls in bin i) and under the marginal p(x) (all validation images); log r_c = log p̂(s|θ_i) − log p̂_ref(s|θ_i).
    The bandwidths are chosen by cross-validated likelihood (the reference fixed 0.1 and left its CV helper unused).
(b) **Coverage-recalibrated thresholds.** An interval {θ : −2Δlog r̂(θ) ≤ t} (the connected part around the maximum,
    crossings interpolated, :func:`lensinfer.curves.interval`) covers the true γ exactly when t ≥ t*, the
    *covering threshold* of that curve (:func:`covering_thresholds`). On test sets at fixed γ values, the empirical
    distribution of t* therefore gives everything at once: the coverage of the Wilks thresholds χ²₁ isf(1 − p) for
    every nominal p, and the recalibrated threshold for a target coverage p as the p-quantile of t* — no grid of
    nominal levels and no cap at the largest one (the reference interpolated a 100-level coverage map). Done
    separately for sets of N = 1 and N = 13 combined lenses.
(c) **Expected coverage of the final intervals, cross-fitted**: the γ values are split into two interleaved folds;
    thresholds fitted on the sets of one fold are applied to the sets of the other. Sets of different γ values
    never share images, so the reported coverage is not measured on data that set the threshold (with few images
    per γ, sets of one γ value overlap — splitting sets instead would leak). ``coverage.csv`` holds, for every set
    size and nominal level p, the empirical coverage of the Wilks interval and the cross-fitted coverage of the
    recalibrated interval — the expected-coverage curve of the intervals that are reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from .curves import combine, normalise, wilks_threshold
from .data.npz import load_npz_lazy

#: sets whose combined curves are held at once in :func:`coverage_tables`
CHUNK = 4096

__all__ = [
    "make_sets",
    "covering_thresholds",
    "coverage_curve",
    "threshold_for_coverage",
    "gamma_folds",
    "coverage_tables",
    "run_calibration",
    "fit_kde_calibration",
    "apply_kde_calibration",
    "grid_range",
    "truths_on_grid",
    "set_size_thresholds",
]


def grid_range(grid: np.ndarray) -> tuple[float, float]:
    """The γ range [low, high] a grid of bin centres (:func:`lensinfer.infer.grid_centres`) covers: its bin edges."""
    step = float(grid[1] - grid[0]) if len(grid) > 1 else 0.0
    return float(grid[0] - step / 2), float(grid[-1] + step / 2)


def truths_on_grid(grid: np.ndarray, truths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """**The one rule for truths outside the grid**, used by every coverage computation (thresholds, coverage
    tables, coverage figure): (truths clamped to the outermost bin centres, mask of the truths kept).

    A truth inside the inference range [low, high] but beyond the outermost bin centre lies in the first/last bin:
    it is moved onto that centre, so an interval reaching the grid edge (an *open* bound, the prior edge) covers it.
    A truth outside [low, high] (or not finite) cannot be covered by any interval on the grid and says nothing about
    its calibration: it is *excluded* from every coverage count (never counted as a miss), and the number excluded is
    reported (``n_truths_outside_grid``). ``lensinfer.config.check_config`` rejects test γ values outside the grid.
    """
    truths = np.asarray(truths, np.float64)
    low, high = grid_range(grid)
    keep = np.isfinite(truths) & (truths >= low) & (truths <= high)
    return np.clip(truths, grid[0], grid[-1]), keep


def make_sets(true_gamma: np.ndarray, set_size: int, n_sets: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of ``set_size`` images sharing one true γ, per γ value: every disjoint set when that gives at
    least ``n_sets`` (for N = 1: every image), else ``n_sets`` random sets (distinct images within a set)."""
    sets: list[np.ndarray] = []
    for value in np.unique(true_gamma[np.isfinite(true_gamma)]):
        idx = np.nonzero(true_gamma == value)[0]
        if idx.size < set_size:
            continue
        perm = rng.permutation(idx)
        n_disjoint = idx.size // set_size
        if n_disjoint >= n_sets:
            sets.extend(perm[i * set_size:(i + 1) * set_size] for i in range(n_disjoint))
        else:
            sets.extend(rng.choice(idx, set_size, replace=False) for _ in range(n_sets))
    return sets


def covering_thresholds(grid: np.ndarray, curves: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Smallest t for which :func:`lensinfer.curves.interval` (curve, t) contains the truth, per curve (B,).

    With stat = −2(log r̂ − max) and k the best grid point, the interval reaches a truth between grid points j and
    j + 1 (beyond k) iff t ≥ stat at every grid point from k to j and t ≥ the linear interpolation of stat at the
    truth; symmetrically below k. Truths are placed by :func:`truths_on_grid`; those it excludes get NaN (callers
    drop them before counting: :func:`coverage_tables`, :func:`coverage_curve`).
    """
    curves = np.atleast_2d(curves)
    stat = -2.0 * (curves - curves.max(axis=1, keepdims=True))
    out = np.empty(len(curves))
    g = len(grid)
    placed, keep = truths_on_grid(grid, np.broadcast_to(np.asarray(truths, np.float64), (len(curves),)))
    for i, (s, truth) in enumerate(zip(stat, placed)):
        if not keep[i]:
            out[i] = np.nan
            continue
        k = int(np.argmax(-s))
        pos = float(np.interp(truth, grid, np.arange(g)))  # fractional grid index of the truth
        if pos >= k:
            j = min(int(np.floor(pos)), g - 1)
            path = s[k:j + 1]
        else:
            j = int(np.ceil(pos))
            path = s[j:k + 1]
        out[i] = max(float(path.max()), float(np.interp(pos, np.arange(g), s)))
    return out


def coverage_curve(grid: np.ndarray, curves: np.ndarray, truths: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """Empirical coverage of the Wilks interval at each nominal level, over (combined) curves with known truths
    (truths outside the grid excluded, :func:`truths_on_grid`)."""
    t_star = covering_thresholds(grid, curves, truths)
    t_star = t_star[np.isfinite(t_star)]
    return np.array([np.mean(t_star <= wilks_threshold(p)) for p in nominal])


def threshold_for_coverage(t_star: np.ndarray, level: float) -> float:
    """The threshold whose empirical coverage is ``level``: the ``level``-quantile of the covering thresholds."""
    finite = t_star[np.isfinite(t_star)]
    return float(np.quantile(finite, level)) if finite.size else float("nan")


def gamma_folds(truths: np.ndarray) -> list[np.ndarray]:
    """Two folds of set indices: sets whose γ value has an even / odd rank among the sorted distinct values.

    With a single γ value the sets are split in halves alternately instead.
    """
    values = np.unique(truths)
    if len(values) < 2:
        idx = np.arange(len(truths))
        return [idx[0::2], idx[1::2]]
    rank = np.searchsorted(values, truths)
    return [np.nonzero(rank % 2 == 0)[0], np.nonzero(rank % 2 == 1)[0]]


def _crossfit(t_star: np.ndarray, folds: list[np.ndarray], levels: Sequence[float]) -> np.ndarray:
    """Coverage, on each fold, of the thresholds fitted on the other fold, pooled over folds, per level."""
    hits = np.zeros(len(levels))
    n = 0
    for fit, test in ((folds[0], folds[1]), (folds[1], folds[0])):
        if len(fit) == 0 or len(test) == 0:
            continue
        t = np.array([threshold_for_coverage(t_star[fit], lv) for lv in levels])
        hits += (t_star[test][:, None] <= t[None, :]).sum(axis=0)
        n += len(test)
    return hits / n if n else np.full(len(levels), np.nan)


def coverage_tables(grid: np.ndarray, curves: np.ndarray, true_gamma: np.ndarray, set_sizes: Sequence[int],
                    n_sets: int, levels: Sequence[float], n_nominal: int, seed: int) -> tuple[dict, list[dict]]:
    """Thresholds, cross-fitted coverage and coverage curves for every set size (the calibrate stage's content)."""
    rng = np.random.default_rng(seed)
    nominal = np.linspace(0.01, 0.99, n_nominal)
    wilks = np.array([wilks_threshold(p) for p in nominal])
    _, keep = truths_on_grid(grid, true_gamma)
    n_outside = int(np.count_nonzero(~keep & np.isfinite(true_gamma)))
    true_gamma = np.where(keep, true_gamma, np.nan)  # make_sets skips non-finite truths: the rule of truths_on_grid
    result: dict = {"levels": [float(x) for x in levels], "crossfit": "two interleaved folds of the γ values",
                    "n_truths_outside_grid": n_outside,
                    "outside_grid_rule": "truths outside the grid range are excluded from every coverage count; "
                                         "truths between the range edge and the outermost bin centre are clamped to it",
                    "set_sizes": {}}
    rows: list[dict] = []
    for n in set_sizes:
        sets = make_sets(true_gamma, n, n_sets, rng)
        if not sets:
            raise ValueError(f"calibrate: no γ value of the coverage dataset has {n} images; enlarge it "
                             f"(datasets.<calibrate.coverage_dataset>) or drop N={n} from calibrate.set_sizes / "
                             "the observation list")
        truths = np.array([true_gamma[s[0]] for s in sets])
        # combined curves of CHUNK sets at a time (memory does not grow with the coverage dataset)
        t_star = np.concatenate([covering_thresholds(grid, np.stack([combine(curves[s]) for s in sets[i:i + CHUNK]]),
                                                     truths[i:i + CHUNK]) for i in range(0, len(sets), CHUNK)])
        folds = gamma_folds(truths)
        crossfit = _crossfit(t_star, folds, levels)
        result["set_sizes"][str(n)] = {
            "n_sets": len(sets),
            "n_gamma_values": int(len(np.unique(truths))),
            "thresholds": {f"{lv:g}": threshold_for_coverage(t_star, lv) for lv in levels},
            "wilks_thresholds": {f"{lv:g}": wilks_threshold(lv) for lv in levels},
            "coverage_wilks": {f"{lv:g}": float(np.mean(t_star <= wilks_threshold(lv))) for lv in levels},
            "coverage_recalibrated_crossfit": {f"{lv:g}": float(c) for lv, c in zip(levels, crossfit)},
        }
        recal = _crossfit(t_star, folds, nominal)
        rows.extend({"set_size": n, "nominal": float(p), "empirical": float(np.mean(t_star <= t)),
                     "recalibrated_crossfit": float(r)} for p, t, r in zip(nominal, wilks, recal))
    return result, rows


def set_size_thresholds(thresholds: dict, n: int, *, coverage_curves: str | Path | None = None,
                        calibrate_cfg: dict | None = None, levels: Sequence[float] | None = None,
                        seed: int = 0) -> tuple[dict[str, float], str]:
    """Recalibrated thresholds for sets of ``n`` lenses and where they come from ("calibrate" or "on_demand").

    Stored thresholds (``calibrate.set_sizes``) are used when they include ``n``; otherwise they are computed now
    from the coverage dataset's curves (``coverage_curves``), exactly as the calibrate stage would. Never the
    thresholds of another set size: without curves a missing ``n`` is an error naming ``calibrate.set_sizes``.
    """
    entry = thresholds["set_sizes"].get(str(n))
    if entry is not None:
        return entry["thresholds"], "calibrate"
    if coverage_curves is None or calibrate_cfg is None:
        raise ValueError(f"no recalibrated thresholds for N = {n} lenses (calibrate.set_sizes = "
                         f"{sorted(int(k) for k in thresholds['set_sizes'])}); add {n} to calibrate.set_sizes")
    blob = np.load(coverage_curves)
    levels = list(levels if levels is not None else thresholds["levels"])
    result, _ = coverage_tables(blob["grid"], blob["curves"], blob["gamma"], [int(n)], int(calibrate_cfg["n_sets"]),
                                levels, int(calibrate_cfg.get("n_nominal", 100)), seed)
    return result["set_sizes"][str(n)]["thresholds"], "on_demand"


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
    # s(x, θ) = exp(normalised curve) of the selected rows only: ``curves`` may be a memory map of the curves file
    def s_of(rows: np.ndarray) -> np.ndarray:
        return np.exp(normalise(np.asarray(curves[np.sort(rows)], dtype=np.float64)))

    edges = np.concatenate([[grid[0] - (grid[1] - grid[0]) / 2], 0.5 * (grid[1:] + grid[:-1]), [grid[-1] + (grid[1] - grid[0]) / 2]])
    which = np.clip(np.searchsorted(edges, true_gamma) - 1, 0, len(grid) - 1)
    calib, offsets = [], [0]
    for i in range(len(grid)):
        idx = np.nonzero(which == i)[0][:max_per_bin]  # increasing
        calib.append(s_of(idx)[:, i])
        offsets.append(offsets[-1] + idx.size)
    ref_idx = rng.permutation(len(curves))[:max_per_bin]
    ref = s_of(ref_idx)[np.argsort(np.argsort(ref_idx))].T  # rows in ref_idx order
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
    kde_blob = load_npz_lazy(kde_curves)  # memory maps: rows are read when used
    kde = fit_kde_calibration(kde_blob["grid"], kde_blob["curves"], kde_blob["gamma"],
                              np.asarray(calibrate_cfg["bandwidths"], dtype=float), seed=seed)
    np.savez(out_kde, **kde)
    cov_blob = load_npz_lazy(coverage_curves)
    result, rows = coverage_tables(cov_blob["grid"], cov_blob["curves"], cov_blob["gamma"],
                                   calibrate_cfg["set_sizes"], int(calibrate_cfg["n_sets"]), levels,
                                   int(calibrate_cfg["n_nominal"]), seed)
    result["kde_bandwidths"] = {"calib": float(kde["bandwidth_calib"]), "ref": float(kde["bandwidth_ref"])}
    Path(out_thresholds).write_text(json.dumps(result, indent=2) + "\n")
    with open(out_coverage, "w") as fh:
        fh.write("set_size,nominal,empirical,recalibrated_crossfit\n")
        fh.writelines(f"{r['set_size']},{r['nominal']:.4f},{r['empirical']:.4f},{r['recalibrated_crossfit']:.4f}\n"
                      for r in rows)
    return result
