"""Diagnostics of an amortised posterior estimator on a simulated test set: accuracy, precision and calibration.

Input is the posterior-sample file of the NPE stage, an ``.npz`` holding

* ``samples`` (N, S, P): S posterior samples for each of N test lenses, physical units;
* ``truths`` (N, P): the simulated parameter values;
* ``columns`` (P,): parameter names (the simulator's column names, e.g. ``lens_theta_E``, ``gamma_pop``);

and optionally ``names`` (N,). Everything here is numpy on those arrays; nothing depends on the estimator.

Metrics
-------
* **Regression metrics** of the posterior median against the truth (seed 003, the normalising-flow SNPE study:
  1:1 plot, residuals, R²; seed 001, Ramos & De Bom, "Median Precision", "Median Fractional Deviation" and R²
  per parameter for 2500 test lenses): :func:`regression_metrics`.
* **TARP** expected coverage probability (Lemos, Coogan, Hezaveh & Perreault-Levasseur 2023, ICML,
  arXiv:2302.03026; seed 002): :func:`tarp_test`. A single, joint test of all parameters: for random reference
  points θ_r, the credibility f_i of the ball around θ_r that reaches the truth is the fraction of posterior samples
  closer to θ_r than the truth; the posterior is calibrated iff f is uniform, i.e. ECP(α) = P(f < α) = α.
* **Simulation-based calibration** (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, arXiv:1804.06788):
  the rank of each true parameter among its posterior samples is uniform on {0, …, S} for a calibrated
  posterior: :func:`sbc_ranks`, :func:`sbc_uniformity`, :func:`sbc_histogram`.

Cost (measured on the shared 2-core machine under load, N = 2500, S = 5000, P = 8): ``write_diagnostics`` takes
≈ 5 s on float32 samples (load 0.3 s, posterior quantiles + regression 2.1 s, TARP with 100 bootstrap resamples
1.5 s, SBC ranks + tests 0.7 s) and ≈ 8 s on float64 (quantiles 3.6 s, TARP 3.2 s, SBC 1.0 s). Every pass over
the (N, S, P) array works on lens chunks of ~64 MB, so the peak memory is the input array plus ~0.2 GB.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "PosteriorSamples",
    "load_posterior_samples",
    "posterior_quantiles",
    "regression_metrics",
    "tarp_test",
    "tarp_credibility",
    "sbc_ranks",
    "sbc_uniformity",
    "sbc_histogram",
    "write_diagnostics",
    "json_safe",
]

#: working-set size of one chunk of lenses in the passes over the (N, S, P) sample array
CHUNK_BYTES = 64 * 2**20
#: the TARP normalisation's guard against zero ranges (tarp 0.1.1 uses the same 1e-10)
_TARP_EPS = 1e-10


@dataclass
class PosteriorSamples:
    """Posterior samples of N lenses: ``samples`` (N, S, P), ``truths`` (N, P), ``columns`` (P,), ``names`` (N,)."""

    samples: np.ndarray
    truths: np.ndarray
    columns: list[str]
    names: list[str]

    @property
    def n_lenses(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])


def load_posterior_samples(path: str | Path) -> PosteriorSamples:
    """Read a posterior-sample ``.npz`` (keys ``samples``, ``truths``, ``columns``, optional ``names``).

    The sample dtype is kept (float32 halves the memory); a missing ``truths`` becomes all-NaN (observations).
    """
    with np.load(path, allow_pickle=False) as blob:
        samples = np.asarray(blob["samples"])
        if samples.ndim == 2:
            samples = samples[None]
        if samples.ndim != 3:
            raise ValueError(f"{path}: samples must be (N, S, P), got shape {samples.shape}")
        n, _, p = samples.shape
        truths = np.asarray(blob["truths"], dtype=np.float64).reshape(n, p) if "truths" in blob else np.full((n, p), np.nan)
        columns = [str(c) for c in blob["columns"]] if "columns" in blob else [f"p{j}" for j in range(p)]
        names = [str(c) for c in blob["names"]] if "names" in blob else [f"lens_{i}" for i in range(n)]
    if len(columns) != p or len(names) != n:
        raise ValueError(f"{path}: {len(columns)} columns / {len(names)} names for samples of shape {samples.shape}")
    return PosteriorSamples(samples, truths, columns, names)


def _check(samples: np.ndarray, truths: np.ndarray) -> tuple[int, int, int]:
    if samples.ndim != 3:
        raise ValueError(f"samples must be (N, S, P), got shape {samples.shape}")
    n, s, p = samples.shape
    if truths.shape != (n, p):
        raise ValueError(f"truths must be (N, P) = {(n, p)}, got {truths.shape}")
    if not np.all(np.isfinite(truths)):
        raise ValueError("truths contain non-finite values (drop those lenses first)")
    if s < 2:
        raise ValueError("need at least 2 posterior samples per lens")
    return n, s, p


def _chunk_rows(s: int, p: int, factor: int = 3, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Number of lenses per chunk so that ``factor`` float64 copies of a (rows, S, P) block fit ``chunk_bytes``."""
    return max(1, int(chunk_bytes // (factor * 8 * s * max(p, 1))))


def posterior_quantiles(samples: np.ndarray, q: Sequence[float] = (0.16, 0.5, 0.84),
                        chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Per-lens, per-parameter posterior quantiles, shape (len(q), N, P), float64 (linear interpolation)."""
    n, s, p = samples.shape
    out = np.empty((len(q), n, p))
    rows = _chunk_rows(s, p, 2, chunk_bytes)
    for a in range(0, n, rows):
        out[:, a:a + rows] = np.quantile(samples[a:a + rows], q, axis=1)
    return out


def regression_metrics(samples: np.ndarray, truths: np.ndarray, columns: Sequence[str], *,
                       quantiles: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Accuracy and precision of the posterior median as a point estimate, per parameter.

    For each column (pred = posterior median, σ = (q84 − q16)/2 per lens, residual r = pred − truth):

    * ``r2``: 1 − Σ r² / Σ (truth − mean truth)² (NaN if the truth is constant); ≈ 1 for a sharp, unbiased
      posterior, ≈ 0 (or slightly below) for a posterior equal to the prior;
    * ``median_precision``: median over lenses of σ (physical units); ``median_fractional_precision``:
      median of σ / |pred| (seed 001 quotes precision as a percentage; the seed does not define it, so both the
      absolute and the fractional width are reported);
    * ``median_fractional_deviation``: median of |r| / |truth| over lenses with truth ≠ 0 (unstable for parameters
      centred on 0 such as e1, e2 and shear: read ``bias``/``scatter_*`` for those);
    * ``bias`` = mean r, ``median_residual``, ``scatter_std`` = std r, ``scatter_68`` = (r84 − r16)/2, ``rmse``;
    * ``coverage_68``: fraction of truths inside the posterior 16–84 % interval (0.68 if calibrated).

    ``quantiles`` may pass precomputed :func:`posterior_quantiles` at (0.16, 0.5, 0.84) to save a pass.
    """
    n, _, p = _check(samples, truths)
    if len(columns) != p:
        raise ValueError(f"{len(columns)} columns for {p} parameters")
    if quantiles is None:
        quantiles = posterior_quantiles(samples)
    q16, med, q84 = quantiles
    sigma = 0.5 * (q84 - q16)
    resid = med - truths
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(columns):
        t, r, sg, m = truths[:, j], resid[:, j], sigma[:, j], med[:, j]
        ss_tot = float(np.sum((t - t.mean()) ** 2)) if np.ptp(t) > 0 else 0.0
        nz = t != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            frac_prec = sg / np.abs(m)
        r16, r84 = np.quantile(r, [0.16, 0.84])
        out[col] = {
            "n": int(n),
            "r2": 1.0 - float(np.sum(r**2)) / ss_tot if ss_tot > 0 else math.nan,
            "median_precision": float(np.median(sg)),
            "median_fractional_precision": float(np.median(frac_prec[np.isfinite(frac_prec)]))
            if np.isfinite(frac_prec).any() else math.nan,
            "median_fractional_deviation": float(np.median(np.abs(r[nz]) / np.abs(t[nz]))) if nz.any() else math.nan,
            "bias": float(r.mean()),
            "median_residual": float(np.median(r)),
            "scatter_std": float(r.std(ddof=1)) if n > 1 else math.nan,
            "scatter_68": float(0.5 * (r84 - r16)),
            "rmse": float(np.sqrt(np.mean(r**2))),
            "coverage_68": float(np.mean((truths[:, j] >= q16[:, j]) & (truths[:, j] <= q84[:, j]))),
        }
    return out


def _tarp_normalisation(truths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tarp's ``norm=True``: scale every parameter by the min/max of the truths over the test set."""
    low = truths.min(axis=0)
    return low, truths.max(axis=0) - low + _TARP_EPS


def tarp_credibility(samples: np.ndarray, truths: np.ndarray, references: np.ndarray, *,
                     metric: str = "euclidean", chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """TARP credibility f_i of each lens (Lemos et al. 2023, Alg. 1), shape (N,).

    f_i = fraction of the posterior samples of lens i closer to the reference point θ_r,i than the truth is,
    after tarp's normalisation ((x − min truth) / (max truth − min truth + 1e-10), per parameter). This is
    tarp 0.1.1's ``_get_tarp_coverage_single`` up to the histogram, evaluated in lens chunks and one parameter at
    a time so that no (S, N, P) temporary is built. ``references`` (N, P) live in the normalised unit cube.
    """
    n, s, p = _check(samples, truths)
    if references.shape != (n, p):
        raise ValueError(f"references must be (N, P) = {(n, p)}, got {references.shape}")
    if metric not in ("euclidean", "manhattan"):
        raise ValueError("metric must be 'euclidean' or 'manhattan'")
    low, scale = _tarp_normalisation(truths)
    theta = (truths - low) / scale
    f = np.empty(n)
    rows = _chunk_rows(s, 1, 3, chunk_bytes)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        dist = np.zeros((b - a, s))
        for j in range(p):
            d = references[a:b, j, None] - (samples[a:b, :, j] - low[j]) / scale[j]
            dist += d * d if metric == "euclidean" else np.abs(d)
        t = references[a:b] - theta[a:b]
        if metric == "euclidean":
            dist = np.sqrt(dist)
            t_dist = np.sqrt(np.sum(t**2, axis=-1))
        else:
            t_dist = np.sum(np.abs(t), axis=-1)
        f[a:b] = np.count_nonzero(dist < t_dist[:, None], axis=1) / s
    return f


def _ecp_from_credibility(f: np.ndarray, num_alpha_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """tarp 0.1.1's ECP curve: histogram of f (range [min f, max f]), cumulated, with a leading 0."""
    h, alpha = np.histogram(f, density=True, bins=num_alpha_bins)
    ecp = np.concatenate([[0.0], np.cumsum(h) * (alpha[1] - alpha[0])])
    return ecp, alpha


def _ecp_on_grid(f_sorted: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """P(f < α) on the grid, with the last point P(f ≤ α_max) (the histogram's closed last bin)."""
    ecp = np.searchsorted(f_sorted, alpha, side="left") / f_sorted.size
    ecp[-1] = np.searchsorted(f_sorted, alpha[-1], side="right") / f_sorted.size
    return ecp


def tarp_test(samples: np.ndarray, truths: np.ndarray, seed: int = 0, n_bootstrap: int = 0, *,
              num_alpha_bins: int | None = None, metric: str = "euclidean", engine: str = "auto",
              max_tarp_bytes: int = 256 * 2**20) -> dict[str, Any]:
    """TARP expected-coverage test (Lemos et al. 2023) of the joint posterior over all non-constant parameters.

    ``samples`` (N, S, P) in this module's layout (tarp wants (S, N, P); the transpose is handled here).
    Parameters are normalised as tarp recommends (``norm=True``: by the min/max of the truths), and the reference
    points are uniform in the unit hypercube, drawn with ``numpy.random.RandomState(seed)`` — the same points
    ``tarp.get_tarp_coverage(..., references="random", seed=seed)`` would draw. Columns whose truth is constant over
    the test set are left out (their normalised value is undefined).

    ``engine``: ``"tarp"`` calls ``tarp.get_tarp_coverage`` (builds (S, N, P) temporaries: ~3 × 8·S·N·P bytes);
    ``"chunked"`` evaluates the same statistic in lens chunks (:func:`tarp_credibility`; identical ECP up to
    floating-point summation order); ``"auto"`` uses tarp when ``8·S·N·P ≤ max_tarp_bytes``.

    Returns ``alpha`` and ``ecp`` (tarp's grid: ``num_alpha_bins`` (default N // 10) histogram bins of f between
    its min and max, plus a leading ECP = 0), ``max_dev`` = max |ECP − α|, ``ks_pvalue`` (f against U(0, 1): the
    calibration null), ``ecp_at`` {0.68, 0.95} by interpolation, and, for ``n_bootstrap > 0``, a ``bootstrap``
    band: lenses resampled with replacement, ECP re-evaluated on the same α grid (references and normalisation
    held fixed), percentiles 2.5/16/84/97.5 of ECP and of max_dev. tarp 0.1.1's own ``bootstrap=True`` is not used:
    it replaces one simulation per iteration, cumulatively and in place in the caller's arrays.
    """
    from scipy import stats

    n, s, p = _check(samples, truths)
    keep = np.flatnonzero(truths.max(axis=0) > truths.min(axis=0))
    if keep.size == 0:
        raise ValueError("TARP needs at least one parameter whose truth varies over the test set")
    x, th = samples[:, :, keep], truths[:, keep]
    bins = int(num_alpha_bins) if num_alpha_bins else max(1, n // 10)
    references = np.random.RandomState(seed).uniform(low=0.0, high=1.0, size=(n, keep.size))
    if engine == "auto":
        engine = "tarp" if 8 * s * n * keep.size <= max_tarp_bytes else "chunked"
    if engine not in ("tarp", "chunked"):
        raise ValueError(f"engine must be 'auto', 'tarp' or 'chunked', got {engine!r}")
    f = tarp_credibility(x, th, references, metric=metric)  # cheap; also needed for the KS test and bootstrap
    if engine == "tarp":
        import tarp

        state = np.random.get_state()  # tarp 0.1.1 calls np.random.seed(seed): keep the caller's global RNG
        try:
            ecp, alpha = tarp.get_tarp_coverage(np.transpose(x, (1, 0, 2)).astype(np.float64), th.copy(),
                                                references=references.copy(), metric=metric, num_alpha_bins=bins,
                                                norm=True, bootstrap=False, seed=seed)
        finally:
            np.random.set_state(state)
    else:
        ecp, alpha = _ecp_from_credibility(f, bins)
    ecp, alpha = np.asarray(ecp, dtype=float), np.asarray(alpha, dtype=float)
    out: dict[str, Any] = {
        "alpha": alpha.tolist(),
        "ecp": ecp.tolist(),
        "max_dev": float(np.max(np.abs(ecp - alpha))),
        "ecp_at": {str(a): float(np.interp(a, alpha, ecp)) for a in (0.68, 0.95)},
        "n_sims": int(n),
        "n_samples": int(s),
        "dims": [int(j) for j in keep],
        "num_alpha_bins": bins,
        "metric": metric,
        "engine": engine,
        "seed": int(seed),
        "references": "uniform in the unit hypercube of the truth-min/max-normalised parameters",
    }
    out["ks_pvalue"] = float(stats.kstest(f, "uniform").pvalue)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        boot = np.empty((n_bootstrap, alpha.size))
        for b in range(n_bootstrap):
            boot[b] = _ecp_on_grid(np.sort(f[rng.integers(0, n, n)]), alpha)
        boot[:, 0] = 0.0
        pct = (2.5, 16.0, 84.0, 97.5)
        band = np.percentile(boot, pct, axis=0)
        dev = np.max(np.abs(boot - alpha), axis=1)
        out["bootstrap"] = {
            "n": int(n_bootstrap),
            **{f"ecp_p{str(q).removesuffix('.0')}": band[k].tolist() for k, q in enumerate(pct)},
            "max_dev_percentiles": {str(q).removesuffix(".0"): float(v) for q, v in zip(pct, np.percentile(dev, pct))},
        }
    return out


def sbc_ranks(samples: np.ndarray, truths: np.ndarray, *, seed: int = 0,
              chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """SBC rank statistic (Talts et al. 2018, Alg. 1): #{posterior samples < truth}, shape (N, P), in {0, …, S}.

    Ties (samples exactly equal to the truth, e.g. a parameter the estimator returns as a constant) are broken
    uniformly at random as Talts et al. recommend, with ``numpy.random.default_rng(seed)``.
    """
    n, s, p = _check(samples, truths)
    lt = np.empty((n, p), dtype=np.int64)
    eq = np.zeros((n, p), dtype=np.int64)
    rows = _chunk_rows(s, p, 1, chunk_bytes)
    for a in range(0, n, rows):
        t = truths[a:a + rows, None, :]
        block = samples[a:a + rows]
        lt[a:a + rows] = np.count_nonzero(block < t, axis=1)
        eq[a:a + rows] = np.count_nonzero(block == t, axis=1)
    if eq.any():
        rng = np.random.default_rng(seed)
        lt = lt + rng.integers(0, eq + 1)
    return lt


def default_sbc_bins(n_lenses: int, n_samples: int) -> int:
    """Number of rank-histogram bins: ~20 lenses per bin, between 2 and 50, at most S + 1."""
    return int(min(n_samples + 1, max(2, min(50, n_lenses // 20))))


def sbc_histogram(ranks: np.ndarray, n_samples: int, n_bins: int | None = None,
                  band: float = 0.99) -> dict[str, Any]:
    """Rank histograms with the expected count and the central ``band`` binomial interval per bin.

    Ranks take the S + 1 values 0…S; bin k holds the integer ranks in [edge_k, edge_k+1) with edges
    ``linspace(0, S + 1, n_bins + 1)``, so its null probability is (#integers in it) / (S + 1) — exact also when
    n_bins does not divide S + 1. Returns ``edges`` (in rank units), ``counts`` (P, n_bins), ``expected``,
    ``band_low``/``band_high`` (per bin; Talts et al. 2018's binomial band).
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    n = ranks.shape[0]
    bins = int(n_bins) if n_bins else default_sbc_bins(n, n_samples)
    edges = np.linspace(0.0, n_samples + 1.0, bins + 1)
    idx = np.minimum(np.floor(ranks * bins / (n_samples + 1.0)).astype(np.int64), bins - 1)
    counts = np.stack([np.bincount(idx[:, j], minlength=bins) for j in range(ranks.shape[1])])
    width = np.diff(np.ceil(edges))  # integers r with edge_k ≤ r < edge_k+1
    width[-1] = n_samples + 1 - np.ceil(edges[-2])
    prob = width / (n_samples + 1.0)
    lo = stats.binom.ppf((1 - band) / 2, n, prob)
    hi = stats.binom.ppf(1 - (1 - band) / 2, n, prob)
    return {"n_bins": bins, "edges": edges.tolist(), "counts": counts.tolist(), "prob": prob.tolist(),
            "expected": (n * prob).tolist(), "band": band, "band_low": lo.tolist(), "band_high": hi.tolist()}


def sbc_uniformity(ranks: np.ndarray, n_samples: int, *, columns: Sequence[str] | None = None,
                   n_bins: int | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Uniformity tests of the SBC ranks per parameter: χ² on the rank histogram and Kolmogorov–Smirnov.

    * χ²: Pearson statistic of the :func:`sbc_histogram` counts against their exact null probabilities,
      n_bins − 1 degrees of freedom (``chi2``, ``chi2_pvalue``);
    * KS: u = (rank + U(0, 1)) / (S + 1), which is exactly U(0, 1) under calibration (``ks_stat``, ``ks_pvalue``).

    Small p-values mean non-uniform ranks: a ∪-shaped histogram is an over-confident posterior, ∩-shaped an
    under-confident one, a slope a bias (Talts et al. 2018, Fig. 3–5).
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    n, p = ranks.shape
    cols = list(columns) if columns is not None else [f"p{j}" for j in range(p)]
    hist = sbc_histogram(ranks, n_samples, n_bins)
    counts, expected = np.asarray(hist["counts"], float), np.asarray(hist["expected"])
    rng = np.random.default_rng(seed)
    jitter = rng.random(ranks.shape)
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(cols):
        chi2 = float(np.sum((counts[j] - expected) ** 2 / expected))
        ks = stats.kstest((ranks[:, j] + jitter[:, j]) / (n_samples + 1.0), "uniform")
        out[col] = {"chi2": chi2, "chi2_dof": hist["n_bins"] - 1,
                    "chi2_pvalue": float(stats.chi2.sf(chi2, hist["n_bins"] - 1)),
                    "ks_stat": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
    return out


def json_safe(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to Python and non-finite floats to ``None`` (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def write_diagnostics(samples_npz: str | Path, out_json: str | Path, seed: int = 0, *, n_bootstrap: int = 100,
                      n_bins: int | None = None, out_ranks: str | Path | None = None) -> dict[str, Any]:
    """All diagnostics of a posterior-sample file in one JSON (the workflow rule's entry point).

    Lenses with a non-finite truth are dropped (counted in ``n_dropped``). JSON keys: ``n_lenses``,
    ``n_samples``, ``columns``, ``regression`` ({col: :func:`regression_metrics`}), ``tarp``
    (:func:`tarp_test` with ``n_bootstrap``), ``sbc`` ({``uniformity``: {col: …}, ``histogram``:
    :func:`sbc_histogram`}), ``timing_s``. ``out_ranks`` optionally saves the (N, P) ranks as ``.npy``.
    NaN values are written as ``null``.
    """
    t0 = time.perf_counter()
    post = load_posterior_samples(samples_npz)
    ok = np.all(np.isfinite(post.truths), axis=1)
    samples, truths = post.samples[ok], post.truths[ok]
    if samples.shape[0] < 2:
        raise ValueError(f"{samples_npz}: fewer than 2 lenses with finite truths")
    timing: dict[str, float] = {"load": time.perf_counter() - t0}
    t = time.perf_counter()
    q = posterior_quantiles(samples)
    regression = regression_metrics(samples, truths, post.columns, quantiles=q)
    timing["regression"] = time.perf_counter() - t
    t = time.perf_counter()
    tarp_res = tarp_test(samples, truths, seed=seed, n_bootstrap=n_bootstrap)
    tarp_res["dims"] = [post.columns[j] for j in tarp_res["dims"]]
    timing["tarp"] = time.perf_counter() - t
    t = time.perf_counter()
    ranks = sbc_ranks(samples, truths, seed=seed)
    s = post.n_samples
    sbc = {"uniformity": sbc_uniformity(ranks, s, columns=post.columns, n_bins=n_bins, seed=seed),
           "histogram": sbc_histogram(ranks, s, n_bins)}
    timing["sbc"] = time.perf_counter() - t
    if out_ranks is not None:
        Path(out_ranks).parent.mkdir(parents=True, exist_ok=True)
        np.save(out_ranks, ranks)
    result = {
        "source": str(samples_npz),
        "n_lenses": int(samples.shape[0]),
        "n_dropped": int((~ok).sum()),
        "n_samples": s,
        "columns": post.columns,
        "seed": int(seed),
        "regression": regression,
        "tarp": tarp_res,
        "sbc": sbc,
        "timing_s": timing,
    }
    timing["total"] = time.perf_counter() - t0
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(result), indent=1) + "\n")
    return result
