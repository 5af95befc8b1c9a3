"""The anchors' own settings for ``bench/science_npe.py --setting seeds-delve | holismokes`` (issue 18).

Each setting simulates the anchor's data with lensinfer's own simulator (``lensinfer.simulate.shard.simulate_shard``,
multi-band, noise drawn once and stored — the same fixed images for every estimator, as the anchors had), trains the
project's flow with the project's training loop (``lensinfer.train.train_flow_posterior``), and prints the anchor's
table beside ours. Facts on the settings: ``spec/survey_settings.md`` of the shared reference notes (DELVE presets of
deeplenstronomy, HSC-SSP Wide), summarised in :data:`DELVE` and :data:`HSC` below.

* ``seeds-delve`` (seed 003, Ramos & De Bom; seed 001's metrics too): 10 000 images (90 % for training — 8 100 to fit,
  900 to stop early, the seed's 10 % validation fraction — and 10 % = 1 000 test images), 64×64 pixels of 0.263″, g,
  r, i; SIE with σ_v ~ U(150, 400) km/s, θE = 4π(σ_v/c)² D_ls/D_s (``lens.main.sigma_v``), e1, e2 ~ U(−0.4, 0.4),
  z_l ~ U(0.2, 0.4), z_s ~ U(0.6, 0.8); Sérsic lens light and source (magnitudes and colours of
  ``config/survey.yaml``: the seed's deeplenstronomy light priors are not in the notes). The peer is ``sbi`` 0.27 as
  the seed used it (:func:`run_sbi`), trained on the very same 9 000 images and timed identically.
* ``holismokes`` (seed 004, HOLISMOKES IV, Schuldt et al. 2021): 64×64 pixels of 0.168″, HSC g, r, i (median Wide
  seeing, 5σ depths through :func:`zero_point_for_depth`), SIE with θE ~ U(0.5, 3)″ (their uniform-θE network),
  targets x, y, e_x, e_y, θE; lensinfer substitutes Sérsic lens light and Sérsic sources for their real HSC LRGs and
  HUDF galaxies. Image positions and time delays of the predicted (posterior-median) SIE for θE > 0.8″ with the true
  source position, through ``lensinfer.derived.derived_quantities``, as they did.

Sampling speed is measured on all 2 500 lenses × 5 000 samples (the 1 000 test lenses tiled), embedding + sampling
in the timer, for ours and sbi's alike; the metrics use the first 1 000 lenses of the first timed draw. Then
:func:`side_by_side` re-times both estimators in alternating rounds (``--timing-repeats``, default 3; the sbi
posterior is pickled in the workdir so a later run can re-time it) and reports the medians and their ratio.

Beside the anchor's table, seeds-delve reports what its numbers are measured against: :func:`r2_bounds`, the R²
ceilings of σ_v, z_l and z_s when θE is known exactly and the images carry no redshift information (in the seed's
prior σ_v is not fixed by θE alone), and :func:`paired_r2_difference`, a paired bootstrap of R²(ours) − R²(sbi) on
the same test lenses. ``--light-traces-mass`` is a labelled variant (the lens light takes the mass's e1, e2), not the
anchor's stated data; ``--train-seed`` retrains ours on the same data for the spread over training runs.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("seeds-delve", "holismokes")

#: DELVE (DECam) per band, ``spec/survey_settings.md``: seeing median (16–84 %) → truncated normal of σ = half the
#: 16–84 % width; exposure: a single exposure at the mode of the empirical distribution (g ≈ 89 s, r, i ≈ 35 s —
#: lensinfer draws one exposure time per band, not one per image); DES zero points (the DELVE preset names none);
#: DES median sky. Camera: read noise 7 e⁻, gain 6.083 e⁻/ADU.
DELVE = {
    "g": {"fwhm": (1.25, 1.10, 1.53), "exposure_time": 89.0, "zero_point": 26.58, "sky": 22.0},
    "r": {"fwhm": (1.16, 1.01, 1.40), "exposure_time": 35.0, "zero_point": 26.78, "sky": 21.2},
    "i": {"fwhm": (1.08, 0.93, 1.26), "exposure_time": 35.0, "zero_point": 26.75, "sky": 19.9},
}
#: HSC-SSP Wide per band: median seeing, 5σ point-source depth (``spec/survey_settings.md``), total exposure of the
#: Wide layer (g, r 10 min, i 20 min) and an approximate dark Maunakea sky (mag/arcsec²; not in the notes). The zero
#: point (e⁻/s) is then set so that the depth holds (:func:`zero_point_for_depth`). Read noise 4.5 e⁻.
HSC = {
    "g": {"fwhm": 0.77, "depth": 26.5, "exposure_time": 600.0, "sky": 22.0},
    "r": {"fwhm": 0.76, "depth": 26.1, "exposure_time": 600.0, "sky": 21.1},
    "i": {"fwhm": 0.58, "depth": 25.9, "exposure_time": 1200.0, "sky": 20.3},
}

SEEDS_DELVE_TARGETS = ["lens_sigma_v", "lens_theta_E", "lens_e1", "lens_e2", "z_lens", "z_source"]
HOLISMOKES_TARGETS = ["lens_center_x", "lens_center_y", "lens_e1", "lens_e2", "lens_theta_E"]
#: JSON names of the targets
SHORT = {"lens_sigma_v": "sigma_v", "lens_theta_E": "theta_E", "lens_e1": "e1", "lens_e2": "e2", "z_lens": "z_l",
         "z_source": "z_s", "lens_center_x": "x", "lens_center_y": "y"}
HOLI_SHORT = dict(SHORT, lens_e1="e_x", lens_e2="e_y")

#: seed 003's table (R² MAF / NSF; NSF mean absolute residuals) and seed 001's (median precision / median fractional
#: deviation / R², %), ``spec/survey_settings.md``
SEED003_R2 = {"sigma_v": (0.903, 0.902), "theta_E": (0.999, 0.999), "e1": (0.976, 0.988), "e2": (0.987, 0.988),
              "z_l": (-0.007, -0.008), "z_s": (-0.006, -0.012)}
SEED003_MAR = {"sigma_v": 0.068, "theta_E": 0.014, "e1": 0.204, "e2": 0.173, "z_l": 0.173, "z_s": 0.074}
SEED001 = {"theta_E": (91.0, 3.6, 0.93), "sigma_v": (79.6, 4.0, 0.68), "z_l": (91.4, 3.5, 0.97),
           "z_s": (85.0, 2.4, 0.95)}
#: HOLISMOKES IV (uniform-θE network): median, −, + of the 1σ band
HOLI = {"x": (0.00, 0.30, 0.30), "y": (0.00, 0.29, 0.30), "theta_E": (0.07, 0.12, 0.29), "e_x": (-0.01, 0.09, 0.08),
        "e_y": (0.00, 0.09, 0.08), "img_dx": (0.00, 0.29, 0.29), "img_dy": (0.00, 0.31, 0.32),
        "dt_frac": (0.04, 0.05, 0.27)}


def zero_point_for_depth(depth: float, sky: float, fwhm: float, exposure_time: float) -> float:
    """Zero point (mag of 1 e⁻/s) at which a point source of magnitude ``depth`` has S/N = 5 in ``exposure_time``,
    sky-limited, with a Gaussian PSF of ``fwhm`` (arcsec) measured optimally (PSF-weighted: noise-equivalent area
    A = 4π σ², σ = FWHM/2.3548; Gaussian image S/N = F t / sqrt(A B t), B the sky rate per arcsec²):
    F = 10^(−0.4 (m − ZP)), B = 10^(−0.4 (μ − ZP))  ⇒  ZP = 2 m − μ + 5 log10(5 sqrt(A / t))."""
    area = 4.0 * math.pi * (fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))) ** 2
    return 2.0 * depth - sky + 5.0 * math.log10(5.0 * math.sqrt(area / exposure_time))


def _band(name: str, exposure_time: float, sky: float, zero_point: float, psf: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "exposure_time": exposure_time, "num_exposures": 1, "sky_brightness": sky,
            "magnitude_zero_point": round(zero_point, 4), "psf": psf}


def setting_config(setting: str, *, n_train: int, n_val: int, n_test: int, shard_size: int, max_epochs: int,
                   flow: dict[str, Any], train: dict[str, Any], light_traces_mass: bool = False) -> dict[str, Any]:
    """``config/survey.yaml`` (multi-band, DES-like) turned into the anchor's setting: instrument, lens prior, no
    subhalos, no point source, datasets of the given sizes, every pixel kept (no mask). ``light_traces_mass``: a
    variant, not the anchor's stated setting — the lens light takes the mass's e1, e2 (``lens.light_traces_mass``)."""
    cfg = yaml.safe_load((ROOT / "config" / "survey.yaml").read_text())
    lens = cfg["lens"]
    lens.pop("point_source", None)
    lens["shear"] = None
    lens["multipoles"] = None
    if setting == "seeds-delve":
        bands = [_band(b, v["exposure_time"], v["sky"], v["zero_point"],
                       {"type": "gaussian", "fwhm": {"truncnormal": [v["fwhm"][0], (v["fwhm"][2] - v["fwhm"][1]) / 2,
                                                                    0.6, 2.2]}}) for b, v in DELVE.items()]
        cfg["instrument"] = {"pixel_scale": 0.263, "num_pix": 64, "exposure_time": 35.0, "num_exposures": 1,
                             "sky_brightness": 19.9, "read_noise": 7.0, "ccd_gain": 6.083,
                             "magnitude_zero_point": 26.75, "psf": {"type": "gaussian", "fwhm": 1.08},
                             "supersampling": 1, "reference_band": "i", "bands": bands}
        lens["z_lens"], lens["z_source"] = {"uniform": [0.2, 0.4]}, {"uniform": [0.6, 0.8]}
        lens["main"] = {"sigma_v": {"uniform": [150.0, 400.0]}, "gamma": 2.0, "e1": {"uniform": [-0.4, 0.4]},
                        "e2": {"uniform": [-0.4, 0.4]}, "center_x": 0.0, "center_y": 0.0}
        targets = SEEDS_DELVE_TARGETS
    elif setting == "holismokes":
        bands = [_band(b, v["exposure_time"], v["sky"],
                       zero_point_for_depth(v["depth"], v["sky"], v["fwhm"], v["exposure_time"]),
                       {"type": "gaussian", "fwhm": v["fwhm"]}) for b, v in HSC.items()]
        cfg["instrument"] = {"pixel_scale": 0.168, "num_pix": 64, "exposure_time": 1200.0, "num_exposures": 1,
                             "sky_brightness": 20.3, "read_noise": 4.5, "ccd_gain": 3.0,
                             "magnitude_zero_point": bands[2]["magnitude_zero_point"],
                             "psf": {"type": "gaussian", "fwhm": 0.58}, "supersampling": 1, "reference_band": "i",
                             "bands": bands}
        # their lenses: LRGs (z_l ≈ 0.2–0.7) with HUDF sources (z_s ≈ 1–3): redshifts only set D_Δt here
        lens["z_lens"], lens["z_source"] = {"uniform": [0.2, 0.7]}, {"uniform": [1.0, 2.5]}
        lens["main"] = {"theta_E": {"uniform": [0.5, 3.0]}, "gamma": 2.0, "e1": {"uniform": [-0.3, 0.3]},
                        "e2": {"uniform": [-0.3, 0.3]}, "center_x": {"uniform": [-0.3, 0.3]},
                        "center_y": {"uniform": [-0.3, 0.3]}}
        lens["source"] = dict(lens["source"], magnitude={"uniform": [21.0, 24.0]}, R_sersic={"uniform": [0.1, 0.5]},
                              center_x={"uniform": [-0.4, 0.4]}, center_y={"uniform": [-0.4, 0.4]})
        targets = HOLISMOKES_TARGETS
    else:
        raise ValueError(f"--setting: unknown {setting!r}; allowed: hst, {', '.join(SETTINGS)}")
    for component in ("lens_light", "source"):  # g, r, i only: survey.yaml's z colours go
        colors = lens[component]["colors"]
        lens[component]["colors"] = {b: v for b, v in colors.items() if b in ("g", "r")}
    cfg["renderer"] = {"epl_model": "EPL_NUMBA"}
    lens["light_traces_mass"] = bool(light_traces_mass)
    pop = {"profile": "EPL", "gamma": {"uniform": [1.1, 2.9]}, "n_sub": 0, "placement_threshold": 0.2}
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    cfg["datasets"] = {}
    for name, n in sizes.items():  # equal shards of at most shard_size images, exactly n in all
        n_shards = math.ceil(n / shard_size)
        while n % n_shards:
            n_shards += 1
        cfg["datasets"][name] = {"n_shards": n_shards, "shard_size": n // n_shards, "population": dict(pop)}
    # no subhalos, so γ_pop changes no image; the test set takes a fixed γ_pop as the schema wants of it
    cfg["datasets"]["test"]["population"] = {k: v for k, v in pop.items() if k != "gamma"} | {"gamma_values": [2.0]}
    cfg["calibrate"] = dict(cfg["calibrate"], kde_dataset="val", coverage_dataset="test")
    cfg["inference"]["cdm_datasets"] = []
    cfg["observations"]["mock"]["population"] = dict(pop, placement_threshold=0.0)
    cfg["storage"] = {"chunk_images": 128}
    cfg["mask"] = {"radius_theta_E": None}
    cfg["estimator"] = "npe"
    cfg["flow"] = dict(flow, targets=list(targets))
    cfg["train"] = dict(train, max_epochs=max_epochs)
    return cfg


def check_workdir(work: Path, cfg: dict[str, Any]) -> None:
    """Refuse a ``--workdir`` whose simulations were made with another lens prior or instrument (e.g. the
    ``--light-traces-mass`` variant in a workdir of the stated setting): existing shards are reused by path, so a
    silent mix would train on the wrong data."""
    old_path = work / "config.yaml"
    if not old_path.exists() or not any((work / "sims").glob("*/shard_*.zarr")):
        return
    old = yaml.safe_load(old_path.read_text())
    for section in ("lens", "instrument"):
        a, b = dict(old.get(section) or {}), dict(cfg[section])
        if section == "lens":  # workdirs from before the key existed hold light_traces_mass: false data
            a.setdefault("light_traces_mass", False)
            b.setdefault("light_traces_mass", False)
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ValueError(f"--workdir {work}: its simulations were made with another {section} "
                             f"({', '.join(f'{section}.{k}' for k in keys)} differ); use a fresh workdir")


def _simulate(task: tuple[dict[str, Any], str, int, str]) -> float:
    from lensinfer.simulate.shard import simulate_shard

    cfg, dataset, shard, out = task
    if Path(out).exists():
        return 0.0
    t0 = time.process_time()
    tmp = out + ".tmp"
    simulate_shard(cfg, dataset, shard, tmp, progress=False)
    Path(tmp).rename(out)
    return time.process_time() - t0


def simulate_all(cfg: dict[str, Any], work: Path, procs: int, full_masks: Callable[..., None]) -> float:
    """Simulate (noisy, stored) and merge every dataset; existing shards are kept; masks keep every pixel."""
    from lensinfer.data.merge import merge_dataset

    tasks = [(cfg, name, s, str(work / "sims" / name / f"shard_{s}.zarr"))
             for name, ds in cfg["datasets"].items() for s in range(ds["n_shards"])]
    for name in cfg["datasets"]:
        (work / "sims" / name).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(procs) as pool:
        cpu = float(sum(pool.map(_simulate, tasks)))
    for name, ds in cfg["datasets"].items():
        merged = work / "data" / name
        if not (merged / "masks.zarr").exists():
            paths = [work / "sims" / name / f"shard_{s}.zarr" for s in range(ds["n_shards"])]
            stats = merge_dataset(name, paths, merged, pixel_scale=cfg["instrument"]["pixel_scale"],
                                  radius_theta_e=None)
            full_masks(merged / "masks.zarr", stats["n_images"], cfg["instrument"]["num_pix"],
                       cfg["storage"]["chunk_images"])
    return cpu


def _test_set(work: Path, columns: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(images, masks, truths of ``columns``, all table columns, full table) of the test set."""
    from lensinfer.data.loader import MergedDataset
    from lensinfer.data.store import read_table

    data = MergedDataset(work / "data" / "test", work / "data" / "test" / "masks.zarr")
    images, masks = data.read(np.arange(len(data)))
    table, cols = read_table(work / "data" / "test" / "table.zarr")
    return images, masks, table[:, [cols.index(c) for c in columns]], cols, table


