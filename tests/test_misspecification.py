"""Misspecification check (lensinfer.misspecification): p-values, noise ratio, peak counts, flags in the summary,
exclusion from the combined result, and — with a tiny ratio estimator trained on simulations of the test config —
matched mocks pass while mocks with a changed noise level, PSF, pixel scale or source type are flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lensinfer.infer import grid_centres, summarise_observations
from lensinfer.misspecification import (
    PERTURBATIONS,
    assess,
    conformal_p_values,
    fit_reference,
    mahalanobis,
    observed_noise_sigma,
    summary_entry,
)

ROOT = Path(__file__).resolve().parents[1]


def test_conformal_p_values_are_uniform_for_matched_and_small_for_shifted_features():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 2.0, 8))
    ref = fit_reference(rng.multivariate_normal(np.zeros(8), cov, 2000))
    matched = rng.multivariate_normal(np.zeros(8), cov, 4000)
    p = conformal_p_values(mahalanobis(matched, ref.mean, ref.precision), ref.heldout_scores)
    # valid p-values: P(p ≤ α) ≈ α (binomial sd at n = 4000: ≤ 0.005)
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(p <= alpha) - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / 4000) + 1.0 / 1001
    shifted = rng.multivariate_normal(np.full(8, 3.0), cov, 200)
    p_shift = conformal_p_values(mahalanobis(shifted, ref.mean, ref.precision), ref.heldout_scores)
    assert np.mean(p_shift < 0.01) > 0.9
    assert conformal_p_values(np.array([np.inf]), ref.heldout_scores)[0] == pytest.approx(1 / 1001)


def test_fit_reference_needs_enough_images():
    with pytest.raises(ValueError, match="at least 20"):
        fit_reference(np.zeros((10, 3)))


def test_noise_sigma_is_the_input_sigma_carried_to_the_grid():
    meta = {"background_sigma_input_e_per_s_per_pixel": 0.01, "input_pixel_scale_arcsec": [0.04, 0.04],
            "pixel_scale_arcsec": 0.08, "zero_point_flux_scale": 1.5, "noise_sigma": 0.002}
    assert observed_noise_sigma(meta) == pytest.approx(0.01 * 1.5 * 2.0)
    assert observed_noise_sigma({"noise_sigma": 0.003}) == 0.003


def test_a_frame_from_another_camera_is_flagged_by_its_pixel_scale():
    """The input frame's WCS pixel scale against the simulated camera's: 0.04″ frames through a 0.08″ model are
    flagged, naming both scales; frames within the tolerance, or without a recorded scale, are not."""
    from lensinfer.misspecification import observed_pixel_scale

    assert observed_pixel_scale({"input_pixel_scale_arcsec": [0.04, 0.0401]}) == pytest.approx(np.sqrt(0.04 * 0.0401))
    assert observed_pixel_scale({"input_pixel_scale_arcsec": [[0.263, 0.263], [0.27, 0.27]]}) == pytest.approx(0.263)
    assert observed_pixel_scale({}) is None
    rng = np.random.default_rng(2)
    names = ["hst", "same", "close", "unknown"]
    record = assess(names=names, features=rng.normal(size=(4, 3)), noise_sigmas=[1.0] * 4, backgrounds=[0.0] * 4,
                    reference=fit_reference(rng.normal(size=(400, 3))), sim_sigma=1.0, sim_backgrounds=np.zeros(10),
                    cfg={"alpha": 1e-9}, pixel_scales=[0.04, 0.08, 0.083, None], sim_pixel_scale=0.08)
    assert record["flagged"] == ["hst"]
    (reason,) = record["lenses"]["hst"]["reasons"]
    assert "0.04" in reason and "0.08" in reason and "pixel scale" in reason
    assert record["lenses"]["hst"]["pixel_scale_ratio"] == pytest.approx(0.5)
    assert record["lenses"]["close"]["pixel_scale_ratio"] == pytest.approx(0.083 / 0.08)
    assert np.isnan(record["lenses"]["unknown"]["pixel_scale_ratio"])
    strict = assess(names=names, features=rng.normal(size=(4, 3)), noise_sigmas=[1.0] * 4, backgrounds=[0.0] * 4,
                    reference=fit_reference(rng.normal(size=(400, 3))), sim_sigma=1.0, sim_backgrounds=np.zeros(10),
                    cfg={"alpha": 1e-9, "pixel_scale_tolerance": 0.01}, pixel_scales=[0.04, 0.08, 0.083, None],
                    sim_pixel_scale=0.08)
    assert strict["flagged"] == ["hst", "close"]


def _record(n_flag: int, names: list[str]) -> dict:
    rng = np.random.default_rng(1)
    ref = fit_reference(rng.normal(size=(400, 4)))
    feats = rng.normal(size=(len(names), 4))
    feats[:n_flag] += 50.0  # far from the reference cloud
    return assess(names=names, features=feats, noise_sigmas=[1.0] * len(names), backgrounds=[0.0] * len(names),
                  reference=ref, sim_sigma=1.0, sim_backgrounds=np.zeros(10), cfg={"alpha": 0.01})


def test_assess_flags_far_embeddings_and_bad_noise():
    names = ["a", "b", "c"]
    rec = _record(1, names)
    assert rec["flagged"] == ["a"] and rec["lenses"]["a"]["p_value"] < 0.01
    assert summary_entry(rec, "b").keys() == {"noise_ratio", "score", "p_value", "flagged", "reasons"}
    rng = np.random.default_rng(2)
    ref = fit_reference(rng.normal(size=(400, 4)))
    noisy = assess(names=names, features=np.zeros((3, 4)), noise_sigmas=[1.0, 2.0, 0.5], backgrounds=[0.0] * 3,
                   reference=ref, sim_sigma=1.0, sim_backgrounds=np.zeros(10), cfg=None)
    assert noisy["flagged"] == ["b", "c"] and "noise ratio" in noisy["lenses"]["b"]["reasons"][0]


def _summarise(tmp_path: Path, names: list[str], record: dict | None, exclude: bool, thresholds: dict,
               coverage_curves: Path | None = None) -> dict:
    grid = grid_centres(1.1, 2.9, 60)
    curves = np.stack([-0.5 * ((grid - m) / 0.1) ** 2 for m in (2.6, 2.0, 2.1, 1.9)[:len(names)]])
    th = tmp_path / "t.json"
    th.write_text(json.dumps(thresholds))
    return summarise_observations(
        names=names, grid=grid, curves=curves, thresholds_path=th, kde_path=None,
        inference_cfg={"levels": [0.68], "exclude_flagged": exclude}, out_summary=tmp_path / "s.json",
        out_curves=tmp_path / "c.csv", misspecification=record, coverage_curves=coverage_curves,
        calibrate_cfg={"n_sets": 5, "n_nominal": 10}, seed=0)


def test_summary_carries_the_flags_and_exclude_flagged_drops_them(tmp_path):
    names = ["a", "b", "c", "d"]
    rec = _record(1, names)
    th = {"levels": [0.68], "set_sizes": {str(n): {"thresholds": {"0.68": float(n)}} for n in (1, 3, 4)}}
    kept = _summarise(tmp_path, names, rec, False, th)
    assert kept["per_lens"]["a"]["misspecification"] == summary_entry(rec, "a")
    assert kept["per_lens"]["a"]["misspecification"]["flagged"] and kept["flagged_lenses"] == ["a"]
    assert kept["combined_lenses"] == names and kept["combined_threshold_set_size"] == 4
    dropped = _summarise(tmp_path, names, rec, True, th)
    assert dropped["combined_lenses"] == ["b", "c", "d"] and dropped["excluded_lenses"] == ["a"]
    assert dropped["combined_threshold_set_size"] == 3 and dropped["combined_thresholds_source"] == "calibrate"
    assert dropped["combined"]["intervals"]["0.68"]["recalibrated_threshold"] == 3.0
    # lens a (γ 2.6) pulls the combined MLE up when kept
    assert dropped["combined"]["mle"] == pytest.approx(2.0, abs=0.02)
    assert kept["combined"]["mle"] > dropped["combined"]["mle"] + 0.1
    header = (tmp_path / "c.csv").read_text().splitlines()[0]
    assert header == "gamma,a,b,c,d,combined"
    with pytest.raises(ValueError, match="exclude_flagged"):
        _summarise(tmp_path, ["a"], _record(1, ["a"]), True, th)
    with pytest.raises(ValueError, match="misspecification"):
        _summarise(tmp_path, names, None, True, th)


# ---------------------------------------------------------------------------------------------------------------
# Validation on simulations: a tiny NRE trained on the test config's instrument and priors
# ---------------------------------------------------------------------------------------------------------------

N_MOCKS = 6
ALPHA = 0.05  # 80 held-out reference images: the smallest p-value is 1/81


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import torch

    from lensinfer.config import load_config
    from lensinfer.data.loader import load_whitening
    from lensinfer.data.merge import merge_dataset, write_masks
    from lensinfer.misspecification import embed_dataset, peak_smoothing_pixels, simulation_sigma
    from lensinfer.data.loader import MergedDataset
    from lensinfer.simulate.shard import simulate_shard
    from lensinfer.train import load_estimator, train_ratio_estimator

    torch.set_num_threads(1)
    wd = tmp_path_factory.mktemp("misspec")
    cfg = load_config(ROOT / "config" / "test.yaml")
    pop = cfg["datasets"]["train"]["population"]
    cfg["datasets"] = {"train": {"n_shards": 2, "shard_size": 64, "population": pop},
                       "ref": {"n_shards": 2, "shard_size": 80, "population": pop}}
    merged = {}
    for name, ds in cfg["datasets"].items():
        shards = [wd / "sims" / name / f"shard_{s}.zarr" for s in range(ds["n_shards"])]
        for s, path in enumerate(shards):
            simulate_shard(cfg, name, s, path, progress=False)
        out = wd / "data" / name
        merge_dataset(name, shards, out, pixel_scale=cfg["instrument"]["pixel_scale"], radius_theta_e=1.5)
        write_masks(out, out / "masks.zarr", pixel_scale=cfg["instrument"]["pixel_scale"], radius_theta_e=1.5,
                    chunk_images=16)
        merged[name] = out
    train_cfg = dict(cfg["train"], max_epochs=4, batch_size=16)
    train_ratio_estimator(train_dir=merged["train"], train_masks=merged["train"] / "masks.zarr",
                          val_dir=merged["ref"], val_masks=merged["ref"] / "masks.zarr",
                          whitening=load_whitening(merged["train"] / "stats.json"), model_cfg=cfg["model"],
                          train_cfg=train_cfg, seed=1, out_model=wd / "model.pt", out_history=wd / "history.csv",
                          checkpoint_dir=wd / "ckpt")
    _, model, whitening = load_estimator(wd / "model.pt")
    feats, bkg, stats, peaks = embed_dataset(model, whitening, merged["ref"], merged["ref"] / "masks.zarr",
                                             statistics=True, peaks=(peak_smoothing_pixels(cfg["instrument"]), 5.0))
    sigma = simulation_sigma(MergedDataset(merged["ref"], merged["ref"] / "masks.zarr").shard_attrs())
    return {"cfg": cfg, "model": model, "whitening": whitening, "reference": fit_reference(feats),
            "stat_reference": fit_reference(stats), "peak_reference": peaks, "sigma": sigma, "bkg": bkg, "wd": wd}


@pytest.mark.slow
def test_matched_mocks_pass_and_noisier_mocks_are_flagged(tiny_setup):
    """Mocks of the training family mostly pass; mocks with 4× less exposure (noise ratio), with a PSF twice as
    wide (image statistics: the power spectrum's shape) and from a camera with half the pixel scale (the frame's WCS
    against the simulated camera) are flagged, and so are at least half of the mocks whose sources are clumpy
    COSMOS-format stamps instead of Sérsic profiles (the peak count; 4 of 6 here, 50 % of 30 on the demo models,
    ``bench/misspecification.py``)."""
    from lensinfer.misspecification import flag_rates, write_cosmos_test_split

    from .cosmos_fixture import make_cosmos_fixture

    s = tiny_setup
    cosmos = make_cosmos_fixture(s["wd"] / "cosmos", n=6, clumpy=True)
    rates = flag_rates(estimators={"nre": (s["model"], s["whitening"], s["reference"], s["stat_reference"],
                                           s["peak_reference"])},
                       sim_sigma=s["sigma"],
                       sim_backgrounds=s["bkg"], config=s["cfg"], n=N_MOCKS, workdir=s["wd"] / "mocks",
                       cfg={"alpha": ALPHA}, conditions=PERTURBATIONS, cosmos_dir=cosmos,
                       split_lists=write_cosmos_test_split(s["wd"] / "splits", 6))["nre"]
    print(json.dumps(rates, indent=1))
    assert rates["matched"]["flag_rate"] <= 2 / N_MOCKS, rates["matched"]
    assert 0.8 <= rates["matched"]["median_noise_ratio"] <= 1.25, rates["matched"]
    assert rates["noise"]["flag_rate"] >= (N_MOCKS - 1) / N_MOCKS, rates["noise"]
    assert rates["noise"]["median_noise_ratio"] > 1.6, rates["noise"]
    assert rates["psf"]["flag_rate"] >= (N_MOCKS - 1) / N_MOCKS, rates["psf"]
    assert rates["psf"]["flag_rate_statistics"] >= (N_MOCKS - 1) / N_MOCKS and rates["psf"]["flag_rate_noise"] == 0
    # frames from a camera with half the pixel scale, resampled onto the grid: flagged by the WCS pixel scale
    assert rates["pixel_scale"]["flag_rate_pixel_scale"] == 1.0, rates["pixel_scale"]
    assert rates["pixel_scale"]["flag_rate_noise"] == 0, rates["pixel_scale"]
    for kind in ("matched", "psf", "noise", "source"):
        assert rates[kind]["flag_rate_pixel_scale"] == 0, (kind, rates[kind])
    # clumpy sources: more matched-filter peaks than the simulations make (one-sided), not the matched mocks
    assert rates["source"]["flag_rate"] >= 0.5 and rates["source"]["flag_rate_peaks"] >= 0.5, rates["source"]
    assert rates["source"]["median_peak_count"] > rates["matched"]["median_peak_count"], rates
    assert rates["matched"]["flag_rate_peaks"] == 0 and rates["noise"]["flag_rate_noise"] == 1.0, rates


class _UnitWhitening:
    """(x − 0)/1 × mask: the whitening interface image_statistics uses."""

    def images(self, x, mask):
        return np.asarray(x, np.float32) * (mask[:, None] if np.ndim(x) == 4 else mask)


def test_image_statistics_see_the_psf_not_the_brightness():
    """The spectral-shape features do not move when an image is made brighter (the level does), and a blurred (wider-PSF) image is
    far out in the Mahalanobis/conformal check fitted on sharp ones, while fresh sharp images are not."""
    from scipy.ndimage import gaussian_filter

    from lensinfer.misspecification import N_POWER_BINS, conformal_p_values, image_statistics

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32] - 15.5

    def sharp(n):
        r0 = rng.uniform(5, 9, n)[:, None, None]
        amp = rng.uniform(5, 20, n)[:, None, None]
        ring = amp * np.exp(-0.5 * ((np.hypot(xx, yy)[None] - r0) / 0.8) ** 2)
        return (gaussian_filter(ring, (0, 1.0, 1.0)) + rng.normal(0, 0.3, ring.shape)).astype(np.float32)

    w = _UnitWhitening()
    x = sharp(4)
    shape = slice(0, N_POWER_BINS - 2)
    np.testing.assert_allclose(image_statistics(3 * x, w)[:, shape], image_statistics(x, w)[:, shape], atol=1e-6)
    ref = fit_reference(image_statistics(sharp(400), w))
    blurred = sharp(20)
    blurred = (gaussian_filter(blurred, (0, 2.0, 2.0))).astype(np.float32)
    p_blur = conformal_p_values(mahalanobis(image_statistics(blurred, w), ref.mean, ref.precision), ref.heldout_scores)
    p_same = conformal_p_values(mahalanobis(image_statistics(sharp(20), w), ref.mean, ref.precision),
                                ref.heldout_scores)
    assert np.all(p_blur < 0.01) and np.median(p_same) > 0.1, (p_blur, p_same)


def _rings(rng, n, clumps=0, sigma=0.3):
    """Two smooth lensed arcs on a ring (32 × 32; brightest at two opposite image positions) with white noise σ;
    with ``clumps`` compact knots on the ring."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[:32, :32] - 15.5
    r0 = rng.uniform(6, 9, n)[:, None, None]
    amp = rng.uniform(5, 20, n)[:, None, None]
    phi0 = rng.uniform(0, np.pi, n)[:, None, None]
    along = np.cos(np.arctan2(yy, xx)[None] - phi0) ** 2  # 1 at the two image positions, 0 between them
    img = amp * along * np.exp(-0.5 * ((np.hypot(xx, yy)[None] - r0) / 1.2) ** 2)
    for i in range(n):
        for phi in rng.uniform(0, 2 * np.pi, clumps):
            cx, cy = 15.5 + r0[i, 0, 0] * np.cos(phi), 15.5 + r0[i, 0, 0] * np.sin(phi)
            img[i] += 1.5 * amp[i] * np.exp(-0.5 * ((xx + 15.5 - cx) ** 2 + (yy + 15.5 - cy) ** 2) / 0.5**2)
    img = gaussian_filter(img, (0, 0.8, 0.8))
    return (img + rng.normal(0, sigma, img.shape)).astype(np.float32)


