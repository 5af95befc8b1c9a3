"""Per-image draws of the lens scene: main deflector, shear, multipoles, light and subhalo population.

Implements the generative model of Zhang, Şengül & Dvorkin (2023) (spec/science.md §1): an EPL main lens with
external shear and m = 3, 4 multipoles, a Sérsic lens light, a Sérsic source, and a population of EPL
subhalos (training) or NFW / truncated-NFW subhalos (CDM tests) placed on the bright pixels of the smooth lensed
image, plus a negative mass sheet cancelling the subhalos' mean convergence.

A :class:`Scene` is written in lenstronomy's own vocabulary (model lists and keyword lists), so that any renderer
can be validated against lenstronomy on the same scene. Every draw comes from the image's own generator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .. import physics
from .priors import draw, draw_truncnormal
from .sources import CosmosSource

__all__ = [
    "SUBHALO_COLUMNS",
    "Scene",
    "MacroDraw",
    "draw_macro",
    "draw_subhalos",
    "place_on_bright_pixels",
    "subhalo_lens_kwargs",
    "pixel_coordinates",
]

#: Columns of the per-subhalo table (NFW/TNFW rows carry NaN in gamma/theta_E and EPL rows NaN in Rs/alpha_Rs/r_trunc).
SUBHALO_COLUMNS = ("mass", "x", "y", "gamma", "theta_E", "e1", "e2", "concentration", "Rs", "alpha_Rs", "r_trunc")

#: Slope bounds of a single subhalo (reference: truncnorm on [1.01, 2.99]).
SUBHALO_GAMMA_BOUNDS = (1.01, 2.99)


@dataclass
class Scene:
    """One lens system in lenstronomy form, plus the flat table row of everything drawn."""

    z_lens: float
    z_source: float
    lens_model_list: list[str]
    kwargs_lens: list[dict[str, float]]
    source_model_list: list[str]
    kwargs_source: list[dict[str, Any]]
    lens_light_model_list: list[str]
    kwargs_lens_light: list[dict[str, float]]
    params: dict[str, float] = field(default_factory=dict)
    subhalos: np.ndarray = field(default_factory=lambda: np.zeros((0, len(SUBHALO_COLUMNS))))
    #: redshift of every lens component for multi-plane ray tracing (line-of-sight halos); None = single plane
    lens_redshift_list: list[float] | None = None
    los: np.ndarray | None = None
    #: lensed point source (``lens.point_source``) as lenstronomy 'LENSED_POSITION' images: ``ra_image``,
    #: ``dec_image`` (arcsec), ``magnification`` (signed μ of each image) and ``source_amp`` (unlensed flux, e⁻/s,
    #: in the band of this scene); image i has flux |μ_i|·source_amp. None = no point source.
    point_source: dict[str, Any] | None = None

    @property
    def n_macro(self) -> int:
        """Number of leading lens components that are not subhalos (main lens, shear, multipoles)."""
        return int(self.params.get("n_macro", len(self.lens_model_list)))


@dataclass
class MacroDraw:
    """The smooth part of a scene: main lens, shear, multipoles and light, without substructure."""

    z_lens: float
    z_source: float
    lens_model_list: list[str]
    kwargs_lens: list[dict[str, float]]
    source_model_list: list[str]
    kwargs_source: list[dict[str, Any]]
    lens_light_model_list: list[str]
    kwargs_lens_light: list[dict[str, float]]
    params: dict[str, float]


def pixel_coordinates(num_pix: int, pixel_scale: float) -> np.ndarray:
    """Coordinates (arcsec) of pixel centres along one axis; 0 lies at pixel (N−1)/2 as in lenstronomy ``make_grid``."""
    return (np.arange(num_pix) - (num_pix - 1) / 2.0) * pixel_scale


@functools.lru_cache(maxsize=1)
def _sersic_light_model() -> Any:
    from lenstronomy.LightModel.light_model import LightModel

    return LightModel(["SERSIC_ELLIPSE"])


def _sersic_amp(magnitude: float, kwargs: dict[str, float], zero_point: float) -> float:
    """lenstronomy 'amp' of a SERSIC_ELLIPSE whose total flux is ``magnitude`` (SimAPI.magnitude2amplitude)."""
    norm = _sersic_light_model().total_flux([dict(kwargs, amp=1.0)], norm=True)[0]
    return float(physics.magnitude_to_cps(magnitude, zero_point)) / norm


def draw_macro(rng: np.random.Generator, lens_cfg: Mapping[str, Any], zero_point: float, epl_model: str = "EPL",
               cosmos: CosmosSource | None = None, cosmology: str = "planck18") -> MacroDraw:
    """Draw redshifts, the EPL main lens, shear, multipoles, lens light and source (spec §1.1).

    The source is a Sérsic profile (``lens.source.type: sersic``) or a COSMOS galaxy drawn by ``cosmos``.
    ``lens.main.sigma_v`` (km/s, instead of ``theta_E``) draws a velocity dispersion and sets θE from it and the
    redshifts (:func:`lensinfer.physics.sis_theta_e`, as the flow seeds' deeplenstronomy simulations); the column
    ``lens_sigma_v`` is then added (drawn just before θE would be, so the other draws keep their order).
    ``lens.light_traces_mass``: the lens light takes the main lens's ellipticity (e1, e2), as lens models that tie
    the light's shape to the mass's do.
    """
    p: dict[str, float] = {}
    p["z_lens"] = draw(lens_cfg["z_lens"], rng)
    p["z_source"] = draw(lens_cfg["z_source"], rng)
    if not p["z_source"] > p["z_lens"]:
        raise ValueError(f"drew z_source={p['z_source']:.3f} <= z_lens={p['z_lens']:.3f}: fix the redshift priors")
    main = lens_cfg["main"]
    for k in ("theta_E", "gamma", "e1", "e2", "center_x", "center_y"):
        if k == "theta_E" and main.get("sigma_v") is not None:
            p["lens_sigma_v"] = float(draw(main["sigma_v"], rng))
            p["lens_theta_E"] = physics.sis_theta_e(p["lens_sigma_v"], p["z_lens"], p["z_source"], cosmology)
            continue
        p[f"lens_{k}"] = draw(main[k], rng)
    lens_models = [epl_model]
    kwargs_lens: list[dict[str, float]] = [{k: p[f"lens_{k}"] for k in ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")}]
    cx, cy = p["lens_center_x"], p["lens_center_y"]
    shear = lens_cfg.get("shear")
    if shear:
        p["shear_gamma1"] = draw(shear["gamma1"], rng)
        p["shear_gamma2"] = draw(shear["gamma2"], rng)
        lens_models.append("SHEAR")
        kwargs_lens.append({"gamma1": p["shear_gamma1"], "gamma2": p["shear_gamma2"], "ra_0": 0.0, "dec_0": 0.0})
    multipoles = lens_cfg.get("multipoles")
    if multipoles:
        for m in (3, 4):
            p[f"multipole{m}_a"] = draw(multipoles["a_m"], rng)
            p[f"multipole{m}_phi"] = draw(multipoles["phi_m"], rng)
            lens_models.append("MULTIPOLE")
            kwargs_lens.append(
                {"m": m, "a_m": p[f"multipole{m}_a"], "phi_m": p[f"multipole{m}_phi"], "center_x": cx, "center_y": cy}
            )
    p["n_macro"] = len(lens_models)

    light_models: list[str] = []
    kwargs_light: list[dict[str, float]] = []
    lens_light = lens_cfg.get("lens_light")
    if lens_light:
        for k in ("magnitude", "R_sersic", "n_sersic", "e1", "e2"):
            p[f"lens_light_{k}"] = draw(lens_light[k], rng)
        if lens_cfg.get("light_traces_mass"):  # drawn above all the same: every later draw keeps its value
            p["lens_light_e1"], p["lens_light_e2"] = p["lens_e1"], p["lens_e2"]
        p["lens_light_R_sersic"] = max(p["lens_light_R_sersic"], 0.05)
        kw = {k: p[f"lens_light_{k}"] for k in ("R_sersic", "n_sersic", "e1", "e2")}
        kw.update(center_x=cx, center_y=cy)
        p["lens_light_amp"] = kw["amp"] = _sersic_amp(p["lens_light_magnitude"], kw, zero_point)
        light_models.append("SERSIC_ELLIPSE")
        kwargs_light.append(kw)

    source = lens_cfg["source"]
    if source["type"] == "cosmos":
        if cosmos is None:
            raise ValueError("lens.source.type is 'cosmos' but no COSMOS catalog was given")
        p["source_center_x"] = draw(source["center_x"], rng)
        p["source_center_y"] = draw(source["center_y"], rng)
        src_models, src_kwargs, extra = cosmos.draw(rng, p["z_source"], p["source_center_x"], p["source_center_y"])
        p.update(extra)
    else:
        for k in ("magnitude", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y"):
            p[f"source_{k}"] = draw(source[k], rng)
        kw_src = {k: p[f"source_{k}"] for k in ("R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
        p["source_amp"] = kw_src["amp"] = _sersic_amp(p["source_magnitude"], kw_src, zero_point)
        src_models, src_kwargs = ["SERSIC_ELLIPSE"], [kw_src]
    return MacroDraw(
        z_lens=p["z_lens"],
        z_source=p["z_source"],
        lens_model_list=lens_models,
        kwargs_lens=kwargs_lens,
        source_model_list=src_models,
        kwargs_source=src_kwargs,
        lens_light_model_list=light_models,
        kwargs_lens_light=kwargs_light,
        params=p,
    )


#: relative flux below which a pixel of the smooth image counts as empty (FFT round-off level, see below)
NUMERICAL_ZERO = 1e-12


def place_on_bright_pixels(
    rng: np.random.Generator, smooth_image: np.ndarray, n: int, pixel_scale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Subhalo positions on pixels brighter than ``threshold × max`` of the smooth lensed image (spec §1.2).

    Pixels are chosen uniformly with replacement and jittered by U(−Δ/2, Δ/2) in x and y. ``threshold = 0`` keeps
    every pixel with positive flux (the reference's NFW/tNFW tests); "positive" means above
    :data:`NUMERICAL_ZERO` × max, because FFT convolution leaves ±1e-17-relative round-off where the flux is exactly
    zero (COSMOS stamps), whose sign would otherwise depend on the renderer. Image rows are y, columns x.
    """
    if n == 0:
        return np.zeros(0), np.zeros(0)
    peak = float(smooth_image.max())
    level = max(float(threshold), NUMERICAL_ZERO) * peak
    rows, cols = np.nonzero(smooth_image > level if peak > 0 else np.ones_like(smooth_image, bool))
    if rows.size == 0:
        rows, cols = np.nonzero(np.ones_like(smooth_image, bool))
    pick = rng.integers(0, rows.size, n)
    coords = pixel_coordinates(smooth_image.shape[0], pixel_scale)
    x = coords[cols[pick]] + rng.uniform(-pixel_scale / 2, pixel_scale / 2, n)
    y = coords[rows[pick]] + rng.uniform(-pixel_scale / 2, pixel_scale / 2, n)
    return x, y


def draw_subhalos(
    rng: np.random.Generator,
    *,
    n_sub: int,
    gamma_pop: float,
    population: Mapping[str, Any],
    subhalo_cfg: Mapping[str, Any],
    plane: physics.LensPlane,
    lens_center: tuple[float, float],
    positions: tuple[np.ndarray, np.ndarray],
    h: float,
) -> np.ndarray:
    """Draw masses, slopes/concentrations and ellipticities of ``n_sub`` subhalos (rows of :data:`SUBHALO_COLUMNS`).

    EPL (training, spec §1.2): γ_i ~ truncnorm(γ_pop, s·γ_pop, [1.01, 2.99]) with s = ``gamma_scatter``; θE from the
    mass by :func:`lensinfer.physics.epl_m2thetae`. NFW / TNFW (CDM tests): Dutton & Macciò (2014) concentration
    × ``c_factor`` with ``dex_scatter``; TNFW truncation r_t = 1.4 kpc (m/1e7)^(1/3) (r/50 kpc)^(2/3) with r the
    projected distance to the lens centre (paltas ``SubhalosDG19.get_truncation_radius``).
    """
    out = np.full((n_sub, len(SUBHALO_COLUMNS)), np.nan)
    if n_sub == 0:
        return out
    col = {c: i for i, c in enumerate(SUBHALO_COLUMNS)}
    mass = physics.sample_power_law_mass(
        rng, n_sub, 10.0 ** subhalo_cfg["log10_mass"][0], 10.0 ** subhalo_cfg["log10_mass"][1], subhalo_cfg["beta"]
    )
    out[:, col["mass"]] = mass
    out[:, col["x"]], out[:, col["y"]] = positions
    profile = population["profile"]
    if profile == "EPL":
        scatter = float(subhalo_cfg["gamma_scatter"])
        g = draw_truncnormal(rng, gamma_pop, scatter * gamma_pop, *SUBHALO_GAMMA_BOUNDS, size=n_sub)
        out[:, col["gamma"]] = g
        out[:, col["theta_E"]] = physics.epl_m2thetae(mass, g, plane.sigma_crit, plane.rho_crit)
        out[:, col["e1"]] = draw(subhalo_cfg["e1"], rng, n_sub)
        out[:, col["e2"]] = draw(subhalo_cfg["e2"], rng, n_sub)
    elif profile in ("NFW", "TNFW"):
        from lenstronomy.Cosmo.lens_cosmo import LensCosmo

        c = physics.dm14_concentration(
            mass, plane.z_lens, h=h, dex_scatter=float(population["dex_scatter"]),
            c_factor=float(population["c_factor"]), rng=rng,
        )
        lc = LensCosmo(plane.z_lens, plane.z_source, cosmo=physics.get_cosmology(plane.cosmology))
        rs, alpha_rs = lc.nfw_physical2angle(mass, c)
        out[:, col["concentration"]] = c
        out[:, col["Rs"]] = rs
        out[:, col["alpha_Rs"]] = alpha_rs
        if profile == "TNFW":
            r_kpc = np.hypot(positions[0] - lens_center[0], positions[1] - lens_center[1]) * plane.kpc_per_arcsec
            r_t_kpc = 1.4 * (mass / 1e7) ** (1.0 / 3.0) * (np.maximum(r_kpc, 1e-3) / 50.0) ** (2.0 / 3.0)
            out[:, col["r_trunc"]] = r_t_kpc / plane.kpc_per_arcsec
    else:
        raise ValueError(f"unknown subhalo profile {profile!r}; allowed: EPL, NFW, TNFW")
    return out


def subhalo_lens_kwargs(subhalos: np.ndarray, profile: str, epl_model: str = "EPL") -> tuple[list[str], list[dict[str, float]]]:
    """lenstronomy model list and keyword list of a subhalo table."""
    col = {c: i for i, c in enumerate(SUBHALO_COLUMNS)}
    models: list[str] = []
    kwargs: list[dict[str, float]] = []
    for row in subhalos:
        if profile == "EPL":
            models.append(epl_model)
            kwargs.append({"theta_E": row[col["theta_E"]], "gamma": row[col["gamma"]], "e1": row[col["e1"]],
                           "e2": row[col["e2"]], "center_x": row[col["x"]], "center_y": row[col["y"]]})
        else:
            models.append(profile)
            kw = {"Rs": row[col["Rs"]], "alpha_Rs": row[col["alpha_Rs"]], "center_x": row[col["x"]], "center_y": row[col["y"]]}
            if profile == "TNFW":
                kw["r_trunc"] = row[col["r_trunc"]]
            kwargs.append(kw)
    return models, kwargs