def timed_samples(sample: Callable[[np.ndarray, np.ndarray], np.ndarray], images: np.ndarray, masks: np.ndarray,
                  n_lenses: int = 2500, batch: int = 250) -> tuple[np.ndarray, float]:
    """Draw with ``sample(images, masks) -> (B, S, P)`` for ``n_lenses`` lenses (the test images tiled), ``batch``
    lenses per call; returns (samples (n_lenses, S, P), wall seconds of the whole loop — embedding + sampling), after
    one untimed warm-up call on two lenses."""
    idx = np.arange(n_lenses) % len(images)
    sample(images[:2], masks[:2])  # warm-up outside the timer (numba's JIT of the spline kernel, lazy inits)
    out = []
    t0 = time.perf_counter()
    for i in range(0, n_lenses, batch):
        sel = idx[i:i + batch]
        out.append(np.asarray(sample(images[sel], masks[sel]), np.float32))
    seconds = time.perf_counter() - t0
    samples = np.concatenate(out)
    assert samples.shape[0] == n_lenses
    return samples, seconds


def ours_sampler(model_path: Path, n_samples: int, seed: int = 0) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """lensinfer's flow: whitening + embedding + sampling (``lensinfer.npe.sample_images``)."""
    import torch

    from lensinfer.npe import load_flow, sample_images

    model, whitening = load_flow(model_path)
    gen = torch.Generator().manual_seed(seed)

    def sample(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return sample_images(model, whitening, images, masks, n_samples, gen, batch_size=len(images))[0]

    return sample


def calibration(samples: np.ndarray, truths: np.ndarray, columns: list[str], short: dict[str, str],
                prefix: str = "") -> dict[str, Any]:
    """TARP max |ECP − α| (Lemos et al. 2023) and SBC uniformity p-values (χ² and KS, Talts et al. 2018) per
    parameter (``lensinfer.diagnostics``)."""
    from lensinfer.diagnostics import sbc_ranks, sbc_uniformity, tarp_test

    tarp = tarp_test(samples, truths, seed=0)
    ranks = sbc_ranks(samples, truths, seed=0)
    unif = sbc_uniformity(ranks, samples.shape[1], columns=columns, seed=0)
    out: dict[str, Any] = {f"{prefix}tarp_max_dev": round(float(tarp["max_dev"]), 4)}
    for c in columns:
        out[f"{prefix}sbc_chi2_p_{short[c]}"] = round(unif[c]["chi2_pvalue"], 4)
        out[f"{prefix}sbc_ks_p_{short[c]}"] = round(unif[c]["ks_pvalue"], 4)
    return out


def r2_score(estimate: np.ndarray, truth: np.ndarray) -> float:
    """1 − Σ(estimate − truth)² / Σ(truth − mean truth)²."""
    return float(1 - np.sum((estimate - truth) ** 2) / np.sum((truth - truth.mean()) ** 2))


def r2_bounds(theta_e: np.ndarray, sigma_v: np.ndarray, z_lens: np.ndarray, z_source: np.ndarray, *,
              sigma_v_range: tuple[float, float], z_lens_range: tuple[float, float],
              z_source_range: tuple[float, float], cosmology: str, n_prior: int = 4_000_000,
              n_bins: int = 4000, seed: int = 0) -> dict[str, float]:
    """Ceilings of R² for σ_v, z_l and z_s on these test lenses when the image tells θE **exactly** and nothing about
    the redshifts (as in seed 003's prior, where θE = 4π (σ_v/c)² D_ls/D_s and the light does not depend on z): the
    R² of the best point estimate for a squared error, the prior's conditional mean E[p | θE], evaluated at each test
    lens's true θE. The conditional mean is a Monte Carlo of the uniform prior (``n_prior`` draws; θE through
    ``lensinfer.physics.sis_theta_e`` on a 41 × 41 grid of the two redshifts, interpolated) in ``n_bins`` equal-count
    bins of θE. No estimator of σ_v whose images carry no redshift information can exceed ``sigma_v`` here."""
    from scipy.interpolate import RegularGridInterpolator

    from lensinfer import physics

    zl_g, zs_g = np.linspace(*z_lens_range, 41), np.linspace(*z_source_range, 41)
    ratio = np.array([[physics.sis_theta_e(1.0, a, b, cosmology) for b in zs_g] for a in zl_g])
    per_sigma2 = RegularGridInterpolator((zl_g, zs_g), ratio)
    rng = np.random.default_rng(seed)
    sv = rng.uniform(*sigma_v_range, n_prior)
    zl, zs = rng.uniform(*z_lens_range, n_prior), rng.uniform(*z_source_range, n_prior)
    te = sv ** 2 * per_sigma2(np.c_[zl, zs])
    edges = np.quantile(te, np.linspace(0.0, 1.0, n_bins + 1))
    b = np.clip(np.searchsorted(edges, te) - 1, 0, n_bins - 1)
    bt = np.clip(np.searchsorted(edges, theta_e) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    out = {}
    for name, draws, truth in (("sigma_v", sv, sigma_v), ("z_l", zl, z_lens), ("z_s", zs, z_source)):
        cond_mean = np.bincount(b, draws, n_bins) / count
        out[name] = r2_score(cond_mean[bt], truth)
    return out


def paired_r2_difference(ours: np.ndarray, theirs: np.ndarray, truths: np.ndarray, columns: list[str], *,
                         n_boot: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """95 % paired-bootstrap interval (resampling the test lenses, both estimators on the same resample) of
    R²(ours) − R²(theirs) per parameter, from point estimates (N, P) of each: whether a difference in R² on these
    test lenses exceeds what the choice of test lenses alone makes."""
    rng = np.random.default_rng(seed)
    n = len(truths)
    diffs = np.empty((n_boot, len(columns)))
    for k in range(n_boot):
        i = rng.integers(0, n, n)
        for j in range(len(columns)):
            diffs[k, j] = r2_score(ours[i, j], truths[i, j]) - r2_score(theirs[i, j], truths[i, j])
    lo, hi = np.percentile(diffs, [2.5, 97.5], axis=0)
    return {SHORT[c]: [round(float(lo[j]), 4), round(float(hi[j]), 4)] for j, c in enumerate(columns)}


def delve_metrics(samples: np.ndarray, truths: np.ndarray, columns: list[str], prefix: str = "") -> dict[str, Any]:
    """Seed 003's and seed 001's metrics per parameter from posterior samples (N, S, P) and truths (N, P):

    * ``r2`` — 1 − Σ(median − truth)² / Σ(truth − mean truth)² (posterior median as the point estimate);
      ``r2_mean`` — the same with the posterior mean (the point estimate that minimises the squared error R² scores);
    * ``mae`` — mean |median − truth| in physical units (km/s, arcsec, —, —, —, —);
    * ``mafr`` — mean |median − truth| / |truth|, the units of seed 003's "mean absolute residual": predicting the
      prior mean of z_l ~ U(0.2, 0.4) and z_s ~ U(0.6, 0.8) (R² ≈ 0, as theirs) gives exactly 0.177 and 0.072 in
      these units, their 0.173 and 0.074;
    * ``median_precision`` — median over lenses of 1 − σ/|median| with σ half the 16–84 % posterior width (seed 001's
      "precision", in %);
    * ``median_frac_dev`` — median of |median − truth| / |truth| (seed 001, in %).

    Precision and fractional deviation are meaningless for e1, e2 (centred on 0); they are reported as the keys ask.
    """
    q16, med, q84 = np.percentile(samples, [16, 50, 84], axis=1)
    mean = samples.mean(axis=1)
    out: dict[str, Any] = {}
    for j, c in enumerate(columns):
        s = SHORT[c]
        t, m = truths[:, j], med[:, j]
        resid = m - t
        out[f"{prefix}r2_{s}"] = round(r2_score(m, t), 5)
        out[f"{prefix}r2_mean_{s}"] = round(r2_score(mean[:, j], t), 5)
        frac = np.abs(resid) / np.abs(t)
        out[f"{prefix}mae_{s}"] = round(float(np.mean(np.abs(resid))), 5)
        out[f"{prefix}mafr_{s}"] = round(float(np.mean(frac)), 5)
        out[f"{prefix}median_precision_{s}"] = round(
            float(100 * np.median(1 - (q84[:, j] - q16[:, j]) / 2 / np.abs(m))), 2)
        out[f"{prefix}median_frac_dev_{s}"] = round(float(100 * np.median(frac)), 2)
    return out


def holismokes_metrics(samples: np.ndarray, truths: np.ndarray, columns: list[str], table: np.ndarray,
                       table_cols: list[str], cosmology: str, theta_e_min: float = 0.8) -> dict[str, Any]:
    """HOLISMOKES IV's table: 16/50/84 % of Δp = median − truth for x, y, θE, e_x, e_y over the test lenses; then,
    for θE > ``theta_e_min``, the offsets of the images of the posterior-median SIE from the true images (both with the
    true source position; ``lensinfer.derived.derived_quantities``, images matched by position) and the fractional
    time-delay difference (Δt_pred − Δt_true) / Δt_true of every image pair, as they computed them (their §6)."""
    from lensinfer.derived import derived_quantities

    med = np.median(samples, axis=1)
    out: dict[str, Any] = {}
    for j, c in enumerate(columns):
        p16, p50, p84 = np.percentile(med[:, j] - truths[:, j], [16, 50, 84])
        s = HOLI_SHORT[c]
        out.update({f"d{s}_p16": round(float(p16), 4), f"d{s}_p50": round(float(p50), 4),
                    f"d{s}_p84": round(float(p84), 4)})
    col = {c: i for i, c in enumerate(table_cols)}
    dx: list[float] = []
    dy: list[float] = []
    dt: list[float] = []
    n_sel = n_match = 0
    for i in range(len(med)):
        truth_row = table[i]
        if truth_row[col["lens_theta_E"]] <= theta_e_min:
            continue
        n_sel += 1
        src = (float(truth_row[col["source_center_x"]]), float(truth_row[col["source_center_y"]]))
        res = derived_quantities(med[i:i + 1], columns, z_lens=float(truth_row[col["z_lens"]]),
                                 z_source=float(truth_row[col["z_source"]]), cosmology=cosmology,
                                 source_position=src, fixed={"lens_gamma": 2.0}, store_samples=0,
                                 truth=truths[i])
        images, truth = res["images"], res.get("truth")
        if not images or truth is None or truth["n_images"] != len(images):
            continue  # predicted and true multiplicities differ: no pairing (reported as the match fraction)
        n_match += 1
        for k, im in enumerate(images):
            dx.append(im["x"]["median"] - truth["x"][k])
            dy.append(im["y"]["median"] - truth["y"][k])
            if k > 0 and truth["dt_days"][k] != 0:
                dt.append((im["dt_days"]["median"] - truth["dt_days"][k]) / truth["dt_days"][k])
    for name, v in (("img_dx", dx), ("img_dy", dy), ("dt_frac", dt)):
        p = np.percentile(v, [16, 50, 84]) if v else [float("nan")] * 3
        out.update({f"{name}_p16": round(float(p[0]), 4), f"{name}_p50": round(float(p[1]), 4),
                    f"{name}_p84": round(float(p[2]), 4)})
    out.update(n_theta_e_gt_08=n_sel, n_same_multiplicity=n_match, n_images_compared=len(dx), n_delays_compared=len(dt))
    return out


def sbi_available() -> tuple[bool, str]:
    try:
        import sbi  # noqa: F401
    except ImportError as exc:
        return False, f"sbi is not installed ({exc}); pip install 'sbi==0.27.0' (bench-only extra)"
    return True, ""


def run_sbi(train_x: np.ndarray, train_theta: np.ndarray, low: np.ndarray, high: np.ndarray, *, max_epochs: int,
            seed: int, quick: bool = False, log_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """The seed's own estimator with ``sbi`` 0.27 (its documented flexible interface: ``posterior_nn`` with an
    ``embedding_net``, ``NPE`` trained one round, ``build_posterior``): the seed's embedding (three 3×3 conv layers of
    8, 16, 32 channels with ReLU and 2×2 max-pooling, then dense 2048 → 32 → 16: 72 128 parameters, its torchsummary),
    sbi's ``CNNEmbedding``; NSF with 4 transforms of 128 hidden units; Adam lr 5e-4, batch 50, patience 20, 10 %
    validation fraction (the seed's settings; sbi's defaults otherwise: gradient clipping at 5). The prior is the box
    of the targets' ranges (sbi rejects samples outside it, its documented default). Images are z-scored with sbi's
    ``z_score_x="structured"`` (one mean and std over all pixels: its recommendation for images)."""
    import torch
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn
    from sbi.neural_nets.embedding_nets import CNNEmbedding
    from sbi.utils import BoxUniform

    torch.manual_seed(seed)
    c, h, w = train_x.shape[1:]
    embedding = CNNEmbedding(input_shape=(h, w), in_channels=c, out_channels_per_layer=[8, 16, 32], num_conv_layers=3,
                             num_linear_layers=2, num_linear_units=32, output_dim=16, kernel_size=3,
                             pool_kernel_size=2)
    n_embedding = sum(p.numel() for p in embedding.parameters())
    builder = posterior_nn(model="nsf", hidden_features=16 if quick else 128, num_transforms=2 if quick else 4,
                           embedding_net=embedding, z_score_x="structured")
    prior = BoxUniform(low=torch.as_tensor(low, dtype=torch.float32), high=torch.as_tensor(high, dtype=torch.float32))
    writer = None
    if log_dir is not None:  # sbi's TensorBoard log (by default ./sbi-logs in the working directory)
        from torch.utils.tensorboard.writer import SummaryWriter

        writer = SummaryWriter(log_dir=str(log_dir))
    inference = NPE(prior=prior, density_estimator=builder, show_progress_bars=False, summary_writer=writer)
    t0 = time.perf_counter()
    inference.append_simulations(torch.as_tensor(train_theta, dtype=torch.float32),
                                 torch.as_tensor(train_x, dtype=torch.float32))
    inference.train(training_batch_size=50, learning_rate=5e-4, validation_fraction=0.1, stop_after_epochs=20,
                    max_num_epochs=max_epochs)
    train_s = time.perf_counter() - t0
    posterior = inference.build_posterior()
    summary = inference.summary
    info = {"sbi_train_s": round(train_s), "sbi_epochs": int(summary["epochs_trained"][-1]),
            "sbi_best_val_log_prob": round(float(summary["best_validation_loss"][-1]), 4)
            if "best_validation_loss" in summary else None,
            "sbi_embedding_params": int(n_embedding)}
    return posterior, info


def sbi_sampler(posterior: Any, n_samples: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """sbi's batched sampling (``DirectPosterior.sample_batched``: embedding + flow + rejection outside the prior)."""
    import torch

    def sample(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(images, dtype=torch.float32)
        s = posterior.sample_batched((n_samples,), x=x, show_progress_bars=False)  # (S, B, P)
        return s.permute(1, 0, 2).numpy()

    return sample


def delve_table(res: dict[str, Any]) -> str:
    rows = ["seeds-delve — R² (posterior median), ours vs seed 003 (MAF / NSF) and sbi 0.27 (the seed's net, same "
            "images)",
            f"{'param':8} {'ours R²':>9} {'sbi R²':>9} {'seed MAF':>9} {'seed NSF':>9} | {'ours MAE':>9} "
            f"{'ours |Δ|/|t|':>12} {'seed NSF':>9} | {'prec %':>7} {'s001':>6} {'fdev %':>7} {'s001':>6} {'R² s001':>7}"]
    for s in ("sigma_v", "theta_E", "e1", "e2", "z_l", "z_s"):
        s1 = SEED001.get(s, ("—", "—", "—"))
        rows.append(f"{s:8} {res[f'r2_{s}']:9.4f} {res.get(f'sbi_r2_{s}', float('nan')):9.4f} "
                    f"{SEED003_R2[s][0]:9.3f} {SEED003_R2[s][1]:9.3f} | {res[f'mae_{s}']:9.4f} {res[f'mafr_{s}']:12.4f} "
                    f"{SEED003_MAR[s]:9.3f} | {res[f'median_precision_{s}']:7.1f} {s1[0]!s:>6} "
                    f"{res[f'median_frac_dev_{s}']:7.1f} {s1[1]!s:>6} {s1[2]!s:>7}")
    rows.append("R² with the posterior mean: " + ", ".join(
        f"{s} ours {res.get(f'r2_mean_{s}', float('nan')):.4f} / sbi {res.get(f'sbi_r2_mean_{s}', float('nan')):.4f}"
        for s in ("sigma_v", "theta_E", "e1", "e2", "z_l", "z_s")))
    if "r2_bound_sigma_v" in res:
        rows.append(f"ceilings of R² with θE exact and no redshift information (these test lenses): σ_v "
                    f"{res['r2_bound_sigma_v']}, z_l {res['r2_bound_z_l']}, z_s {res['r2_bound_z_s']}")
    if "r2_minus_sbi_ci95" in res:
        rows.append("R²(ours) − R²(sbi), paired bootstrap 95 % (medians): " + ", ".join(
            f"{s} [{lo:+.3f}, {hi:+.3f}]" for s, (lo, hi) in res["r2_minus_sbi_ci95"].items()))
    timing = "side by side, median of " + str(res["timing_repeats"]) if res.get("timing_repeats") else "single run"
    rows.append(f"TARP max|ECP−α|: ours {res['tarp_max_dev']}, sbi {res.get('sbi_tarp_max_dev')}; 2 500 lenses × "
                f"5 000 samples (measured, {timing}): ours {res['seconds_2500_lenses_5000_samples']} s, sbi "
                f"{res.get('sbi_seconds_2500_lenses_5000_samples')} s (sbi/ours {res.get('sbi_over_ours_sampling')}), "
                f"seed 001 < 120 s; train: ours {res['train_s']} s, "
                f"sbi {res.get('sbi_train_s')} s (seed: NSF 123 epochs ≈ 15 min)")
    rows.append("MAE in physical units (km/s, arcsec, —); |Δ|/|t| = mean absolute fractional residual, the units of "
                "seed 003's column")
    return "\n".join(rows)


def holismokes_table(res: dict[str, Any]) -> str:
    rows = ["holismokes — median and 16/84 % of (posterior median − truth), ours vs HOLISMOKES IV (uniform θE)",
            f"{'Δ':8} {'ours':>26} {'theirs':>22} {'width ratio':>12}"]
    for s in ("x", "y", "theta_E", "e_x", "e_y", "img_dx", "img_dy", "dt_frac"):
        k = s if s.startswith(("img", "dt")) else f"d{s}"
        p16, p50, p84 = res[f"{k}_p16"], res[f"{k}_p50"], res[f"{k}_p84"]
        t50, tm, tp = HOLI[s]
        ours = f"{p50:+.3f} +{p84 - p50:.3f} −{p50 - p16:.3f}"
        rows.append(f"{s:8} {ours:>26} {f'{t50:+.2f} +{tp:.2f} −{tm:.2f}':>22} {(p84 - p16) / (tp + tm):12.2f}")
    rows.append(f"image offsets and Δt for θE > 0.8″: {res['n_same_multiplicity']} of {res['n_theta_e_gt_08']} lenses "
                f"with the true multiplicity; TARP max|ECP−α| {res['tarp_max_dev']}; 2 500 × 5 000 samples (measured) "
                f"{res['seconds_2500_lenses_5000_samples']} s")
    return "\n".join(rows)


def run(args: Any, *, flow: dict[str, Any], train: dict[str, Any], validated: Callable[[dict, Path], dict],
        full_masks: Callable[..., None]) -> dict[str, Any]:
    """One anchor setting end to end; prints the side-by-side table and returns the JSON result."""
    from lensinfer.data.store import read_table

    t_start = time.perf_counter()
    setting = args.setting
    if args.peer_only and setting != "seeds-delve":
        raise ValueError("--peer-only: only the seeds-delve setting has a peer (sbi)")
    n_fit = args.n_train - args.n_val  # the seed's 90 % "train" = fit + 10 % validation (its validation fraction)
    shard = args.shard_size
    cfg = setting_config(setting, n_train=n_fit, n_val=args.n_val, n_test=args.n_test, shard_size=shard,
                         max_epochs=args.max_epochs, flow=flow, train=train,
                         light_traces_mass=args.light_traces_mass)
    work: Path = args.work
    check_workdir(work, cfg)
    cfg = validated(cfg, work / "config.yaml")
    sim_cpu = simulate_all(cfg, work, args.procs, full_masks)
    t_sim = time.perf_counter() - t_start
    print(f"[{setting}] simulation: {t_sim:.0f} s wall, {sim_cpu:.0f} CPU s", flush=True)

    data, out = work / "data", work / "model"
    full = args.timing_lenses == 2500 and args.n_samples == 5000  # --quick times fewer: no 2 500 × 5 000 figure
    result: dict[str, Any] = {}
    samplers: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}
    if not args.peer_only:
        res, samplers["ours"] = ours(args, cfg, data, out, full)
        result.update(res)
        print(f"[{setting}] ours (before the peer): {dump(result)}", flush=True)
    if setting == "seeds-delve":
        ok, why = sbi_available()
        if not ok or args.no_sbi:
            reason = why or "--no-sbi"
            print(f"[{setting}] sbi peer skipped: {reason}", flush=True)
            result["sbi_skipped"] = reason
        else:
            res, sbi = peer(args, cfg, data, work / "sbi", full)
            result.update(res)
            if sbi is not None:
                samplers["sbi"] = sbi
    if not args.peer_only and args.timing_repeats > 0:
        result.update(side_by_side(samplers, args, full))
    if setting == "seeds-delve" and not args.peer_only:
        result.update(delve_context(cfg, work, quick=bool(args.quick)))
    n_test = len(read_table(data / "test" / "table.zarr")[0])
    result.update({"n_train": n_fit, "n_val": args.n_val, "n_test": n_test, "bands": [b["name"] for b in
                   cfg["instrument"]["bands"]], "pixel_scale": cfg["instrument"]["pixel_scale"],
                   "num_pix": cfg["instrument"]["num_pix"], "simulate_s": round(t_sim),
                   "quick": bool(args.quick), "total_s": round(time.perf_counter() - t_start),
                   "light_traces_mass": bool(args.light_traces_mass), "setting": setting})
    if not args.peer_only:
        print(delve_table(result) if setting == "seeds-delve" else holismokes_table(result), flush=True)
    return result


def train_bench_flow(cfg: dict[str, Any], data: Path, out: Path, threads: int,
                     seed: int | None = None) -> dict[str, Any]:
    """The project's training loop on a bench's simulated ``data`` (train/val folders with masks and the train
    set's whitening), writing model, history and per-epoch checkpoints under ``out`` (resumes from them). ``seed``:
    the training seed (initialisation, batch order, augmentation), by default the config's — the simulations' seed
    stays the config's either way, so several training seeds share one data set."""
    from lensinfer.train import train_flow_posterior

    out.mkdir(parents=True, exist_ok=True)
    return train_flow_posterior(
        train_dir=data / "train", train_masks=data / "train" / "masks.zarr", val_dir=data / "val",
        val_masks=data / "val" / "masks.zarr", whitening=data / "train" / "stats.json", flow_cfg=cfg["flow"],
        train_cfg=cfg["train"], seed=cfg["seed"] if seed is None else seed, out_model=out / "model.pt", out_history=out / "history.csv",
        checkpoint_dir=out / "checkpoints", threads=threads)


def ours(args: Any, cfg: dict[str, Any], data: Path, out: Path,
         full: bool) -> tuple[dict[str, Any], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Train lensinfer's flow with the project's loop (resumes from its per-epoch checkpoint), then time 2 500 ×
    5 000 samples and compute the setting's metrics on the test lenses."""
    import torch

    from lensinfer.train import read_history

    setting = args.setting
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summary = train_bench_flow(cfg, data, out, args.threads, seed=args.train_seed)
    t_wall = time.perf_counter() - t0
    # training time = the epochs' own seconds (history.csv), right also when this run resumed from a checkpoint
    t_train = sum(row["seconds"] for row in read_history(out / "history.csv"))
    print(f"[{setting}] training (lensinfer): best val NLL {summary['best_val_loss']:.3f} at epoch "
          f"{summary['best_epoch']} ({summary['epochs']} epochs, {t_train:.0f} s; {t_wall:.0f} s in this run)",
          flush=True)
    targets = list(cfg["flow"]["targets"])
    images, masks, truths, table_cols, table = _test_set(args.work, targets)
    n_test = len(images)
    torch.set_num_threads(args.sample_threads)
    sampler = ours_sampler(out / "model.pt", args.n_samples)
    samples, seconds = timed_samples(sampler, images, masks, n_lenses=args.timing_lenses)
    samples = samples[:n_test].astype(np.float64)
    save_point_estimates(out, samples)
    print(f"[{setting}] ours: {args.timing_lenses} lenses × {args.n_samples} samples in {seconds:.1f} s", flush=True)
    result: dict[str, Any] = {}
    if setting == "seeds-delve":
        result.update(delve_metrics(samples, truths, targets))
    else:
        result.update(holismokes_metrics(samples, truths, targets, table, table_cols, cfg["cosmology"]))
    result.update(calibration(samples, truths, targets, SHORT if setting == "seeds-delve" else HOLI_SHORT))
    result.update({"seconds_2500_lenses_5000_samples": round(seconds, 1) if full else None,
                   "sampling_extrapolated": False, "sampling_s": round(seconds, 2),
                   "timing_lenses": args.timing_lenses, "timing_samples": args.n_samples,
                   "train_s": round(t_train), "train_wall_s_this_run": round(t_wall), "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
                   "best_val_nll": round(summary["best_val_loss"], 4),
                   "train_seed": cfg["seed"] if args.train_seed is None else args.train_seed})
    return result, sampler


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def peer(args: Any, cfg: dict[str, Any], data: Path, cache: Path,
         full: bool) -> tuple[dict[str, Any], Callable[[np.ndarray, np.ndarray], np.ndarray] | None]:
    """The sbi peer on the very same training images (fit + validation sets) and test lenses, timed with the same
    timer. Its result is kept in ``<workdir>/sbi/result.json`` (reused by a later run on the same workdir, e.g. the
    full run after ``--peer-only``); while another process computes it (``sbi/running`` holds its pid), wait."""
    import os

    import torch

    setting = args.setting
    cache.mkdir(exist_ok=True)
    done, lock = cache / "result.json", cache / "running"
    key = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test, "quick": bool(args.quick),
           "sbi_max_epochs": args.sbi_max_epochs, "timing_lenses": args.timing_lenses, "n_samples": args.n_samples}
    while lock.exists() and not done.exists() and _alive(int(lock.read_text() or 0)):
        time.sleep(10)
    saved = cache / "posterior.pkl"  # the trained sbi posterior (sbi's documented way to keep one: pickle)
    if done.exists():
        cached = json.loads(done.read_text())
        if cached.get("key") == key:
            print(f"[{setting}] sbi peer: result of an earlier run on this workdir ({done})", flush=True)
            posterior = _load_pickle(saved) if saved.exists() else None
            if posterior is None:
                return cached["result"], None
            sampler = sbi_sampler(posterior, args.n_samples)
            if not (cache / "test_point_estimates.npz").exists():  # a cache from before they were kept
                import torch

                images, masks, _, _, _ = _test_set(args.work, [])
                torch.set_num_threads(args.sample_threads)
                save_point_estimates(cache, timed_samples(sampler, images, masks, n_lenses=len(images))[0])
            return cached["result"], sampler
    lock.write_text(str(os.getpid()))
    try:
        from lensinfer import physics
        from lensinfer.data.loader import MergedDataset
        from lensinfer.data.store import read_table

        targets = list(cfg["flow"]["targets"])
        xs, ths = [], []
        for name in ("train", "val"):  # the very same 9 000 images we fit (8 100) and validated on (900)
            ds = MergedDataset(data / name, data / name / "masks.zarr")
            xs.append(ds.read(np.arange(len(ds)))[0])
            tab, cols = read_table(data / name / "table.zarr")
            ths.append(tab[:, [cols.index(c) for c in targets]])
        train_x, train_theta = np.concatenate(xs), np.concatenate(ths)
        del xs
        low = np.array([150.0, physics.sis_theta_e(150.0, 0.4, 0.6), -0.4, -0.4, 0.2, 0.6])
        high = np.array([400.0, physics.sis_theta_e(400.0, 0.2, 0.8), 0.4, 0.4, 0.4, 0.8])
        torch.set_num_threads(args.threads)
        posterior, info = run_sbi(train_x, train_theta, low, high, max_epochs=args.sbi_max_epochs,
                                  seed=int(cfg["seed"]), quick=args.quick, log_dir=cache / "logs")
        del train_x
        print(f"[{setting}] training (sbi): {info}", flush=True)
        tmp = saved.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(posterior, fh)
        tmp.rename(saved)
        images, masks, truths, _, _ = _test_set(args.work, targets)
        n_test = len(images)
        torch.set_num_threads(args.sample_threads)
        s_sbi, sec_sbi = timed_samples(sbi_sampler(posterior, args.n_samples), images, masks,
                                       n_lenses=args.timing_lenses)
        s_sbi = s_sbi[:n_test].astype(np.float64)
        save_point_estimates(cache, s_sbi)
        print(f"[{setting}] sbi: {args.timing_lenses} lenses × {args.n_samples} samples in {sec_sbi:.1f} s",
              flush=True)
        result: dict[str, Any] = {}
        result.update(delve_metrics(s_sbi, truths, targets, prefix="sbi_"))
        result.update(calibration(s_sbi, truths, targets, SHORT, prefix="sbi_"))
        result.update(info)
        result["sbi_seconds_2500_lenses_5000_samples"] = round(sec_sbi, 1) if full else None
        result["sbi_sampling_s"] = round(sec_sbi, 2)
        done.write_text(json.dumps({"key": key, "result": result}))
        print(f"[{setting}] sbi peer: {dump(result)}", flush=True)
        return result, sbi_sampler(posterior, args.n_samples)
    finally:
        lock.unlink(missing_ok=True)


def _load_pickle(path: Path) -> Any:
    """The sbi posterior this bench pickled itself in its own workdir (never a file from elsewhere)."""
    with open(path, "rb") as fh:
        return pickle.load(fh)


def save_point_estimates(folder: Path, samples: np.ndarray) -> None:
    """Posterior medians and means (N, P) of the test lenses' samples (N, S, P), ``test_point_estimates.npz`` in
    ``folder``: what :func:`delve_context` compares between the estimators."""
    np.savez(folder / "test_point_estimates.npz", median=np.median(samples, axis=1), mean=samples.mean(axis=1))


def delve_context(cfg: dict[str, Any], work: Path, quick: bool = False) -> dict[str, Any]:
    """What the seeds-delve R² are measured against, on the same test lenses: ``r2_bound_<sigma_v|z_l|z_s>``, the
    ceilings of :func:`r2_bounds` (θE known exactly, no redshift information in the images); and, when both
    estimators' point estimates are in the workdir, ``r2_minus_sbi_ci95`` / ``r2_mean_minus_sbi_ci95``: the paired
    bootstrap 95 % interval of R²(ours) − R²(sbi) per parameter (posterior medians / means), and sbi's R² of the
    posterior mean (``sbi_r2_mean_<param>``)."""
    _, _, truths, _, _ = _test_set(work, SEEDS_DELVE_TARGETS)
    col = {c: truths[:, j] for j, c in enumerate(SEEDS_DELVE_TARGETS)}
    lens = cfg["lens"]
    bounds = r2_bounds(col["lens_theta_E"], col["lens_sigma_v"], col["z_lens"], col["z_source"],
                       sigma_v_range=tuple(lens["main"]["sigma_v"]["uniform"]),
                       z_lens_range=tuple(lens["z_lens"]["uniform"]), z_source_range=tuple(lens["z_source"]["uniform"]),
                       cosmology=cfg["cosmology"], n_prior=200_000 if quick else 4_000_000, n_bins=200 if quick else 4000)
    out: dict[str, Any] = {f"r2_bound_{k}": round(v, 4) for k, v in bounds.items()}
    ours_pe, sbi_pe = work / "model" / "test_point_estimates.npz", work / "sbi" / "test_point_estimates.npz"
    if ours_pe.exists() and sbi_pe.exists():
        a, b = np.load(ours_pe), np.load(sbi_pe)
        for j, c in enumerate(SEEDS_DELVE_TARGETS):  # sbi's posterior-mean R² (also for a cache from before)
            out[f"sbi_r2_mean_{SHORT[c]}"] = round(r2_score(b["mean"][:, j], truths[:, j]), 5)
        for key, name in (("median", "r2_minus_sbi_ci95"), ("mean", "r2_mean_minus_sbi_ci95")):
            out[name] = paired_r2_difference(a[key], b[key], truths, SEEDS_DELVE_TARGETS,
                                             n_boot=200 if quick else 2000)
    return out


def side_by_side(samplers: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]], args: Any,
                 full: bool) -> dict[str, Any]:
    """The sampling timer run side by side: ``args.timing_repeats`` rounds, each timing every estimator once on the
    same ``args.timing_lenses`` test lenses × ``args.n_samples`` samples (embedding + sampling, ``timed_samples``) on
    ``args.sample_threads`` threads, the order alternating between rounds; the medians replace the single timings of
    training time (``seconds_2500_lenses_5000_samples``, ``sbi_…``), the runs are listed, and with both estimators
    ``sbi_over_ours_sampling`` is the ratio of the medians. The first timings (taken right after each training, under
    whatever else ran then) stay as ``sampling_s`` / ``sbi_sampling_s``."""
    import torch

    images, masks, _, _, _ = _test_set(args.work, [])
    torch.set_num_threads(args.sample_threads)
    names = list(samplers)
    runs: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.timing_repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            _, sec = timed_samples(samplers[name], images, masks, n_lenses=args.timing_lenses)
            runs[name].append(round(sec, 4))  # 4 decimals: a --quick timing of milliseconds never rounds to 0
            print(f"[{args.setting}] side by side, round {r + 1}: {name} {sec:.1f} s", flush=True)
    out: dict[str, Any] = {"timing_repeats": args.timing_repeats, "sampling_side_by_side": len(names) > 1}
    for name in names:
        prefix = "" if name == "ours" else f"{name}_"
        med = float(np.median(runs[name]))
        out[f"{prefix}sampling_runs_s"] = runs[name]
        out[f"{prefix}sampling_median_s"] = round(med, 4)
        out[f"{prefix}seconds_2500_lenses_5000_samples"] = round(med, 1) if full else None
    if len(names) > 1:
        out["sbi_over_ours_sampling"] = round(float(np.median(runs["sbi"]) / np.median(runs["ours"])), 2)
    return out


def dump(result: dict[str, Any]) -> str:
    """The JSON line (NaN → null)."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()})
