"""The benchmark scripts run in ``--quick`` mode and end with their JSON line (no timing assertions)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_loader_quick():
    out = _run("loader.py")
    assert out["images_per_s"] > 0 and out["naive_images_per_s"] > 0 and out["noise_images_per_s"] > 0
    assert 0 < out["bytes_per_image"] < 2 * 4 * 100 * 100  # float32 images + bool masks, at most raw size
    # the standard baseline, timed in the same run: map-style zarr Dataset + DataLoader(shuffle=True, num_workers=2)
    assert out["dataloader_images_per_s"] > 0 and out["dataloader_workers"] == 2 and out["statistic"] == "median"
    assert out["speedup_vs_dataloader"] == pytest.approx(out["images_per_s"] / out["dataloader_images_per_s"], rel=0.01)


def test_bench_infer_quick():
    out = _run("infer.py")
    assert out["ms_per_lens"] > 0 and out["naive_ms_per_lens"] > 0 and out["speedup"] > 0
    assert out["max_abs_diff"] < 1e-4 and out["eager_max_abs_diff"] < 1e-4  # same curves both ways


@pytest.mark.slow
def test_bench_science_quick():
    out = _run("science_nre.py")
    for key in ("val_bce", "coverage68_n1", "coverage95_n1", "coverage68_n13", "coverage95_n13", "bias_n13"):
        assert math.isfinite(out[key]), key
    assert 0 <= out["coverage68_n1"] <= out["coverage95_n1"] <= 1


def test_bench_npe_sampling_quick():
    out = _run("npe_sampling.py")
    assert {"seconds_nsf_64x2_8bins", "seconds_nsf_128x2_8bins", "seconds_maf_128x2"} <= set(out) and all(
        out[k] > 0 for k in out if k.startswith("seconds_"))
    from lensinfer.models import spline

    if spline.available():  # the fused kernel and zuko's splines timed side by side
        assert out["speedup_fused_nsf_64x2_8bins"] > 0 and "seconds_nsf_64x2_8bins_zuko" in out


def test_bench_train_step_quick():
    out = _run("train_step.py")
    for kind in ("npe", "nre"):
        assert out[f"ms_per_step_{kind}_defaults"] > 0 and out[f"ms_per_step_{kind}_lensinfer"] > 0
        assert out[f"loss_diff_{kind}"] < 1e-4  # the same step both ways: equal weights, batch and loss


def _bench_simulate():
    """bench/simulate.py imported in this process. Its import pins OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS to 1 in
    ``os.environ`` (right for a timing script); the environment is restored afterwards, or a later test in the same
    worker that reloads numba's config (lenstronomy does) fails: "Cannot set NUMBA_NUM_THREADS … once the threads
    have been launched"."""
    import importlib.util

    saved = dict(os.environ)
    try:
        spec = importlib.util.spec_from_file_location("bench_simulate", ROOT / "bench" / "simulate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


def test_bench_caustics_path_matches_lenstronomy_deflections():
    """The caustics column (issue 19): its lens system reproduces lenstronomy's deflections on the bench scene and
    its simulator renders a finite 100×100 image (no timing)."""
    pytest.importorskip("caustics", reason="caustics (bench-only dependency, `make bench`) is not installed")
    import numpy as np

    sim = _bench_simulate()
    psf = sim.psf_kernel("gaussian")
    scene, info = sim.draw_scene(np.random.default_rng(1), 12, 2.2, psf)
    scene = sim.with_sheet(scene, -0.003)
    cz = sim.Caustics(psf, chunk=5)
    assert cz.max_deflection_difference(scene, info["n_macro"]) < sim.CAUSTICS_DALPHA_TOL
    image = cz.image(scene, info["n_macro"])
    assert image.shape == (100, 100) and np.isfinite(image).all() and image.max() > 0


@pytest.mark.slow
def test_bench_simulate_quick_with_caustics_column():
    pytest.importorskip("caustics", reason="caustics (bench-only dependency, `make bench`) is not installed")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "simulate.py"), "--quick", "--n-sub", "0", "20",
                           "--sim-images", "0", "--caustics-chunk", "10"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["caustics"] and out["ms_caustics_20"] > 0 and out["caustics_deflections_agree_20"]
    peers = [out["ms_reference_20"], out["ms_lenstronomy_numba_20"], out["ms_caustics_20"]]
    assert out["speedup_vs_best_peer_20"] == pytest.approx(min(peers) / out["ms_ours_20"], rel=1e-9)


