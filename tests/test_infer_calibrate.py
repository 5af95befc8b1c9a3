"""Curves, MLEs, interpolated intervals and coverage recalibration on curves with known answers."""

import numpy as np
import pytest

from lensinfer.calibrate import (apply_kde_calibration, coverage_curve, coverage_tables, covering_thresholds,
                                 fit_kde_calibration, gamma_folds, make_sets, threshold_for_coverage)
from lensinfer.infer import combine, grid_centres, interval, mle, normalise, summarise_curve, wilks_threshold


def gaussian_curves(truths, sigma, grid, rng, bias_scale=1.0):
    """log-likelihood curves of a Gaussian measurement x ~ N(γ, σ²): calibrated when the curve uses the true σ."""
    x = truths + rng.normal(0, sigma * bias_scale, size=truths.shape)
    return -0.5 * ((grid[None, :] - x[:, None]) / sigma) ** 2


def test_grid_matches_reference():
    g = grid_centres(1.1, 2.9, 150)
    assert len(g) == 150 and g[0] == pytest.approx(1.106) and g[-1] == pytest.approx(2.894)
    assert np.diff(g) == pytest.approx(0.012)


def test_mle_and_interval_are_interpolated():
    grid = grid_centres(1.1, 2.9, 150)
    curve = -0.5 * ((grid - 2.0037) / 0.05) ** 2
    assert mle(grid, curve) == pytest.approx(2.0037, abs=1e-9)  # exact for a parabola
    iv = interval(grid, curve, wilks_threshold(0.6827))
    assert iv.low == pytest.approx(2.0037 - 0.05, abs=5e-4) and iv.high == pytest.approx(2.0037 + 0.05, abs=5e-4)
    assert not iv.low_open and not iv.high_open
    iv95 = interval(grid, curve, wilks_threshold(0.95))
    assert iv95.high - iv95.low == pytest.approx(2 * 1.96 * 0.05, abs=1e-3)


def test_interval_open_at_prior_edge():
    grid = grid_centres(1.1, 2.9, 150)
    curve = -0.5 * ((grid - 2.95) / 0.1) ** 2
    iv = interval(grid, curve, 1.0)
    assert iv.high_open and iv.high == pytest.approx(grid[-1]) and not iv.low_open


def test_combination_sums_information():
    grid = grid_centres(1.1, 2.9, 300)
    curves = np.stack([-0.5 * ((grid - 2.0) / 0.2) ** 2] * 4)
    comb = combine(curves)
    assert comb.max() == 0
    iv = interval(grid, comb, 1.0)
    assert (iv.high - iv.low) / 2 == pytest.approx(0.1, rel=0.02)  # σ/√N
    s = summarise_curve(grid, comb, [0.68], {"0.68": 1.5})
    assert s["intervals"]["0.68"]["recalibrated_threshold"] == 1.5


def test_calibrated_curves_cover_nominally_and_overconfident_ones_are_recalibrated():
    rng = np.random.default_rng(0)
    grid = grid_centres(1.1, 2.9, 150)
    truths = np.repeat([1.6, 2.0, 2.4], 400)
    nominal = np.linspace(0.05, 0.95, 19)
    good = coverage_curve(grid, normalise(gaussian_curves(truths, 0.08, grid, rng)), truths, nominal)
    assert np.max(np.abs(good - nominal)) < 0.06
    over = coverage_curve(grid, normalise(gaussian_curves(truths, 0.08, grid, rng, bias_scale=2.0)), truths, nominal)
    assert over[9] < nominal[9] - 0.1  # intervals too narrow
    t_star = covering_thresholds(grid, normalise(gaussian_curves(truths, 0.08, grid, rng, bias_scale=2.0)), truths)
    t = threshold_for_coverage(t_star, 0.68)
    assert t == pytest.approx(4 * wilks_threshold(0.68), rel=0.2)  # a 2× too small σ needs 4× the threshold


def test_covering_threshold_is_where_the_interval_starts_to_contain_the_truth():
    rng = np.random.default_rng(3)
    grid = grid_centres(1.1, 2.9, 40)
    # bumpy curves (several local maxima) and truths anywhere on the grid, including between points and at edges
    curves = np.cumsum(rng.normal(0, 1.5, (300, 40)), axis=1)
    truths = np.concatenate([rng.uniform(grid[0], grid[-1], 290), grid[[0, 5, 39]], [1.0, 3.0], grid[:5]])
    t_star = covering_thresholds(grid, curves, truths)
    assert np.all(np.isnan(t_star[[293, 294]]))  # outside the grid range: excluded (truths_on_grid)
    for c, g, t in zip(curves, truths, t_star):
        if np.isfinite(t):
            assert interval(grid, c, t * (1 + 1e-9) + 1e-9).contains(g)
            if t > 1e-6:
                assert not interval(grid, c, t * (1 - 1e-6)).contains(g)


