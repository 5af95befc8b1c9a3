"""Line-of-sight halos: paltas' DG19 model (Şengül et al. 2020) converted to EPL or NFW profiles (spec §1.3).

Per redshift slice [z, z + dz) from ``z_min`` to ``z_source − dz``, the expected number of halos is paltas' power-law
fit to the Sheth–Tormen mass function × the slice's cone volume × the two-halo boost of the main lens (its M200
from θE and γ_lens, :func:`lensinfer.physics.epl_thetae2m200`) × ``delta_los``; the number is Poisson, masses follow
the power law and positions are uniform in the cone's disk. paltas draws all of these from numpy's global generator;
here paltas only provides the deterministic ingredients (``power_law_dn_dm``, ``volume_element``,
``two_halo_boost``, ``cone_angle_to_radius``) and every random draw comes from the image's generator.

Training sets convert each halo to an EPL with the image's population slope (e1, e2 ~ U(−0.2, 0.2), θE from its
mass with Σ_crit and ρ_c of its plane), as the reference's ``LOSDG19_epl``. Its slope is drawn from
truncnorm(γ_pop, σ, [1.01, 2.99]) with s = ``subhalos.gamma_scatter`` (0.1) and, by ``lens.los.gamma_scatter``:

- ``reference``: σ = s·γ_pop² — what the published run drew. The reference's make_images.py passes the width
  γ_pop·s to ``LOSDG19_epl``, whose draw (utils.py, ``g_scale = self.gamma*self.gamma_width``) multiplies it by
  γ_pop again (spec/science.md §1.3, corrected; at γ_pop = 2.5 σ is 0.63 instead of 0.25);
- ``relative``: σ = s·γ_pop, the relative scatter the subhalos get (spec §1.2) and that the quirk presumably meant.

CDM test sets use NFW halos with the Dutton & Macciò (2014) concentration and ``dex_scatter`` of the population,
**not** multiplied by the population's ``c_factor`` and not truncated, as in the reference (its
``convert_to_lenstronomy_nfw`` calls ``mass_to_concentration`` without the concentration factor): a CDM sweep over
``c_factor`` scales the subhalo concentrations only. Each slice gets a negative convergence sheet cancelling the mean
convergence of its halos over the field. All halos of a slice sit at z + dz/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .. import physics
from ..compat import import_paltas
from .priors import draw, draw_truncnormal

__all__ = ["LOS_COLUMNS", "SCATTER_MODES", "LosHalos", "LineOfSight"]

#: per-halo table of the LOS halos of an image
LOS_COLUMNS = ("z", "mass", "x", "y", "gamma", "theta_E", "e1", "e2", "Rs", "alpha_Rs")

#: ``lens.los.gamma_scatter`` values: the reference code's σ = s·γ² and the relative σ = s·γ
SCATTER_MODES = ("reference", "relative")

#: DG19 concentration parameters paltas requires but the EPL/NFW converters do not use (spec §1.3)
_UNUSED_DG19 = {"c_0": 17.0, "conc_zeta": -0.25, "conc_beta": 0.7, "conc_m_ref": 1e8, "dex_scatter": 0.13,
                "alpha_dz_factor": 5.0}


@dataclass
class LosHalos:
    """LOS halos of one image in lenstronomy form plus their table and slice sheets."""

    models: list[str] = field(default_factory=list)
    kwargs: list[dict[str, float]] = field(default_factory=list)
    redshifts: list[float] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, len(LOS_COLUMNS))))
    delta_los: float = 0.0


class LineOfSight:
    """Draw DG19 line-of-sight halos for images of one configuration (``lens.los`` section)."""

    def __init__(self, los_cfg: Mapping[str, Any], cosmology: str = "planck18") -> None:
        import_paltas()
        from paltas.Substructure.los_dg19 import LOSDG19

        self.cfg = dict(los_cfg)
        self.cosmology = cosmology
        self._los_cls = LOSDG19
        self._params = {k: float(self.cfg[k]) for k in ("m_min", "m_max", "z_min", "dz", "cone_angle", "r_min", "r_max")}
        self.scatter_mode  # noqa: B018 — a bad lens.los.gamma_scatter fails here, before any draw

    @property
    def scatter_mode(self) -> str:
        """``lens.los.gamma_scatter``: 'reference' (σ = s·γ², the published run) or 'relative' (σ = s·γ)."""
        mode = str(self.cfg.get("gamma_scatter", "relative"))
        if mode not in SCATTER_MODES:
            raise ValueError(f"lens.los.gamma_scatter: {mode!r} is not one of {list(SCATTER_MODES)}")
        return mode

    def slope_width(self, gamma_pop: float, gamma_scatter: float) -> float:
        """Scale σ of the truncated normal of the LOS EPL slopes: s·γ_pop² ('reference', the quirk of the
        reference's ``LOSDG19_epl``) or s·γ_pop ('relative'); s = ``subhalos.gamma_scatter``."""
        width = gamma_scatter * gamma_pop
        return width * gamma_pop if self.scatter_mode == "reference" else width

    def _model(self, z_lens: float, z_source: float, lens_m200: float, delta_los: float) -> Any:
        return self._los_cls(
            dict(self._params, delta_los=delta_los, **_UNUSED_DG19),
            {"M200": lens_m200, "z_lens": z_lens},
            {"z_source": z_source},
            self.cosmology,
        )

    def draw(self, rng: np.random.Generator, *, z_lens: float, z_source: float, theta_e: float, gamma_lens: float,
             gamma_pop: float, profile: str, gamma_scatter: float, population: Mapping[str, Any],
             subhalo_cfg: Mapping[str, Any], h: float, epl_model: str = "EPL") -> LosHalos:
        """All LOS halos of one image (``profile`` 'EPL' for training sets, 'NFW'/'TNFW' → NFW halos for CDM tests).

        ``gamma_scatter`` is the relative per-halo scatter s (``subhalos.gamma_scatter``); the width of the EPL slope
        draw is :meth:`slope_width` (s·γ² or s·γ by ``lens.los.gamma_scatter``).
        """
        from lenstronomy.Cosmo.lens_cosmo import LensCosmo

        main = physics.LensPlane(z_lens, z_source, self.cosmology)
        lens_m200 = float(physics.epl_thetae2m200(theta_e, gamma_lens, main.sigma_crit, main.rho_crit))
        delta_los = float(draw(self.cfg["delta_los"], rng))
        los = self._model(z_lens, z_source, lens_m200, delta_los)
        dz, m_min, m_max = self._params["dz"], self._params["m_min"], self._params["m_max"]
        out = LosHalos(delta_los=delta_los)
        rows = []
        for z in np.round(np.arange(self._params["z_min"], z_source - dz, dz), 2):
            z = float(z)
            slope, norm = los.power_law_dn_dm(z + dz / 2, m_min, m_max)
            norm *= los.volume_element(z, z_lens, z_source, dz, self._params["cone_angle"])
            norm *= los.two_halo_boost(z, z_lens, dz, lens_m200, self._params["r_max"], self._params["r_min"])
            norm *= max(delta_los, 0.0)
            s1 = slope + 1.0
            n = int(rng.poisson(norm * (m_max**s1 - m_min**s1) / s1))
            if n == 0:
                continue
            mass = physics.sample_power_law_mass(rng, n, m_min, m_max, slope)
            r_kpc = los.cone_angle_to_radius(z + dz / 2, z_lens, z_source, self._params["cone_angle"]) * np.sqrt(rng.random(n))
            phi = 2.0 * math.pi * rng.random(n)
            kpc_per_arcsec = physics.kpc_per_arcsec(z, self.cosmology)
            x, y = r_kpc * np.cos(phi) / kpc_per_arcsec, r_kpc * np.sin(phi) / kpc_per_arcsec
            z_plane = z + dz / 2
            plane = physics.LensPlane(z_plane, z_source, self.cosmology)
            block = np.full((n, len(LOS_COLUMNS)), np.nan)
            block[:, 0], block[:, 1], block[:, 2], block[:, 3] = z_plane, mass, x, y
            if profile == "EPL":
                g = draw_truncnormal(rng, gamma_pop, self.slope_width(gamma_pop, gamma_scatter), 1.01, 2.99, size=n)
                block[:, 4] = g
                block[:, 5] = physics.epl_m2thetae(mass, g, plane.sigma_crit, plane.rho_crit)
                block[:, 6] = draw(subhalo_cfg["e1"], rng, n)
                block[:, 7] = draw(subhalo_cfg["e2"], rng, n)
            else:
                # the reference does not scale LOS concentrations by the population's c_factor (module docstring)
                c = physics.dm14_concentration(mass, z_plane, h=h, dex_scatter=float(population["dex_scatter"]),
                                               c_factor=1.0, rng=rng)
                lc = LensCosmo(z_plane, z_source, cosmo=physics.get_cosmology(self.cosmology))
                block[:, 8], block[:, 9] = lc.nfw_physical2angle(mass, c)
            rows.append(block)
        out.table = np.concatenate(rows) if rows else out.table
        for row in out.table:
            if profile == "EPL":
                out.models.append(epl_model)
                out.kwargs.append({"theta_E": row[5], "gamma": row[4], "e1": row[6], "e2": row[7],
                                   "center_x": row[2], "center_y": row[3]})
            else:
                out.models.append("NFW")
                out.kwargs.append({"Rs": row[8], "alpha_Rs": row[9], "center_x": row[2], "center_y": row[3]})
            out.redshifts.append(float(row[0]))
        return out