def test_peak_count_sees_compact_clumps_and_is_one_sided():
    """Knots on smooth arcs add matched-filter peaks; the count's one-sided conformal p-value flags them, not fresh
    smooth arcs, and a frame with *fewer* peaks than the simulations is not flagged."""
    from lensinfer.misspecification import peak_counts

    rng = np.random.default_rng(5)
    smooth, clumpy = _rings(rng, 300), _rings(rng, 20, clumps=8)
    ref = peak_counts(smooth, 0.3, smoothing=0.8, threshold=5.0)
    fresh = peak_counts(_rings(rng, 20), 0.3, smoothing=0.8, threshold=5.0)
    knots = peak_counts(clumpy, 0.3, smoothing=0.8, threshold=5.0)
    assert np.median(knots) >= np.median(ref) + 2, (np.median(knots), np.median(ref))
    p_knots, p_fresh = conformal_p_values(knots, ref), conformal_p_values(fresh, ref)
    assert np.mean(p_knots < 0.05) >= 0.85 and np.mean(p_fresh < 0.05) <= 0.1, (p_knots, p_fresh)
    assert conformal_p_values(np.zeros(1), ref)[0] == 1.0  # an empty frame: fewer peaks is not evidence
    # bands add up; the threshold is in units of the background sigma given
    two = np.stack([clumpy[:3], clumpy[:3]], axis=1)
    np.testing.assert_array_equal(peak_counts(two, 0.3, 0.8), 2 * peak_counts(clumpy[:3], 0.3, 0.8))
    np.testing.assert_array_equal(peak_counts(10 * clumpy[:3], 3.0, 0.8), peak_counts(clumpy[:3], 0.3, 0.8))
    with pytest.raises(ValueError, match="background sigma"):
        peak_counts(clumpy[:1], 0.0, 0.8)


