"""Cosmology and unit conversions of the reference analysis.

All angles are in arcsec, masses in M_sun. Constants are lenstronomy's (``lenstronomy.Util.constants``)
so that conversions agree with lenstronomy to the last digit.

References
----------
* Zhang, Şengül & Dvorkin (2023), MNRAS 527, 4183 (arXiv:2308.09739) — "ZSD23" below; the reference
  code's ``utils.epl_m2thetae`` and ``utils.epl_m200`` (spec/science.md §1.2–1.3).
* Dutton & Macciò (2014), MNRAS 441, 3359, eq. 7 & 8 — NFW concentration–mass relation.
* Tessore & Metcalf (2015), A&A 580, A79 — the elliptical power law (EPL) normalisation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from astropy import units as u
from astropy.cosmology import FLRW
from scipy.special import gamma as gamma_fn

__all__ = [
    "G_SI",
    "C_SI",
    "M_SUN_KG",
    "MPC_M",
    "ARCSEC_RAD",
    "get_cosmology",
    "LensPlane",
    "sigma_crit",
    "rho_crit",
    "kpc_per_arcsec",
    "epl_m2thetae",
    "epl_thetae2m200",
    "mean_power_law_mass",
    "sample_power_law_mass",
    "dm14_concentration",
    "background_sigma",
    "magnitude_to_cps",
]

# lenstronomy.Util.constants
G_SI = 6.67384e-11
C_SI = 299792458.0
M_SUN_KG = 1.9891e30
MPC_M = 3.08567758e22
ARCSEC_RAD = 2.0 * math.pi / 360.0 / 3600.0


@functools.lru_cache(maxsize=8)
def get_cosmology(name: str = "planck18") -> FLRW:
    """Return an astropy cosmology by (case-insensitive) name, cached.

    The reference analysis uses astropy's default cosmology, Planck18 on astropy ≥ 5.
    Caching matters: building an astropy cosmology costs ~20 ms on astropy ≥ 7 (spec/stack.md pitfall 7).
    """
    from astropy.cosmology import realizations

    table = {n.lower(): n for n in realizations.available}
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown cosmology {name!r}; allowed: {sorted(realizations.available)}")
    return getattr(realizations, table[key])


class LensPlane:
    """Angular-diameter distances of one (z_lens, z_source) pair, in Mpc."""

    def __init__(self, z_lens: float, z_source: float, cosmology: str = "planck18") -> None:
        if not 0.0 < z_lens < z_source:
            raise ValueError(f"need 0 < z_lens < z_source, got z_lens={z_lens}, z_source={z_source}")
        cosmo = get_cosmology(cosmology)
        self.z_lens = float(z_lens)
        self.z_source = float(z_source)
        self.cosmology = cosmology
        self.d_d = cosmo.angular_diameter_distance(z_lens).to_value(u.Mpc)
        self.d_s = cosmo.angular_diameter_distance(z_source).to_value(u.Mpc)
        self.d_ds = cosmo.angular_diameter_distance(z_lens, z_source).to_value(u.Mpc)
        self._rho_c_si = cosmo.critical_density(z_lens).to_value(u.kg / u.m**3)

    @property
    def metre_per_arcsec(self) -> float:
        """Physical length (m) subtended by one arcsec at the lens plane."""
        return self.d_d * MPC_M * ARCSEC_RAD

    @property
    def sigma_crit(self) -> float:
        """Critical surface density Σ_crit = c² D_s / (4π G D_d D_ds) in M_sun / arcsec²."""
        sigma_si = C_SI**2 * self.d_s / (4.0 * math.pi * G_SI * self.d_d * self.d_ds * MPC_M)  # kg/m²
        return sigma_si * self.metre_per_arcsec**2 / M_SUN_KG

    @property
    def rho_crit(self) -> float:
        """Critical density 3H(z_l)²/(8πG) at the lens redshift, in M_sun / arcsec³ (lens-plane arcsec)."""
        return self._rho_c_si * self.metre_per_arcsec**3 / M_SUN_KG

    @property
    def kpc_per_arcsec(self) -> float:
        """Proper kpc per arcsec at the lens plane."""
        return self.d_d * 1e3 * ARCSEC_RAD


def sigma_crit(z_lens: float, z_source: float, cosmology: str = "planck18") -> float:
    """Σ_crit in M_sun/arcsec² (check value 4.37e10 at z 0.2/0.6, Planck18; spec §7 #1)."""
    return LensPlane(z_lens, z_source, cosmology).sigma_crit


def sis_theta_e(sigma_v: float, z_lens: float, z_source: float, cosmology: str = "planck18") -> float:
    """Einstein radius (arcsec) of a singular isothermal sphere of velocity dispersion ``sigma_v`` (km/s):
    θE = 4π (σ_v / c)² D_ds / D_s (Schneider, Ehlers & Falco 1992, eq. 8.35; deeplenstronomy / seed 003's σ_v →
    θE). Check value: σ_v = 250 km/s at z 0.3/0.7 gives 0.941″ (Planck18: 1.8025″ × D_ds/D_s = 0.522)."""
    plane = LensPlane(z_lens, z_source, cosmology)
    return float(4.0 * math.pi * (float(sigma_v) * 1e3 / C_SI) ** 2 * plane.d_ds / plane.d_s / ARCSEC_RAD)


def rho_crit(z_lens: float, z_source: float = 1.0, cosmology: str = "planck18") -> float:
    """ρ_c(z_lens) in M_sun/arcsec³ (check value 6169 at z = 0.2; spec §7 #1)."""
    return LensPlane(z_lens, max(z_source, z_lens + 1e-3), cosmology).rho_crit


@functools.lru_cache(maxsize=4096)
def kpc_per_arcsec(z_lens: float, cosmology: str = "planck18") -> float:
    """Proper kpc per arcsec at z_lens (check value 3.408 at z = 0.2)."""
    return get_cosmology(cosmology).angular_diameter_distance(z_lens).to_value(u.Mpc) * 1e3 * ARCSEC_RAD


def _r200(m200: np.ndarray, rho_c: float) -> np.ndarray:
    return (3.0 * m200 / (4.0 * math.pi * 200.0 * rho_c)) ** (1.0 / 3.0)


def epl_m2thetae(
    m200: np.ndarray | float,
    gamma: np.ndarray | float,
    sigma_crit: float,
    rho_crit: float,
) -> np.ndarray:
    """Einstein radius (arcsec) of a spherical power law ρ ∝ r^-γ holding mass m200 inside r200.

    ZSD23 ``utils.epl_m2thetae`` (spec §1.2): with r200 = [3 m200 / (4π 200 ρ_c)]^(1/3),
    θE = [Γ((γ−1)/2) m200 / (2√π Γ(γ/2) Σ_crit r200^(3−γ))]^(1/(γ−1)).
    Check values at z 0.2/0.6: m200 = 1e9 → 2.0e-3" (γ=2), 0.0236" (γ=2.5), 0.0695" (γ=2.9).

    Parameters broadcast. ``sigma_crit`` in M_sun/arcsec², ``rho_crit`` in M_sun/arcsec³.
    """
    m = np.asarray(m200, dtype=float)
    g = np.asarray(gamma, dtype=float)
    if np.any((g <= 1.0) | (g >= 3.0)):
        raise ValueError("epl_m2thetae needs 1 < gamma < 3")
    r200 = _r200(m, rho_crit)
    base = gamma_fn((g - 1.0) / 2.0) * m / (2.0 * math.sqrt(math.pi) * gamma_fn(g / 2.0) * sigma_crit * r200 ** (3.0 - g))
    return base ** (1.0 / (g - 1.0))


def epl_thetae2m200(
    theta_e: np.ndarray | float,
    gamma: np.ndarray | float,
    sigma_crit: float,
    rho_crit: float,
) -> np.ndarray:
    """M200 (M_sun) of a spherical power law with Einstein radius θE: inverse of :func:`epl_m2thetae`.

    ZSD23 ``utils.epl_m200`` (spec §1.3): ρ0 = θE^(γ−1) (3−γ) Γ(γ/2) / (2√π Γ((γ−1)/2)) and
    r200 = [3 ρ0 Σ_crit / ((3−γ) 200 ρ_c)]^(1/γ), M200 = (4/3) π r200³ 200 ρ_c.
    """
    t = np.asarray(theta_e, dtype=float)
    g = np.asarray(gamma, dtype=float)
    rho0 = t ** (g - 1.0) * (3.0 - g) * gamma_fn(g / 2.0) / (2.0 * math.sqrt(math.pi) * gamma_fn((g - 1.0) / 2.0))
    r200 = (3.0 * rho0 * sigma_crit / ((3.0 - g) * 200.0 * rho_crit)) ** (1.0 / g)
    return 4.0 / 3.0 * math.pi * r200**3 * 200.0 * rho_crit


def sample_power_law_mass(
    rng: np.random.Generator, n: int, m_min: float, m_max: float, beta: float
) -> np.ndarray:
    """Inverse-CDF draws from dN/dm ∝ m^β on [m_min, m_max] (ZSD23 subhalo mass function, β = −1.9)."""
    if not 0 < m_min < m_max:
        raise ValueError(f"need 0 < m_min < m_max, got {m_min}, {m_max}")
    uu = rng.random(n)
    if abs(beta + 1.0) < 1e-12:
        return m_min * (m_max / m_min) ** uu
    a = 1.0 + beta
    return (uu * m_max**a + (1.0 - uu) * m_min**a) ** (1.0 / a)


def mean_power_law_mass(m_min: float, m_max: float, beta: float) -> float:
    """Mean of dN/dm ∝ m^β on [m_min, m_max] (check value 8.98e7 M_sun for β=−1.9 on [1e7, 1e10])."""
    a1, a2 = beta + 1.0, beta + 2.0

    def integral(p: float) -> float:
        return math.log(m_max / m_min) if abs(p) < 1e-12 else (m_max**p - m_min**p) / p

    return integral(a2) / integral(a1)


def dm14_concentration(
    m200: np.ndarray | float,
    z: float,
    *,
    h: float = 0.7,
    dex_scatter: float = 0.0,
    c_factor: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """NFW concentration c200 from Dutton & Macciò (2014) eq. 7–8, with log-normal scatter and a multiplier.

    log10 c = a + b log10(M / (1e12 h⁻¹ M_sun)), a = 0.520 + 0.385 exp(−0.617 z^1.21), b = −0.101 + 0.026 z.
    ZSD23 hard-codes h = 0.7 and breaks for scalar masses (spec §6.8); here h is an argument and scalars work.
    ``c_factor = 0`` reproduces the reference's fixed c = 20.
    """
    m = np.atleast_1d(np.asarray(m200, dtype=float))
    if c_factor == 0:
        return np.full_like(m, 20.0)
    a = 0.520 + 0.385 * math.exp(-0.617 * z**1.21)
    b = -0.101 + 0.026 * z
    log_c = a + b * np.log10(m / (1e12 / h))
    if dex_scatter > 0:
        if rng is None:
            raise ValueError("dex_scatter > 0 needs an rng")
        log_c = log_c + rng.normal(0.0, dex_scatter, size=m.shape)
    return c_factor * 10.0**log_c


def magnitude_to_cps(magnitude: np.ndarray | float, zero_point: float) -> np.ndarray:
    """Counts per second of a source of the given AB magnitude (lenstronomy ``data_util.magnitude2cps``)."""
    return 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=float) - zero_point))


def background_sigma(
    *,
    pixel_scale: float,
    exposure_time: float,
    sky_brightness: float,
    read_noise: float,
    magnitude_zero_point: float,
    num_exposures: int = 1,
) -> float:
    """Gaussian background σ per pixel in e⁻/s (lenstronomy ``data_util.bkg_noise``).

    Check value: 0.00412 e⁻/s at 0.04"/pix, 2200 s, sky 21.83 mag/arcsec², RN 3, ZP 25.127 (spec §7 #6).
    """
    sky_cps = float(magnitude_to_cps(sky_brightness, magnitude_zero_point)) * pixel_scale**2
    t = num_exposures * exposure_time
    return math.sqrt(num_exposures * read_noise**2 + t * sky_cps) / t