def test_coverage_tables_cross_fitted(tmp_path):
    rng = np.random.default_rng(1)
    grid = grid_centres(1.1, 2.9, 150)
    truths = np.repeat(np.round(np.arange(1.4, 2.75, 0.1), 2), 60)
    curves = gaussian_curves(truths, 0.15, grid, rng)
    result, rows = coverage_tables(grid, curves, truths, [1, 13], 4, [0.68, 0.95], 40, seed=0)
    for n in ("1", "13"):
        cov = result["set_sizes"][n]["coverage_recalibrated_crossfit"]
        assert cov["0.68"] == pytest.approx(0.68, abs=0.12)
        assert result["set_sizes"][n]["thresholds"]["0.68"] == pytest.approx(wilks_threshold(0.68), rel=0.35)
    assert result["set_sizes"]["1"]["n_sets"] == len(truths)  # N = 1: every image is a set
    assert len(rows) == 80
    curve1 = [r for r in rows if r["set_size"] == 1]
    # calibrated curves: both the Wilks and the recalibrated expected-coverage curves follow the diagonal
    assert max(abs(r["empirical"] - r["nominal"]) for r in curve1) < 0.08
    assert max(abs(r["recalibrated_crossfit"] - r["nominal"]) for r in curve1) < 0.08
    with pytest.raises(ValueError, match="enlarge"):
        coverage_tables(grid, curves[:5], truths[:5], [13], 4, [0.68], 20, seed=0)


def test_gamma_folds_interleave_values():
    truths = np.repeat([1.4, 1.5, 1.6, 1.7], 3)
    a, b = gamma_folds(truths)
    assert set(truths[a]) == {1.4, 1.6} and set(truths[b]) == {1.5, 1.7}
    a, b = gamma_folds(np.full(5, 2.0))
    assert sorted(np.concatenate([a, b])) == list(range(5))


def test_make_sets_share_one_truth():
    truths = np.repeat([1.5, 2.5], 30)
    sets = make_sets(truths, 13, 2, np.random.default_rng(0))
    assert len(sets) == 4 and all(len(set(truths[s])) == 1 and len(s) == 13 for s in sets)
    assert len(set(sets[0]) & set(sets[1])) == 0  # disjoint when possible


def test_kde_calibration_round_trip():
    rng = np.random.default_rng(2)
    grid = grid_centres(1.1, 2.9, 30)
    truths = rng.uniform(1.1, 2.9, 600)
    curves = gaussian_curves(truths, 0.2, grid, rng)
    kde = fit_kde_calibration(grid, curves, truths, np.array([0.02, 0.05, 0.1, 0.2]))
    assert kde["calib_offsets"][-1] == kde["calib_values"].size == 600
    assert 0.02 <= float(kde["bandwidth_calib"]) <= 0.2
    calibrated = apply_kde_calibration(curves[:5], kde)
    assert calibrated.shape == (5, 30) and np.allclose(calibrated.max(axis=1), 0)
    # the calibrated curves still peak near the truth
    assert np.median(np.abs(grid[np.argmax(calibrated, axis=1)] - truths[:5])) < 0.4


def test_summarise_observations_writes_summary_and_curves(tmp_path):
    import json

    from lensinfer.infer import summarise_observations

    grid = grid_centres(1.1, 2.9, 150)
    curves = np.stack([-0.5 * ((grid - m) / 0.1) ** 2 for m in (1.9, 2.0, 2.1)]) + 7.0  # unnormalised is fine
    th = tmp_path / "t.json"
    th.write_text(json.dumps({"set_sizes": {"1": {"thresholds": {"0.68": 1.0}}, "3": {"thresholds": {"0.68": 2.0}}}}))
    s = summarise_observations(names=["a", "b", "c"], grid=grid, curves=curves, thresholds_path=th, kde_path=None,
                               inference_cfg={"levels": [0.68], "combine_size": 13}, out_summary=tmp_path / "s.json",
                               out_curves=tmp_path / "c.csv", extra={"estimator": "test"})
    assert s["combined_threshold_set_size"] == 3 and s["estimator"] == "test"
    assert s["combined"]["mle"] == pytest.approx(2.0, abs=1e-3) and s["per_lens"]["a"]["mle"] == pytest.approx(1.9, abs=1e-3)
    assert json.loads((tmp_path / "s.json").read_text()) == s
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "gamma,a,b,c,combined" and len(rows) == 151


