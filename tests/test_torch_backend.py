"""The torch simulator backend (``renderer.backend: torch``) against the lenstronomy backend, shard by shard.

For each small configuration derived from config/test.yaml, one shard is simulated with both backends from the
same seeds: the parameter tables (and subhalo / LOS tables) must be identical — every draw is the same, and the
sheet's mean convergence comes from the shared Gauss-theorem quadrature, so it agrees to rounding — and the noiseless
images of the same scenes must agree within :data:`TOLERANCE` = 7e-12 × σ_bkg in every pixel (the README's
claim), and the stored (noisy, float32) shards must be identical.
torch.compile is switched off here (compile time would dominate; the compiled path is checked in
tests/test_lensing_render.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from lensinfer.config import load_config
from lensinfer.seeds import image_rng
from lensinfer.simulate import torch_backend
from lensinfer.simulate.renderers import make_renderer
from lensinfer.simulate.shard import draw_scene, line_of_sight, population_of, simulate_shard, source_catalog

from .cosmos_fixture import make_cosmos_fixture

pytest.importorskip("lenstronomy")

ROOT = Path(__file__).resolve().parents[1]
LOS = {"delta_los": {"uniform": [1.5, 2.0]}, "m_min": 1e7, "m_max": 1e10, "z_min": 0.01, "dz": 0.01,
       "cone_angle": 4.0, "r_min": 0.5, "r_max": 10.0}
N_IMAGES = 3
#: max |Δ| between the backends' noiseless images, in units of σ_bkg (README: "max |Δ| ≤ 7e-12 σ_bkg")
TOLERANCE = 7e-12


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setattr(torch_backend, "COMPILE", False)


def _config(case: str, tmp_path: Path) -> tuple[dict, str]:
    cfg = load_config(ROOT / "config" / "test.yaml")
    cfg["instrument"]["num_pix"] = 24
    dataset = "train"
    if case == "cosmos":
        cfg["lens"]["source"] = {
            "type": "cosmos", "catalog_dir": str(make_cosmos_fixture(tmp_path / "cat")),
            "split_lists": str(ROOT / "resources" / "cosmos"), "minimum_size_in_pixels": 64,
            "faintest_apparent_mag": 20.0, "max_z": 1.0, "min_flux_radius": 10.0, "smoothing_sigma": 0.0,
            "random_rotation": True, "center_x": {"uniform": [-0.1, 0.1]}, "center_y": {"uniform": [-0.1, 0.1]},
        }
    elif case == "los":
        cfg["lens"]["los"] = dict(LOS)
    elif case in ("nfw", "tnfw_los"):
        dataset = "test_nfw"
        cfg["datasets"][dataset]["population"]["profile"] = "NFW" if case == "nfw" else "TNFW"
        if case == "tnfw_los":
            cfg["lens"]["los"] = dict(LOS)  # NFW line-of-sight halos, multi-plane
    elif case == "pixel_psf":
        cfg["instrument"]["psf"] = {"type": "pixel", "path": str(ROOT / "resources/psf/f814w_emp_psf_17.fits"),
                                    "index": 0, "supersampling": 4}
    elif case == "supersampling2":
        cfg["instrument"]["supersampling"] = 2
    cfg["datasets"][dataset]["shard_size"] = N_IMAGES
    cfg["datasets"][dataset]["population"]["n_sub"] = {"randint": [4, 12]}
    return cfg, dataset


def _with_backend(cfg: dict, backend: str) -> dict:
    out = copy.deepcopy(cfg)
    out["renderer"]["backend"] = backend
    return out


@pytest.mark.parametrize("case", ["sersic", "cosmos", "los", "nfw", "tnfw_los", "pixel_psf", "supersampling2"])
def test_torch_shard_equals_lenstronomy_shard(case, tmp_path):
    cfg, dataset = _config(case, tmp_path)
    ref = simulate_shard(_with_backend(cfg, "lenstronomy"), dataset, 0, tmp_path / "ref.zarr", progress=False)
    got = simulate_shard(_with_backend(cfg, "torch"), dataset, 0, tmp_path / "torch.zarr", progress=False)

    # identical draws: every column but the sheet's κ bit for bit, the sheet to rounding
    assert got.columns == ref.columns
    kappa = ref.columns.index("nms_kappa")
    others = [i for i in range(len(ref.columns)) if i != kappa]
    np.testing.assert_array_equal(got.params[:, others], ref.params[:, others])
    np.testing.assert_allclose(got.params[:, kappa], ref.params[:, kappa], rtol=1e-11, atol=0)
    assert np.any(ref.params[:, ref.columns.index("n_sub")] > 0)
    np.testing.assert_array_equal(got.subhalos, ref.subhalos)
    np.testing.assert_array_equal(got.image_seed, ref.image_seed)
    if "los" in case:
        np.testing.assert_array_equal(got.extra["los"][0], ref.extra["los"][0])
        assert got.extra["los"][0].shape[0] > 0
    sigma = make_renderer(cfg).instrument.sigma_bkg
    # same noise draws on the same noiseless images (to 7e-12 σ_bkg): the stored float32 shards are identical
    np.testing.assert_array_equal(got.images, ref.images)

    # noiseless images of the same scenes, every pixel
    lt, tr = make_renderer(_with_backend(cfg, "lenstronomy")), make_renderer(_with_backend(cfg, "torch"))
    population = population_of(cfg, dataset)
    cosmos = source_catalog(cfg, cfg["datasets"][dataset].get("source_split", "train"))
    los = line_of_sight(cfg)
    scenes = [
        draw_scene(image_rng(seed), renderer=lt, config=cfg, population=population, global_index=i, cosmos=cosmos,
                   los=los)
        for i, seed in enumerate(ref.image_seed)
    ]
    expected = np.stack([lt.image(s) for s in scenes])
    images = tr.images(scenes)
    assert expected.max() > 100 * sigma  # a real lensed image
    diff = np.abs(images - expected).max() / sigma
    print(f"{case}: max |Δ| = {diff:.2e} σ_bkg")
    assert diff <= TOLERANCE, f"{case}: max |Δ| = {diff:.2e} σ_bkg > {TOLERANCE:g} σ_bkg"
    # one at a time == batched, to rounding
    np.testing.assert_allclose(tr.image(scenes[-1]), images[-1], rtol=0, atol=1e-12 * expected.max())


def test_unknown_models_raise_clear_errors(tmp_path):
    cfg, _ = _config("sersic", tmp_path)
    renderer = make_renderer(_with_backend(cfg, "torch"))
    assert isinstance(renderer, torch_backend.TorchRenderer)
    src = dict(source_model_list=["SERSIC"], kwargs_source=[dict(amp=1.0, R_sersic=0.2, n_sersic=1.0)])
    with pytest.raises(NotImplementedError, match="'SIS'"):
        renderer.image(dict(lens_model_list=["SIS"], kwargs_lens=[dict(theta_E=1.0)], **src))
    with pytest.raises(NotImplementedError, match="'GAUSSIAN'"):
        renderer.image(dict(lens_model_list=[], kwargs_lens=[], source_model_list=["GAUSSIAN"],
                            kwargs_source=[dict(amp=1.0, sigma=0.1)]))
    with pytest.raises(NotImplementedError, match="'HERNQUIST'"):
        renderer.mean_convergence(["HERNQUIST"], [dict(Rs=1.0, sigma0=1.0)])
    with pytest.raises(NotImplementedError, match="point sources"):
        renderer.image(dict(lens_model_list=[], kwargs_lens=[], point_source_model_list=["LENSED_POSITION"],
                            kwargs_ps=[dict(ra_image=[0.1], dec_image=[0.2])], **src))
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        make_renderer(_with_backend(cfg, "jax"))
