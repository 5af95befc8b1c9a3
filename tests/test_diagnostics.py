"""Posterior diagnostics (lensinfer.diagnostics): regression metrics, TARP and SBC on synthetic posteriors.

A posterior is exactly calibrated when the truth is itself a draw from it: truth_i = μ_i + σ ε_i and the samples are
μ_i + σ ε'_ij. Shrinking the sample width (σ/3) makes it over-confident.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensinfer import diagnostics as D

N, S, P = 500, 400, 3
COLS = ["lens_theta_E", "lens_gamma", "gamma_pop"]


def _posterior(width_factor: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = np.array([0.9, 1.6, 1.1]), np.array([1.3, 2.4, 2.9])
    sigma = (hi - lo) * np.array([0.05, 0.1, 0.3])
    mu = rng.uniform(lo, hi, (N, P))
    truths = mu + sigma * rng.standard_normal((N, P))
    samples = mu[:, None, :] + width_factor * sigma * rng.standard_normal((N, S, P))
    return samples, truths


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    return _posterior(1.0)


@pytest.fixture(scope="module")
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    return _posterior(1.0 / 3.0)


def test_r2_near_perfect_and_prior():
    rng = np.random.default_rng(1)
    truths = rng.uniform(0.9, 1.3, (N, 1))
    sharp = truths[:, None, :] + 1e-3 * rng.standard_normal((N, S, 1))
    m = D.regression_metrics(sharp, truths, ["lens_theta_E"])["lens_theta_E"]
    assert m["r2"] > 0.999
    assert m["median_precision"] == pytest.approx(1e-3, rel=0.1)
    assert abs(m["bias"]) < 1e-4 and m["median_fractional_deviation"] < 1e-3
    prior = rng.uniform(0.9, 1.3, (N, S, 1))  # the "posterior" ignores the data
    mp = D.regression_metrics(prior, truths, ["lens_theta_E"])["lens_theta_E"]
    assert abs(mp["r2"]) < 0.05
    assert mp["median_precision"] == pytest.approx(0.4 * 0.34, rel=0.1)  # (q84 − q16)/2 of U(0.9, 1.3)


def test_regression_metrics_exact_values():
    truths = np.array([[1.0], [2.0], [3.0], [4.0]])
    samples = truths[:, None, :] + 0.1 + np.array([-1.0, 0.0, 1.0])[None, :, None]  # median = truth + 0.1
    m = D.regression_metrics(samples, truths, ["a"])["a"]
    assert m["bias"] == pytest.approx(0.1) and m["median_residual"] == pytest.approx(0.1)
    assert m["scatter_std"] == pytest.approx(0.0, abs=1e-12) and m["rmse"] == pytest.approx(0.1)
    assert m["r2"] == pytest.approx(1 - 4 * 0.01 / 5.0)
    # linear-interpolated 16/84 % of {-1, 0, 1}: ±0.68 → σ = 0.68
    assert m["median_precision"] == pytest.approx(0.68)
    assert m["median_fractional_deviation"] == pytest.approx(np.median(0.1 / truths[:, 0]))
    assert m["coverage_68"] == 1.0


def test_calibrated_posterior_passes(calibrated):
    samples, truths = calibrated
    res = D.tarp_test(samples, truths, seed=0)
    assert res["max_dev"] < 0.1
    assert res["ks_pvalue"] > 1e-3
    assert res["alpha"][0] >= 0 and res["alpha"][-1] <= 1 + 1e-9
    assert res["ecp"][0] == 0 and res["ecp"][-1] == pytest.approx(1)
    ranks = D.sbc_ranks(samples, truths)
    assert ranks.shape == (N, P) and ranks.min() >= 0 and ranks.max() <= S
    uni = D.sbc_uniformity(ranks, S, columns=COLS)
    assert set(uni) == set(COLS)
    for col in COLS:
        assert uni[col]["chi2_pvalue"] > 1e-3 and uni[col]["ks_pvalue"] > 1e-3
    cov = D.regression_metrics(samples, truths, COLS)
    for col in COLS:
        assert cov[col]["coverage_68"] == pytest.approx(0.68, abs=0.07)


def test_overconfident_posterior_fails(overconfident):
    samples, truths = overconfident
    assert D.tarp_test(samples, truths, seed=0)["max_dev"] > 0.2
    ranks = D.sbc_ranks(samples, truths)
    uni = D.sbc_uniformity(ranks, S, columns=COLS)
    for col in COLS:
        assert uni[col]["chi2_pvalue"] < 1e-6 and uni[col]["ks_pvalue"] < 1e-6
    hist = D.sbc_histogram(ranks, S)
    counts = np.asarray(hist["counts"])
    mid = counts[:, counts.shape[1] // 2]
    assert np.all(counts[:, 0] > mid) and np.all(counts[:, -1] > mid)  # ∪-shaped


def test_tarp_engines_agree_with_tarp_package(calibrated):
    samples, truths = calibrated
    state = np.random.get_state()
    a = D.tarp_test(samples[:200, :200], truths[:200], seed=5, engine="tarp")
    b = D.tarp_test(samples[:200, :200], truths[:200], seed=5, engine="chunked")
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]  # global RNG untouched
    np.testing.assert_allclose(a["ecp"], b["ecp"], atol=1e-12)
    np.testing.assert_allclose(a["alpha"], b["alpha"], atol=1e-12)
    # and both equal a direct call of the package on its own layout
    import tarp

    refs = np.random.RandomState(5).uniform(0, 1, (200, P))
    ecp, alpha = tarp.get_tarp_coverage(np.transpose(samples[:200, :200], (1, 0, 2)).copy(), truths[:200].copy(),
                                        references=refs, norm=True, num_alpha_bins=20, seed=5)
    np.random.set_state(state)
    np.testing.assert_allclose(a["ecp"], ecp, atol=1e-12)


def test_tarp_bootstrap_band_and_constant_column(calibrated):
    samples, truths = calibrated
    s2 = np.concatenate([samples, np.full(samples.shape[:2] + (1,), 0.5)], axis=2)
    t2 = np.concatenate([truths, np.full((N, 1), 0.5)], axis=1)
    res = D.tarp_test(s2, t2, seed=1, n_bootstrap=50)
    assert res["dims"] == [0, 1, 2]  # the constant column is left out
    boot = res["bootstrap"]
    lo, hi = np.asarray(boot["ecp_p2.5"]), np.asarray(boot["ecp_p97.5"])
    assert lo.shape == hi.shape == (len(res["alpha"]),)
    assert np.all(lo <= hi) and np.mean((np.asarray(res["ecp"]) >= lo) & (np.asarray(res["ecp"]) <= hi)) > 0.9
    assert boot["max_dev_percentiles"]["2.5"] <= boot["max_dev_percentiles"]["97.5"]


def test_sbc_ties_and_histogram_probabilities():
    truths = np.zeros((1000, 1))
    samples = np.zeros((1000, 9, 1))  # every sample ties with the truth → ranks uniform on 0..9 after tie-breaking
    ranks = D.sbc_ranks(samples, truths, seed=3)
    assert ranks.min() == 0 and ranks.max() == 9
    assert D.sbc_uniformity(ranks, 9, n_bins=10)["p0"]["chi2_pvalue"] > 1e-3
    hist = D.sbc_histogram(ranks, 9, n_bins=4)  # 10 rank values in 4 bins: widths 3, 2, 3, 2
    assert sum(hist["prob"]) == pytest.approx(1.0)
    assert np.asarray(hist["counts"]).sum() == 1000
    np.testing.assert_allclose(hist["prob"], [0.3, 0.2, 0.3, 0.2])


def test_write_diagnostics_json(tmp_path, calibrated):
    samples, truths = calibrated
    samples = np.concatenate([samples[:100, :200], np.full((100, 200, 1), 0.4)], axis=2).astype(np.float32)
    truths = np.concatenate([truths[:100], np.full((100, 1), 0.4)], axis=1)
    truths[3, 0] = np.nan  # dropped
    cols = COLS + ["z_lens"]
    path = tmp_path / "post.npz"
    np.savez(path, samples=samples, truths=truths, columns=np.array(cols))
    out = tmp_path / "diag" / "diagnostics.json"
    res = D.write_diagnostics(path, out, seed=0, n_bootstrap=20, out_ranks=tmp_path / "ranks.npy")
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    blob = json.loads(text)
    assert blob["n_lenses"] == 99 and blob["n_dropped"] == 1 and blob["n_samples"] == 200
    assert set(blob["regression"]) == set(cols) and blob["regression"]["z_lens"]["r2"] is None
    assert blob["tarp"]["dims"] == COLS and len(blob["tarp"]["alpha"]) == len(blob["tarp"]["ecp"])
    assert set(blob["sbc"]["uniformity"]) == set(cols)
    assert np.asarray(blob["sbc"]["histogram"]["counts"]).shape == (4, blob["sbc"]["histogram"]["n_bins"])
    assert np.load(tmp_path / "ranks.npy").shape == (99, 4)
    assert res["timing_s"]["total"] > 0


def test_shape_errors():
    with pytest.raises(ValueError):
        D.regression_metrics(np.zeros((3, 4)), np.zeros((3, 1)), ["a"])
    with pytest.raises(ValueError):
        D.sbc_ranks(np.zeros((3, 4, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError):
        D.tarp_test(np.zeros((3, 4, 1)), np.zeros((3, 1)))  # no varying parameter