def test_peak_smoothing_is_the_simulated_psf_sigma_in_pixels():
    from lensinfer.misspecification import peak_smoothing, peak_smoothing_pixels

    hst = {"pixel_scale": 0.08, "psf": {"type": "gaussian", "fwhm": 0.144}}
    assert peak_smoothing_pixels(hst) == pytest.approx(0.144 / 2.3548 / 0.08, rel=1e-4)
    assert peak_smoothing_pixels({"pixel_scale": 0.04, "psf": {"type": "pixel", "path": "psf.fits"}}) == 1.0
    drawn = {"pixel_scale": 0.263, "psf": {"type": "gaussian", "fwhm": {"uniform": [0.9, 1.2]}}}
    assert peak_smoothing_pixels(drawn) == 1.0
    bands = {"pixel_scale": 0.2, "reference_band": "i", "psf": {"type": "gaussian", "fwhm": 1.0},
             "bands": [{"name": "g", "psf": {"type": "gaussian", "fwhm": 0.8}}, {"name": "i"}]}
    assert peak_smoothing_pixels(bands) == pytest.approx(1.0 / 2.3548 / 0.2, rel=1e-4)  # i: the frame's PSF
    assert peak_smoothing({"peak_smoothing": 1.7}, hst) == 1.7
    assert peak_smoothing({"peak_smoothing": None}, None) == 1.0