def test_bench_simulate_without_caustics_reports_the_lenstronomy_peers(monkeypatch):
    """With caustics absent (or --no-caustics) the column is skipped and the best peer is a lenstronomy path."""
    sim = _bench_simulate()
    monkeypatch.setitem(sys.modules, "caustics", None)  # import caustics → ImportError
    assert sim.caustics_available() is False


@pytest.mark.slow
def test_bench_memory_quick():
    """Four of the ten stages (each one runs in its own interpreter, twice): the smoke test of the bench's
    plumbing; the full bench measures them all."""
    stages = ("merge", "mask", "curves_npe", "train_nre")
    out = _run("memory.py", "--stages", ",".join(stages))
    for stage in stages:
        assert out[f"{stage}_peak_mb"] > 0 and out[f"{stage}_peak_mb_10x"] > 0, stage
    assert out["max_peak_ratio_10x"] == max(out[f"{s}_peak_ratio_10x"] for s in stages)


def _run_args(script: str, *args: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SEEDS_DELVE_PARAMS = ("sigma_v", "theta_E", "e1", "e2", "z_l", "z_s")


def _sbi_installed() -> bool:
    try:
        import sbi  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_bench_npe_seeds_delve_quick():
    """``--setting seeds-delve --quick --no-sbi``: the anchor's table keys, finite, with a measured sampling time."""
    out = _run_args("science_npe.py", "--setting", "seeds-delve", "--quick", "--no-sbi")
    assert out["setting"] == "seeds-delve" and out["bands"] == ["g", "r", "i"]
    assert out["pixel_scale"] == 0.263 and out["num_pix"] == 64
    for p in SEEDS_DELVE_PARAMS:
        for key in ("r2", "mae", "median_precision", "median_frac_dev"):
            assert math.isfinite(out[f"{key}_{p}"]), f"{key}_{p}"
        assert out[f"mae_{p}"] >= 0 and out[f"r2_{p}"] <= 1
        assert 0 <= out[f"sbc_chi2_p_{p}"] <= 1 and 0 <= out[f"sbc_ks_p_{p}"] <= 1
    assert 0 <= out["tarp_max_dev"] <= 1
    assert out["sampling_extrapolated"] is False and out["sampling_s"] > 0
    assert out["seconds_2500_lenses_5000_samples"] is None  # quick: fewer lenses timed, no 2 500 × 5 000 figure
    assert out["train_s"] >= 0 and "--no-sbi" in out["sbi_skipped"]
    # the sampling timer repeated (default 3 rounds), the median reported; no peer, so nothing side by side
    assert out["timing_repeats"] == 3 and len(out["sampling_runs_s"]) == 3 and out["sampling_side_by_side"] is False
    assert out["sampling_median_s"] == sorted(out["sampling_runs_s"])[1] > 0
    assert "sbi_sampling_runs_s" not in out and "r2_minus_sbi_ci95" not in out
    for p in SEEDS_DELVE_PARAMS:
        assert math.isfinite(out[f"r2_mean_{p}"]) and out[f"r2_mean_{p}"] <= 1
    for p in ("sigma_v", "z_l", "z_s"):  # the ceilings (θE exact, no redshift information) on the same test lenses
        assert math.isfinite(out[f"r2_bound_{p}"]) and out[f"r2_bound_{p}"] <= 1


@pytest.mark.slow
def test_bench_npe_seeds_delve_sbi_quick(tmp_path):
    """The sbi peer path (the seed's net with sbi 0.27) on the same images, timed with the same timer: first alone
    (``--peer-only``), then the full run on the same workdir reuses that result beside ours."""
    if not _sbi_installed():
        pytest.skip("sbi is not installed (bench-only extra: pip install 'sbi==0.27.0')")
    args = ("--setting", "seeds-delve", "--quick", "--threads", "1", "--workdir", str(tmp_path))
    alone = _run_args("science_npe.py", *args, "--peer-only")
    assert "r2_e1" not in alone and alone["setting"] == "seeds-delve"
    (tmp_path / "sbi" / "test_point_estimates.npz").unlink()  # as a cache from before they were kept: remade
    out = _run_args("science_npe.py", *args)
    for p in SEEDS_DELVE_PARAMS:
        assert math.isfinite(out[f"sbi_r2_{p}"]) and math.isfinite(out[f"r2_{p}"])
        assert out[f"sbi_r2_{p}"] == alone[f"sbi_r2_{p}"]
    assert 0 <= out["sbi_tarp_max_dev"] <= 1 and out["sbi_sampling_s"] > 0 and out["sbi_train_s"] >= 0
    assert out["sbi_embedding_params"] == 72128  # the seed's embedding: its torchsummary total
    assert out["sbi_seconds_2500_lenses_5000_samples"] is None
    # the second run reloaded the pickled sbi posterior and timed both samplers side by side, alternately
    assert (tmp_path / "sbi" / "posterior.pkl").exists() and out["sampling_side_by_side"] is True
    assert len(out["sampling_runs_s"]) == len(out["sbi_sampling_runs_s"]) == out["timing_repeats"] == 3
    assert out["sbi_over_ours_sampling"] == pytest.approx(
        sorted(out["sbi_sampling_runs_s"])[1] / sorted(out["sampling_runs_s"])[1], rel=0.02)
    for key in ("r2_minus_sbi_ci95", "r2_mean_minus_sbi_ci95"):  # paired bootstrap on the same test lenses
        assert set(out[key]) == set(SEEDS_DELVE_PARAMS)
        assert all(lo <= hi for lo, hi in out[key].values())


@pytest.mark.slow
def test_bench_npe_holismokes_quick():
    out = _run_args("science_npe.py", "--setting", "holismokes", "--quick")
    assert out["setting"] == "holismokes" and out["pixel_scale"] == 0.168
    for p in ("x", "y", "theta_E", "e_x", "e_y"):
        assert out[f"d{p}_p16"] <= out[f"d{p}_p50"] <= out[f"d{p}_p84"], p
        assert 0 <= out[f"sbc_ks_p_{p}"] <= 1
    assert out["n_theta_e_gt_08"] > 0
    for k in ("img_dx", "img_dy", "dt_frac"):  # null only if no test lens kept its multiplicity
        vals = [out[f"{k}_p16"], out[f"{k}_p50"], out[f"{k}_p84"]]
        assert all(v is None for v in vals) if out["n_same_multiplicity"] == 0 else vals == sorted(vals), k
    assert 0 <= out["tarp_max_dev"] <= 1 and out["sampling_extrapolated"] is False


def test_zero_point_for_depth_gives_five_sigma():
    """The HSC zero points: a point source at the 5σ depth has S/N 5 (sky-limited, optimal Gaussian-PSF weights)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import npe_anchors
    from lensinfer import physics

    zp = npe_anchors.zero_point_for_depth(26.5, 22.0, 0.77, 600.0)
    sigma = 0.77 / 2.3548
    flux_e = float(physics.magnitude_to_cps(26.5, zp)) * 600.0
    sky_e = float(physics.magnitude_to_cps(22.0, zp)) * 600.0  # e⁻ per arcsec²
    assert flux_e / math.sqrt(4 * math.pi * sigma**2 * sky_e) == pytest.approx(5.0, rel=1e-3)


def _anchors():
    sys.path.insert(0, str(ROOT / "bench"))
    import npe_anchors

    return npe_anchors


def test_r2_bounds_match_the_conditional_mean_by_quadrature():
    """The σ_v / z ceilings (θE exact, no redshift information): the Monte Carlo conditional mean E[p | θE] of the
    uniform prior agrees with the same expectation by quadrature over (z_l, z_s) — σ_v(θE, z) = sqrt(θE / r(z)),
    r = θE(σ_v = 1), weighted by the prior density of σ_v times |∂σ_v/∂θE| = 1 / (2 sqrt(θE r)) — and its R² on lenses
    drawn from the prior is seed 003's prior's: σ_v ≈ 0.90, z_l ≈ 0.14, z_s ≈ 0.02."""
    from lensinfer import physics

    A = _anchors()
    rng = np.random.default_rng(1)
    n = 400
    sv, zl, zs = rng.uniform(150, 400, n), rng.uniform(0.2, 0.4, n), rng.uniform(0.6, 0.8, n)
    te = np.array([physics.sis_theta_e(a, b, c) for a, b, c in zip(sv, zl, zs)])
    kw = dict(sigma_v_range=(150.0, 400.0), z_lens_range=(0.2, 0.4), z_source_range=(0.6, 0.8), cosmology="planck18")
    got = A.r2_bounds(te, sv, zl, zs, n_prior=2_000_000, n_bins=1000, **kw)
    zg_l, zg_s = np.linspace(0.2, 0.4, 81), np.linspace(0.6, 0.8, 81)
    r = np.array([[physics.sis_theta_e(1.0, a, b) for b in zg_s] for a in zg_l])
    cond = {"sigma_v": [], "z_l": [], "z_s": []}
    for t in te:
        s_of_z = np.sqrt(t / r)
        w = (s_of_z >= 150) & (s_of_z <= 400)
        w = w / np.sqrt(t * r)
        cond["sigma_v"].append(np.sum(w * s_of_z) / w.sum())
        cond["z_l"].append(np.sum(w * zg_l[:, None]) / w.sum())
        cond["z_s"].append(np.sum(w * zg_s[None, :]) / w.sum())
    for name, truth in (("sigma_v", sv), ("z_l", zl), ("z_s", zs)):
        want = A.r2_score(np.asarray(cond[name]), truth)
        assert got[name] == pytest.approx(want, abs=0.004), name
    assert got["sigma_v"] == pytest.approx(0.90, abs=0.03) and got["z_l"] == pytest.approx(0.14, abs=0.06)


def test_paired_r2_difference():
    """The paired bootstrap of R²(ours) − R²(theirs): identical estimates give exactly [0, 0]; an estimate with half
    the error of the other gives an interval above 0; it is paired (the same resample for both)."""
    A = _anchors()
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(500, 1))
    noise = rng.normal(size=(500, 1))
    cols = ["lens_e1"]
    assert A.paired_r2_difference(truth + noise, truth + noise, truth, cols, n_boot=200)["e1"] == [0.0, 0.0]
    lo, hi = A.paired_r2_difference(truth + 0.5 * noise, truth + noise, truth, cols, n_boot=200)["e1"]
    assert 0 < lo <= hi  # R² 0.8 vs 0.0 in expectation
    assert hi - lo < 0.3


def test_workdir_of_another_variant_is_refused(tmp_path):
    """A workdir whose shards were simulated with another lens prior (here the --light-traces-mass variant) is refused
    with the differing key named, instead of silently reusing its shards; the same prior passes."""
    import yaml

    A = _anchors()
    kw = dict(n_train=90, n_val=10, n_test=10, shard_size=10, max_epochs=1, flow={"targets": []}, train={})
    cfg = A.setting_config("seeds-delve", **kw)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "sims" / "train" / "shard_0.zarr").mkdir(parents=True)
    A.check_workdir(tmp_path, A.setting_config("seeds-delve", **kw))
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"lens\.light_traces_mass differ"):
        A.check_workdir(tmp_path, A.setting_config("seeds-delve", light_traces_mass=True, **kw))
    # refused before anything is written: the workdir's record of its simulations is untouched, nothing added
    assert (tmp_path / "config.yaml").read_text() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["config.yaml", "sims"]
