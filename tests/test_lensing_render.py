"""Whole noiseless images from the torch renderer vs lenstronomy 1.14.0 ``ImageModel`` on the same scenes.

Acceptance (issue 3): 100×100 at 0.04"/pix with 1500 EPL subhalos (1e7–1e10 M⊙, β = −1.9, θE from the mass,
spec §1.2) within 1e-2 × σ_bkg in every pixel, σ_bkg = 0.00412 e⁻/s at the published configuration.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensinfer import physics
from lensinfer.lensing.render import pixel_grid, render_batch, render_image
from lensinfer.lensing.scene import scene_to_arrays

pytest.importorskip("lenstronomy")

NUM_PIX, PIXEL_SCALE = 100, 0.04
SIGMA_BKG = physics.background_sigma(
    pixel_scale=0.04, exposure_time=2200.0, sky_brightness=21.83, read_noise=3.0, magnitude_zero_point=25.127
)


def _psf(size: int = 11) -> np.ndarray:
    """An off-centre, elongated kernel: a wrong flip or transpose of the convolution would show."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    kernel = np.exp(-((xx - 0.7) ** 2 / 2.0 + (yy + 0.3) ** 2 / 5.0)) + 0.2 * np.exp(-((xx + 2) ** 2 + yy**2) / 1.5)
    return kernel / kernel.sum()


def _macro(rng: np.random.Generator) -> tuple[list[str], list[dict], dict, list[dict]]:
    c = dict(center_x=rng.uniform(-0.2, 0.2), center_y=rng.uniform(-0.2, 0.2))
    models = ["EPL", "SHEAR", "MULTIPOLE", "MULTIPOLE"]
    kwargs = [
        dict(
            theta_E=rng.uniform(0.9, 1.3),
            gamma=rng.uniform(1.6, 2.4),
            e1=rng.uniform(-0.2, 0.2),
            e2=rng.uniform(-0.2, 0.2),
            **c,
        ),
        dict(gamma1=rng.uniform(-0.1, 0.1), gamma2=rng.uniform(-0.1, 0.1)),
        dict(m=3, a_m=rng.uniform(0, 0.05), phi_m=rng.uniform(-np.pi, np.pi), **c),
        dict(m=4, a_m=rng.uniform(0, 0.05), phi_m=rng.uniform(-np.pi, np.pi), **c),
    ]
    source = dict(
        amp=rng.uniform(20, 60),
        R_sersic=rng.uniform(0.1, 0.4),
        n_sersic=rng.uniform(1, 4),
        e1=rng.uniform(-0.2, 0.2),
        e2=rng.uniform(-0.2, 0.2),
        center_x=rng.uniform(-0.1, 0.1),
        center_y=rng.uniform(-0.1, 0.1),
    )
    light = [
        dict(
            amp=rng.uniform(5, 30),
            R_sersic=rng.normal(0.8, 0.15),
            n_sersic=rng.uniform(1, 4),
            e1=rng.uniform(-0.1, 0.1),
            e2=rng.uniform(-0.1, 0.1),
            **c,
        )
    ]
    return models, kwargs, source, light