def test_assess_flags_a_lens_with_more_peaks_than_any_simulation():
    rng = np.random.default_rng(2)
    ref = fit_reference(rng.normal(size=(400, 3)))
    names = ["knotty", "plain"]
    kw = dict(names=names, features=np.zeros((2, 3)), noise_sigmas=[1.0, 1.0], backgrounds=[0.0, 0.0],
              reference=ref, sim_sigma=1.0, sim_backgrounds=np.zeros(10), cfg={"alpha": 0.01})
    peak_ref = rng.poisson(6, 999).astype(float)
    rec = assess(**kw, peaks=np.array([40.0, 6.0]), peak_reference=peak_ref)
    assert rec["flagged"] == ["knotty"] and rec["tests"] == ["embedding", "peak-count"]
    knotty = rec["lenses"]["knotty"]
    assert knotty["peak_count"] == 40 and knotty["p_value_peaks"] == pytest.approx(1 / 1000)
    assert knotty["p_value"] == pytest.approx(2 / 1000)  # Bonferroni over the two tests computed
    assert knotty["reasons"][0].startswith("peak-count p-value")
    assert rec["lenses"]["plain"]["p_value_peaks"] > 0.3 and not rec["lenses"]["plain"]["flagged"]
    with pytest.raises(ValueError, match="go together"):
        assess(**kw, peaks=np.array([40.0, 6.0]))
    with pytest.raises(ValueError, match="2 lenses"):
        assess(**kw, peaks=np.array([40.0]), peak_reference=peak_ref)
