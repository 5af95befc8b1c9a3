"""Unit conversions against the check values of spec/science.md §7 (Zhang, Şengül & Dvorkin 2023)."""

import numpy as np
import pytest

from lensinfer import physics


@pytest.fixture(scope="module")
def plane():
    return physics.LensPlane(0.2, 0.6, "planck18")


def test_sigma_crit_rho_crit_kpc(plane):
    assert plane.sigma_crit == pytest.approx(4.37e10, rel=2e-3)
    assert plane.rho_crit == pytest.approx(6169, rel=1e-3)
    assert plane.kpc_per_arcsec == pytest.approx(3.408, rel=1e-3)
    assert physics.sigma_crit(0.2, 0.6) == pytest.approx(plane.sigma_crit)


@pytest.mark.parametrize(
    "m200,gamma,expected",
    [(1e8, 2.0, 4.3e-4), (1e9, 2.0, 2.0e-3), (1e9, 2.5, 0.0236), (1e9, 2.9, 0.0695),
     (1e10, 2.0, 9.2e-3), (1e10, 2.5, 0.085), (1e10, 2.9, 0.224), (1e8, 2.9, 0.0215), (1e9, 1.5, 1.9e-6)],
)
def test_epl_m2thetae_check_values(plane, m200, gamma, expected):
    got = physics.epl_m2thetae(m200, gamma, plane.sigma_crit, plane.rho_crit)
    assert float(got) == pytest.approx(expected, rel=0.03)


def test_thetae_m200_round_trip(plane):
    m = np.array([1e7, 3e8, 1e10])
    g = np.array([1.3, 2.0, 2.8])
    t = physics.epl_m2thetae(m, g, plane.sigma_crit, plane.rho_crit)
    np.testing.assert_allclose(physics.epl_thetae2m200(t, g, plane.sigma_crit, plane.rho_crit), m, rtol=1e-10)


def test_epl_m2thetae_rejects_bad_slope(plane):
    with pytest.raises(ValueError, match="1 < gamma < 3"):
        physics.epl_m2thetae(1e9, 3.0, plane.sigma_crit, plane.rho_crit)


def test_mean_subhalo_mass_and_sampler():
    assert physics.mean_power_law_mass(1e7, 1e10, -1.9) == pytest.approx(8.98e7, rel=2e-3)
    m = physics.sample_power_law_mass(np.random.default_rng(1), 200_000, 1e7, 1e10, -1.9)
    assert m.min() >= 1e7 and m.max() <= 1e10
    assert m.mean() == pytest.approx(8.98e7, rel=0.05)


def test_background_sigma_check_value():
    sigma = physics.background_sigma(pixel_scale=0.04, exposure_time=2200, sky_brightness=21.83, read_noise=3.0,
                                     magnitude_zero_point=25.127)
    assert sigma == pytest.approx(0.00412, rel=2e-3)


def test_background_sigma_matches_lenstronomy():
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    band = SingleBand(pixel_scale=0.04, exposure_time=2200, magnitude_zero_point=25.127, read_noise=3.0, ccd_gain=1.58,
                      sky_brightness=21.83, seeing=0.1, psf_type="GAUSSIAN", num_exposures=1)
    assert physics.background_sigma(pixel_scale=0.04, exposure_time=2200, sky_brightness=21.83, read_noise=3.0,
                                    magnitude_zero_point=25.127) == pytest.approx(band.background_noise, rel=1e-12)


def test_dm14_concentration_scalar_and_factor():
    c = physics.dm14_concentration(1e9, 0.2, h=0.7)
    assert c.shape == (1,)
    a = 0.520 + 0.385 * np.exp(-0.617 * 0.2**1.21)
    b = -0.101 + 0.026 * 0.2
    assert c[0] == pytest.approx(10 ** (a + b * np.log10(1e9 / (1e12 / 0.7))))
    assert physics.dm14_concentration(1e9, 0.2, c_factor=2.0)[0] == pytest.approx(2 * c[0])
    assert physics.dm14_concentration([1e8, 1e9], 0.2, c_factor=0.0).tolist() == [20.0, 20.0]
    with pytest.raises(ValueError, match="rng"):
        physics.dm14_concentration(1e9, 0.2, dex_scatter=0.1)


def test_unknown_cosmology_named():
    with pytest.raises(ValueError, match="unknown cosmology"):
        physics.get_cosmology("nonsense")


def test_sis_theta_e_from_velocity_dispersion():
    from astropy.cosmology import Planck18

    ratio = (Planck18.angular_diameter_distance_z1z2(0.3, 0.7) / Planck18.angular_diameter_distance(0.7)).value
    # 4π (σ_v/c)² in arcsec for σ_v = 250 km/s: 4π (250/299792.458)² · 206264.806″ = 1.80248″
    assert physics.sis_theta_e(250.0, 0.3, 0.7) == pytest.approx(1.80248 * ratio, rel=1e-4)
    assert physics.sis_theta_e(500.0, 0.3, 0.7) == pytest.approx(4 * physics.sis_theta_e(250.0, 0.3, 0.7), rel=1e-12)