def _positions(rng: np.random.Generator, n: int, theta_e: float) -> tuple[np.ndarray, np.ndarray]:
    """Around the Einstein ring (where the reference places subhalos: on the bright arcs)."""
    r = theta_e + rng.uniform(-0.3, 0.3, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


def epl_scene(rng: np.random.Generator, n_sub: int, gamma_pop: float = 2.0) -> dict:
    """A published-configuration scene: EPL macro model, n_sub EPL subhalos (spec §1.2) and their sheet."""
    models, kwargs, source, light = _macro(rng)
    sigma_crit, rho_crit = physics.sigma_crit(0.2, 0.6), physics.rho_crit(0.2, 0.6)
    mass = physics.sample_power_law_mass(rng, n_sub, 1e7, 1e10, -1.9)
    gamma = np.clip(rng.normal(gamma_pop, 0.1 * gamma_pop, n_sub), 1.01, 2.99)
    theta_e = physics.epl_m2thetae(mass, gamma, sigma_crit, rho_crit)
    x, y = _positions(rng, n_sub, kwargs[0]["theta_E"])
    e1, e2 = rng.uniform(-0.2, 0.2, (2, n_sub))
    for i in range(n_sub):
        models.append("EPL")
        kwargs.append(dict(theta_E=theta_e[i], gamma=gamma[i], e1=e1[i], e2=e2[i], center_x=x[i], center_y=y[i]))
    models.append("CONVERGENCE")
    kwargs.append(dict(kappa=-0.004 * n_sub / 1500))
    return dict(
        lens_model_list=models,
        kwargs_lens=kwargs,
        source_light_model_list=["SERSIC_ELLIPSE"],
        kwargs_source=[source],
        lens_light_model_list=["SERSIC_ELLIPSE"],
        kwargs_lens_light=light,
    )


def _lenstronomy_image(scene: dict, psf: np.ndarray, supersampling: int = 1, numba: bool = True) -> np.ndarray:
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util.simulation_util import data_configure_simple

    models = [("EPL_NUMBA" if numba and m == "EPL" else m) for m in scene["lens_model_list"]]
    model = ImageModel(
        ImageData(**data_configure_simple(NUM_PIX, PIXEL_SCALE, 2200, SIGMA_BKG)),
        PSF(psf_type="PIXEL", kernel_point_source=psf),
        LensModel(models),
        LightModel(scene["source_light_model_list"]),
        LightModel(scene.get("lens_light_model_list", [])),
        kwargs_numerics={"supersampling_factor": supersampling},
    )
    return model.image(scene["kwargs_lens"], scene["kwargs_source"], scene.get("kwargs_lens_light", []))


def test_pixel_grid_is_lenstronomy_make_grid():
    from lenstronomy.Util import util

    for n, s in ((5, 1), (4, 1), (3, 2)):
        x, y = pixel_grid(n, 0.04, s)
        xr, yr = util.make_grid(n, 0.04, subgrid_res=s)
        np.testing.assert_allclose(x.numpy(), xr, atol=1e-15)
        np.testing.assert_allclose(y.numpy(), yr, atol=1e-15)


@pytest.mark.parametrize("supersampling", [1, 2])
def test_mixed_scene_matches_lenstronomy(supersampling):
    """EPL macro model + shear + multipoles + EPL, NFW and TNFW subhalos + sheet, Sérsic light, pixel PSF."""
    rng = np.random.default_rng(11)
    scene = epl_scene(rng, 40)
    x, y = _positions(rng, 30, 1.1)
    for i in range(30):
        scene["lens_model_list"].insert(-1, "NFW" if i % 2 else "TNFW")
        kw = dict(Rs=rng.uniform(0.01, 0.3), alpha_Rs=10 ** rng.uniform(-4, -2), center_x=x[i], center_y=y[i])
        if i % 2 == 0:
            kw["r_trunc"] = kw["Rs"] * rng.uniform(0.5, 20)
        scene["kwargs_lens"].insert(-1, kw)
    psf = _psf()
    ours = render_image(
        scene, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf, supersampling=supersampling, compile=False
    )
    ref = _lenstronomy_image(scene, psf, supersampling, numba=False)
    assert np.abs(ours - ref).max() <= 1e-12 * np.abs(ref).max()


def test_batch_equals_single_images():
    """Padding and chunking across a batch change nothing: scenes with 0, 3 and 70 subhalos, one without lens light."""
    rng = np.random.default_rng(12)
    scenes = [epl_scene(rng, n) for n in (0, 3, 70)]
    scenes[1] = dict(scenes[1], lens_light_model_list=[], kwargs_lens_light=[])
    psf = _psf(7)
    batch = render_batch(scenes, num_pix=40, pixel_scale=0.08, psf_kernel=psf, compile=False)
    for scene, image in zip(scenes, batch):
        single = render_image(scene, num_pix=40, pixel_scale=0.08, psf_kernel=psf, compile=False)
        np.testing.assert_allclose(image, single, rtol=0, atol=1e-14 * np.abs(single).max())


def test_scene_to_arrays_groups_and_validates():
    rng = np.random.default_rng(13)
    scenes = [epl_scene(rng, 5), epl_scene(rng, 2)]
    scenes[1]["lens_model_list"][-2] = "EPL_NUMBA"  # an alias joins the EPL group
    arrays = scene_to_arrays(scenes)
    epl = arrays.lens["EPL"]
    assert epl.params["theta_E"].shape == (2, 6) and epl.count.tolist() == [6, 3]
    assert arrays.lens["MULTIPOLE"].count.tolist() == [2, 2]
    assert epl.params["theta_E"].dtype == torch.float64
    bad = epl_scene(rng, 1)
    bad["kwargs_lens"][0]["theta_e"] = 1.0
    with pytest.raises(ValueError, match="unknown keywords"):
        scene_to_arrays(bad)
    bad = epl_scene(rng, 1)
    bad["lens_model_list"][0] = "SIE"
    with pytest.raises(NotImplementedError):
        scene_to_arrays(bad)
    with pytest.raises(ValueError, match="odd"):
        render_image(epl_scene(rng, 0), num_pix=10, pixel_scale=0.04, psf_kernel=np.ones((4, 4)), compile=False)


def test_1500_subhalos_within_one_percent_of_sigma():
    """The acceptance image: compiled CPU float64 path vs lenstronomy, every pixel within 1e-2 σ_bkg."""
    rng = np.random.default_rng(2023)
    psf = _psf()
    for gamma_pop in (1.3, 2.7):  # shallow (diffuse, far-reaching) and steep (compact) populations
        scene = epl_scene(rng, 1500, gamma_pop)
        ours = render_image(scene, num_pix=NUM_PIX, pixel_scale=PIXEL_SCALE, psf_kernel=psf)
        ref = _lenstronomy_image(scene, psf)
        assert ref.max() > 100 * SIGMA_BKG  # a real lensed image, not an empty frame
        assert np.abs(ours - ref).max() <= 1e-2 * SIGMA_BKG
        assert np.abs(ours - ref).max() <= 1e-10 * ref.max()  # in fact at rounding level


def test_compile_failure_falls_back_to_eager(monkeypatch):
    """Without a working compiler the fused kernel warns once and runs the same arithmetic eagerly."""
    from lensinfer.lensing import kernels

    def broken(fn, **_):
        def run(*args):
            raise RuntimeError("no compiler")

        return run

    monkeypatch.setattr(kernels.torch, "compile", broken)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_FAILED", set())
    x = torch.linspace(-1, 1, 7, dtype=torch.float64).view(1, -1, 1)
    params = (torch.rand(3, 1, 5, dtype=torch.float64),)
    with pytest.warns(UserWarning, match="eager"):
        (out,) = kernels.summed_over_components("probe", lambda px, p: (px * p,), (x,), params)
    torch.testing.assert_close(out, (x * params[0]).sum(-1))
    assert "probe" in kernels._FAILED