def test_one_rule_for_truths_outside_the_grid(tmp_path):
    """Truths between the range edge and the outermost bin centre count as at that centre; truths outside the range
    are excluded from every coverage count (thresholds, coverage tables, coverage curve) and reported."""
    from lensinfer.calibrate import grid_range, truths_on_grid

    grid = grid_centres(1.1, 2.9, 150)
    assert grid_range(grid) == pytest.approx((1.1, 2.9))
    placed, keep = truths_on_grid(grid, np.array([1.1, 1.103, 2.0, 2.9, 1.0, 3.2, np.nan]))
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert placed[:4] == pytest.approx([grid[0], grid[0], 2.0, grid[-1]])
    # a curve peaking at the lower edge covers a truth at 1.1 with threshold 0 (its interval is open there)
    curve = -0.5 * ((grid - 1.0) / 0.1) ** 2
    assert covering_thresholds(grid, curve[None], np.array([1.1]))[0] == 0.0
    assert interval(grid, curve, 0.0).low_open

    rng = np.random.default_rng(4)
    truths = np.repeat([1.5, 2.0, 2.5], 40)
    curves = gaussian_curves(truths, 0.15, grid, rng)
    outside = np.full(30, 3.3)  # e.g. a test set drawn beyond the grid: never "misses"
    curves_out = gaussian_curves(outside, 0.15, grid, rng)
    base, rows = coverage_tables(grid, curves, truths, [1, 4], 10, [0.68], 20, seed=0)
    both, rows_both = coverage_tables(grid, np.concatenate([curves, curves_out]), np.concatenate([truths, outside]),
                                      [1, 4], 10, [0.68], 20, seed=0)
    assert base["n_truths_outside_grid"] == 0 and both["n_truths_outside_grid"] == 30
    assert both["set_sizes"] == base["set_sizes"] and rows_both == rows
    nominal = np.array([0.5, 0.9])
    assert coverage_curve(grid, np.concatenate([curves, curves_out]), np.concatenate([truths, outside]),
                          nominal) == pytest.approx(coverage_curve(grid, curves, truths, nominal))


def test_thresholds_for_the_number_of_lenses_combined(tmp_path):
    """Never the thresholds of another N: stored ones when calibrated, else computed on demand from the coverage
    curves exactly as the calibrate stage does, else an error naming calibrate.set_sizes."""
    import json

    from lensinfer.calibrate import set_size_thresholds
    from lensinfer.infer import summarise_observations

    rng = np.random.default_rng(5)
    grid = grid_centres(1.1, 2.9, 60)
    truths = np.repeat([1.6, 1.9, 2.2, 2.5], 30)
    curves = gaussian_curves(truths, 0.1, grid, rng, bias_scale=1.5)  # over-confident: thresholds depend on N
    np.savez(tmp_path / "cov.npz", grid=grid, curves=curves, gamma=truths)
    cal = {"n_sets": 8, "n_nominal": 20}
    stored, _ = coverage_tables(grid, curves, truths, [1, 13], 8, [0.68, 0.95], 20, seed=7)
    th, source = set_size_thresholds(stored, 13)
    assert source == "calibrate" and th == stored["set_sizes"]["13"]["thresholds"]
    th5, source5 = set_size_thresholds(stored, 5, coverage_curves=tmp_path / "cov.npz", calibrate_cfg=cal, seed=7)
    direct, _ = coverage_tables(grid, curves, truths, [5], 8, [0.68, 0.95], 20, seed=7)
    assert source5 == "on_demand" and th5 == direct["set_sizes"]["5"]["thresholds"]
    assert th5["0.68"] != pytest.approx(th["0.68"], rel=1e-3)  # really another N's thresholds
    with pytest.raises(ValueError, match="calibrate.set_sizes"):
        set_size_thresholds(stored, 5)
    (tmp_path / "t.json").write_text(json.dumps(stored))
    obs = gaussian_curves(np.array([1.9, 2.0, 2.1, 2.0, 1.95]), 0.1, grid, rng)
    s = summarise_observations(names=list("abcde"), grid=grid, curves=obs, thresholds_path=tmp_path / "t.json",
                               kde_path=None, inference_cfg={"levels": [0.68, 0.95]}, out_summary=tmp_path / "s.json",
                               out_curves=tmp_path / "c.csv", coverage_curves=tmp_path / "cov.npz",
                               calibrate_cfg=cal, seed=7)
    assert s["combined_threshold_set_size"] == 5 and s["combined_thresholds_source"] == "on_demand"
    assert s["combined"]["intervals"]["0.68"]["recalibrated_threshold"] == th5["0.68"]
    with pytest.raises(ValueError, match="calibrate.set_sizes"):
        summarise_observations(names=list("abcde"), grid=grid, curves=obs, thresholds_path=tmp_path / "t.json",
                               kde_path=None, inference_cfg={"levels": [0.68]}, out_summary=tmp_path / "s2.json",
                               out_curves=tmp_path / "c2.csv")
    assert not (tmp_path / "s2.json").exists()
