"""Simulator pieces: mass-sheet convergence from the boundary, PSF kernels, noise, priors, placement."""

import numpy as np
import pytest

from lensinfer.simulate.instrument import add_noise, gaussian_psf_kernel, pixel_psf_kernel
from lensinfer.lensing.sheet import mean_convergence_from_deflections
from lensinfer.simulate.priors import PriorError, check_prior, draw
from lensinfer.simulate.scene import place_on_bright_pixels


def test_boundary_mean_convergence_matches_a_fine_map():
    from lenstronomy.LensModel.lens_model import LensModel

    lm = LensModel(["EPL", "EPL", "NFW"])
    kw = [dict(theta_E=0.02, gamma=2.3, e1=0.1, e2=-0.05, center_x=0.3, center_y=-0.5),
          dict(theta_E=0.05, gamma=1.8, e1=0.0, e2=0.1, center_x=-1.9, center_y=1.2),
          dict(Rs=0.4, alpha_Rs=0.01, center_x=0.7, center_y=0.1)]
    f = (np.arange(800) - 399.5) * (4.0 / 800)
    x, y = np.meshgrid(f, f)
    fine = lm.kappa(x.ravel(), y.ravel(), kw).mean()
    got = mean_convergence_from_deflections([lambda a, b: lm.alpha(a, b, kw)], [(0.0, 0.0)], 2.0, 128)
    assert got == pytest.approx(fine, rel=2e-3)
    # the pixel-centre mean of the reference is ill-defined when a steep subhalo sits on a pixel centre
    c = (np.arange(100) - 49.5) * 0.04
    x, y = np.meshgrid(c, c)
    assert lm.kappa(x.ravel(), y.ravel(), kw).mean() > 100 * got


def test_psf_kernels_are_normalised_and_centred(root):
    g = gaussian_psf_kernel(0.072, 0.04)
    assert g.shape[0] % 2 == 1 and g.sum() == pytest.approx(1.0)
    assert np.unravel_index(g.argmax(), g.shape) == (g.shape[0] // 2,) * 2
    p = pixel_psf_kernel(root / "resources/psf/f814w_emp_psf_17.fits", 0, 4)
    assert p.shape[0] % 2 == 1 and p.sum() == pytest.approx(1.0) and p.min() >= 0
    with pytest.raises(FileNotFoundError, match="instrument.psf.path"):
        pixel_psf_kernel(root / "missing.fits", 0, 4)


def test_noise_has_the_lenstronomy_variance():
    rng = np.random.default_rng(0)
    img = np.full((200, 200), 0.5)
    noisy = add_noise(rng, img, 2200.0, 0.004)
    assert (noisy - img).std() == pytest.approx(np.sqrt(0.5 / 2200 + 0.004**2), rel=0.02)


def test_priors_draw_and_check():
    rng = np.random.default_rng(1)
    assert draw(1.5, rng) == 1.5
    x = draw({"truncnormal": [2.0, 0.2, 1.1, 2.9]}, rng, 5000)
    assert x.min() >= 1.1 and x.max() <= 2.9 and abs(x.mean() - 2.0) < 0.01
    n = draw({"randint": [0, 3]}, rng, 1000)
    assert set(np.unique(n)) == {0, 1, 2}
    for bad, msg in [({"uniform": [2, 1]}, "low < high"), ({"normal": [0, -1]}, "standard deviation"),
                     ({"beta": [1, 2]}, "unknown prior"), ({"uniform": [1]}, "list of 2 numbers")]:
        with pytest.raises(PriorError, match=msg):
            check_prior(bad, "k")


def test_placement_only_on_bright_pixels():
    img = np.zeros((50, 50))
    img[10, 30] = 1.0
    img[40, 5] = 0.1
    x, y = place_on_bright_pixels(np.random.default_rng(0), img, 200, 0.08, 0.2)
    col = np.round(x / 0.08 + 24.5)
    row = np.round(y / 0.08 + 24.5)
    assert set(zip(row.astype(int), col.astype(int))) == {(10, 30)}
    assert np.abs(x - (30 - 24.5) * 0.08).max() <= 0.04 + 1e-12


def test_light_traces_mass_ties_the_lens_lights_ellipticity():
    """lens.light_traces_mass: the lens light's e1, e2 (columns and the rendered profile's kwargs) are the main lens's;
    every other draw keeps its value (the light's own e1/e2 are still drawn, then replaced)."""
    from lensinfer.simulate.scene import draw_macro

    lens = {"z_lens": 0.3, "z_source": 0.7,
            "main": {"theta_E": {"uniform": [0.8, 1.5]}, "gamma": 2.0, "e1": {"uniform": [-0.4, 0.4]},
                     "e2": {"uniform": [-0.4, 0.4]}, "center_x": 0.0, "center_y": 0.0},
            "lens_light": {"magnitude": {"uniform": [17, 19]}, "R_sersic": 1.0, "n_sersic": 4.0,
                           "e1": {"uniform": [-0.1, 0.1]}, "e2": {"uniform": [-0.1, 0.1]}},
            "source": {"type": "sersic", "magnitude": {"uniform": [20, 22]}, "R_sersic": 0.3, "n_sersic": 1.0,
                       "e1": 0.0, "e2": 0.0, "center_x": {"uniform": [-0.2, 0.2]}, "center_y": 0.0}}
    for seed in range(4):
        free = draw_macro(np.random.default_rng(seed), lens, 26.75)
        tied = draw_macro(np.random.default_rng(seed), dict(lens, light_traces_mass=True), 26.75)
        p, q = free.params, tied.params
        assert (q["lens_light_e1"], q["lens_light_e2"]) == (q["lens_e1"], q["lens_e2"])
        assert tied.kwargs_lens_light[0]["e1"] == q["lens_e1"] and tied.kwargs_lens_light[0]["e2"] == q["lens_e2"]
        assert abs(p["lens_light_e1"]) <= 0.1 and p["lens_light_e1"] != q["lens_light_e1"]
        for k in p:  # everything else drawn identically
            if k not in ("lens_light_e1", "lens_light_e2", "lens_light_amp"):
                assert q[k] == p[k], k


def test_sigma_v_prior_sets_theta_e_from_the_redshifts():
    from lensinfer import physics
    from lensinfer.simulate.scene import draw_macro

    lens = {"z_lens": {"uniform": [0.2, 0.4]}, "z_source": {"uniform": [0.6, 0.8]},
            "main": {"sigma_v": {"uniform": [150, 400]}, "gamma": 2.0, "e1": 0.1, "e2": 0.0, "center_x": 0.0,
                     "center_y": 0.0},
            "source": {"type": "sersic", "magnitude": 21.0, "R_sersic": 0.3, "n_sersic": 1.0, "e1": 0.0, "e2": 0.0,
                       "center_x": 0.05, "center_y": 0.0}}
    for seed in range(5):
        p = draw_macro(np.random.default_rng(seed), lens, 26.75).params
        assert 150 <= p["lens_sigma_v"] <= 400
        assert p["lens_theta_E"] == pytest.approx(physics.sis_theta_e(p["lens_sigma_v"], p["z_lens"], p["z_source"]))
        assert draw_macro(np.random.default_rng(seed), lens, 26.75).kwargs_lens[0]["theta_E"] == p["lens_theta_E"]
