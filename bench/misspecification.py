#!/usr/bin/env python3
"""Flag rates of the misspecification check on mock observations: matched vs perturbed (issue 17, item 1).

Uses the demo DAG's outputs (run ``snakemake -c2`` first): the trained estimators ``results/models/{nre,npe}/
model.pt`` and the simulated reference datasets of the ``misspecification`` rule (the calibration's coverage and
KDE datasets, ``results/data/{test,val}``). ``--n`` mock frames per condition are written by the DAG's own mock
writer and preprocessing (:func:`lensinfer.misspecification.preprocessed_mocks`):

* ``matched`` — the training population (EPL subhalos, γ ~ U(1.1, 2.9)) and the training instrument;
* ``demo_mocks_nfw`` — the demo's own mock observations (``observations.mock.population``: NFW subhalos);
* ``psf`` (FWHM × 2), ``pixel_scale`` (a camera with half the pixel scale and the same PSF in pixels, resampled by
  the preprocessing), ``noise`` (exposure ÷ 4), ``source`` (COSMOS-format galaxy stamps instead of Sérsic sources:
  by default six clumpy, noisy star-forming galaxies made here (``tests/cosmos_fixture.py``, ``clumpy=True``);
  ``--cosmos-dir`` takes a real COSMOS-23.5-format catalog instead, e.g. the full catalog the pipeline downloads;
  its galaxies must pass the reference cuts (brighter than mag 20, flux radius ≥ 10 px…, ``REFERENCE_CUTS`` of
  ``lensinfer.simulate.sources``) — none of paltas' 10-galaxy test catalog does).

For each estimator and condition: the share flagged (any check), by the embedding p-value alone, by the
image-statistics p-value alone, by the peak-count p-value alone (each against alpha; the flag uses their Bonferroni
combination) with the median peak count, by the noise ratio alone, by the input pixel scale alone, the median
p-value and the median noise ratio, at the config's ``inference.misspecification`` settings (alpha 0.01, noise ratio
band [0.8, 1.25], pixel scale ±5 %, peaks above 5 σ after a filter of the simulated PSF's width).

    python bench/misspecification.py [--config config/config.yaml] [--results results] [--n 30]
        [--conditions matched,source] [--cosmos-dir DIR]

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--results", default="results")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--conditions", default=None,
                    help="comma-separated subset of matched,psf,pixel_scale,noise,source,demo_mocks_nfw (default all)")
    ap.add_argument("--cosmos-dir", default=None,
                    help="a COSMOS-23.5-format catalog for the 'source' condition (default: clumpy fixture made here)")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from lensinfer.config import load_config
    from lensinfer.data.loader import MergedDataset
    from lensinfer.misspecification import (DEFAULTS, PERTURBATIONS, embed_dataset, fit_reference, flag_rates,
                                            peak_smoothing, simulation_sigma, write_cosmos_test_split)
    from lensinfer.train import load_estimator
    from tests.cosmos_fixture import make_cosmos_fixture

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    res = Path(args.results)
    mcfg = cfg["inference"]["misspecification"]
    datasets = sorted({cfg["calibrate"]["coverage_dataset"], cfg["calibrate"]["kde_dataset"]})
    per = int(mcfg["max_reference"]) // len(datasets)
    peak_cfg = (peak_smoothing({**DEFAULTS, **mcfg}, cfg["instrument"]), float(mcfg["peak_threshold"]))
    estimators, sigma, bkg = {}, None, None
    for est in ("nre", "npe"):
        path = res / "models" / est / "model.pt"
        if not path.exists():
            continue
        _, model, whitening = load_estimator(path)
        model = model.fused()
        feats, bkgs, stats, counts = [], [], [], []
        for ds in datasets:
            f, b, st, c = embed_dataset(model, whitening, res / "data" / ds, res / "data" / ds / "masks.zarr",
                                        max_images=per, border=int(mcfg["border"]), statistics=True, peaks=peak_cfg)
            feats.append(f)
            bkgs.append(b)
            stats.append(st)
            counts.append(c)
            sigma = simulation_sigma(MergedDataset(res / "data" / ds, res / "data" / ds / "masks.zarr").shard_attrs())
        # the DAG's check: embedding, image statistics and peak count, Bonferroni-combined
        estimators[est] = (model, whitening, fit_reference(np.concatenate(feats)), fit_reference(np.concatenate(stats)),
                           np.concatenate(counts))
        bkg = np.concatenate(bkgs)
    if not estimators:
        raise SystemExit(f"no trained model under {res}/models: run the demo DAG first")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="misspec_bench_"))
    wanted = args.conditions.split(",") if args.conditions else list(PERTURBATIONS) + ["demo_mocks_nfw"]
    unknown = set(wanted) - set(PERTURBATIONS) - {"demo_mocks_nfw"}
    if unknown:
        raise SystemExit(f"--conditions: unknown {sorted(unknown)}")
    if args.cosmos_dir:
        from astropy.io import fits

        cosmos = Path(args.cosmos_dir)
        n_gal = len(fits.getdata(cosmos / "real_galaxy_catalog_23.5.fits", 1))
    else:
        cosmos, n_gal = make_cosmos_fixture(work / "cosmos", n=6, clumpy=True), 6
    rates = flag_rates(estimators=estimators, sim_sigma=float(sigma), sim_backgrounds=bkg, config=cfg, n=args.n,
                       workdir=work / "mocks", cfg=mcfg, conditions=[c for c in PERTURBATIONS if c in wanted],
                       populations=({"demo_mocks_nfw": cfg["observations"]["mock"]["population"]}
                                    if "demo_mocks_nfw" in wanted else None), cosmos_dir=cosmos,
                       split_lists=write_cosmos_test_split(work / "splits", n_gal))
    for est, table in rates.items():
        for label, r in table.items():
            print(f"{est} {label:15s} flagged {r['flag_rate']:.2f} (embedding alone {r['flag_rate_embedding']:.2f}, "
                  f"image statistics alone {r['flag_rate_statistics']:.2f}, peak count alone {r['flag_rate_peaks']:.2f}"
                  f" (median {r['median_peak_count']:.0f}), noise {r['flag_rate_noise']:.2f}, "
                  f"pixel scale {r['flag_rate_pixel_scale']:.2f})  "
                  f"median p {r['median_p_value']:.3g}  "
                  f"median noise ratio {r['median_noise_ratio']:.3f}")
    out = {"n_per_condition": args.n, "alpha": mcfg["alpha"], "noise_ratio_range": mcfg["noise_ratio_range"],
           "peak_smoothing_pixels": peak_cfg[0], "peak_threshold": peak_cfg[1],
           "pixel_scale_tolerance": mcfg.get("pixel_scale_tolerance"),
           "source_catalog": str(args.cosmos_dir) if args.cosmos_dir else "clumpy fixture (tests/cosmos_fixture.py)",
           "rates": rates, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
