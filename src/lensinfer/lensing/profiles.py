"""The lenstronomy vocabulary understood by the torch renderer: profile names, keyword lists and their functions.

Each lenstronomy model name maps to a :class:`Profile`. Several names can share one canonical group (``EPL_NUMBA``
is the same physics as ``EPL``; ``SERSIC`` is ``SERSIC_ELLIPSE`` with e1 = e2 = 0), so that all components of a
kind are evaluated together. ``prepare`` turns the keyword tensors of a group into the tensors that ``deflection``
takes; both broadcast, so the same pair serves one halo, a padded batch, or a fused kernel. Padded slots hold
``padding`` values, chosen so that a padded slot deflects and emits exactly nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor

from .epl import EPLCoefficients, epl_coefficients, epl_convergence, epl_deflection_from_coefficients, epl_series_length
from .light import sersic_ellipse
from .multipole import multipole_deflection
from .nfw import nfw_convergence, nfw_deflection, tnfw_convergence, tnfw_deflection
from .shear import shear_deflection

__all__ = [
    "EPL_TERMS_STEP",
    "epl_terms",
    "LENS_PROFILES",
    "LIGHT_PROFILES",
    "Profile",
    "sheet_deflection",
]

Prepare = Callable[[Mapping[str, Tensor]], tuple[Tensor, ...]]
Deflection = Callable[..., tuple[Tensor, Tensor]]


def sheet_deflection(
    x: Tensor, y: Tensor, kappa: Tensor, ra_0: Tensor | float = 0.0, dec_0: Tensor | float = 0.0
) -> tuple[Tensor, Tensor]:
    """Deflection κ (x − ra_0, y − dec_0) of a uniform mass sheet (lenstronomy 'CONVERGENCE', key ``kappa``)."""
    return kappa * (x - ra_0), kappa * (y - dec_0)


@dataclass(frozen=True)
class Profile:
    """A lenstronomy profile as the renderer sees it.

    ``params`` are lenstronomy's keywords in the order the functions take them; ``defaults`` fill optional ones;
    ``padding`` are neutral values for padded slots (zero deflection, zero light); ``ignored`` keywords are
    accepted (lenstronomy takes them) but have no effect in the implemented branch.
    """

    name: str
    params: tuple[str, ...]
    padding: Mapping[str, float]
    defaults: Mapping[str, float] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    deflection: Deflection | None = None
    prepare: Prepare | None = None
    convergence: Callable[..., Tensor] | None = None
    light: Callable[..., Tensor] | None = None


#: The EPL series length is rounded up to a multiple of this.
EPL_TERMS_STEP = 8

_EPL_PARAMS = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")
_NFW_PARAMS = ("Rs", "alpha_Rs", "center_x", "center_y")
_TNFW_PARAMS = ("Rs", "alpha_Rs", "r_trunc", "center_x", "center_y")
_SHEAR_PARAMS = ("gamma1", "gamma2", "ra_0", "dec_0")
_MULTIPOLE_PARAMS = ("m", "a_m", "phi_m", "center_x", "center_y")
_SHEET_PARAMS = ("kappa", "ra_0", "dec_0")
_SERSIC_PARAMS = ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
_CENTER = {"center_x": 0.0, "center_y": 0.0}


def epl_terms(e1: Tensor, e2: Tensor) -> int:
    """Series length for EPLs with these ellipticities: from the largest f = |e| (exactly f = (1 − q)/(1 + q)),
    rounded up to a multiple of :data:`EPL_TERMS_STEP` so that a run compiles few kernel variants."""
    f_max = float(torch.clamp(torch.hypot(e1, e2), max=0.9999).max()) if e1.numel() else 0.0
    return EPL_TERMS_STEP * math.ceil(epl_series_length(f_max) / EPL_TERMS_STEP)


def _prepare_epl(params: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
    """TM15 coefficients with :func:`epl_terms` series terms."""
    n_terms = epl_terms(params["e1"], params["e2"])
    return tuple(epl_coefficients(*(params[n] for n in _EPL_PARAMS), n_terms=n_terms))


def _epl_from_tuple(x: Tensor, y: Tensor, *coefficients: Tensor) -> tuple[Tensor, Tensor]:
    return epl_deflection_from_coefficients(x, y, EPLCoefficients(*coefficients))


def _in_order(names: tuple[str, ...]) -> Prepare:
    return lambda params: tuple(params[n] for n in names)


_EPL = Profile(
    name="EPL",
    params=_EPL_PARAMS,
    padding={"theta_E": 0.0, "gamma": 2.0, "e1": 0.0, "e2": 0.0, **_CENTER},
    defaults=_CENTER,
    deflection=_epl_from_tuple,
    prepare=_prepare_epl,
    convergence=epl_convergence,
)

#: lenstronomy lens model name → profile (lenstronomy 1.14.0 keywords).
LENS_PROFILES: dict[str, Profile] = {
    "EPL": _EPL,
    "EPL_NUMBA": _EPL,
    "NFW": Profile(
        name="NFW",
        params=_NFW_PARAMS,
        padding={"Rs": 1.0, "alpha_Rs": 0.0, **_CENTER},
        defaults=_CENTER,
        deflection=nfw_deflection,
        prepare=_in_order(_NFW_PARAMS),
        convergence=nfw_convergence,
    ),
    "TNFW": Profile(
        name="TNFW",
        params=_TNFW_PARAMS,
        padding={"Rs": 1.0, "alpha_Rs": 0.0, "r_trunc": 1.0, **_CENTER},
        defaults=_CENTER,
        deflection=tnfw_deflection,
        prepare=_in_order(_TNFW_PARAMS),
        convergence=tnfw_convergence,
    ),
    "SHEAR": Profile(
        name="SHEAR",
        params=_SHEAR_PARAMS,
        padding={"gamma1": 0.0, "gamma2": 0.0, "ra_0": 0.0, "dec_0": 0.0},
        defaults={"ra_0": 0.0, "dec_0": 0.0},
        deflection=shear_deflection,
        prepare=_in_order(_SHEAR_PARAMS),
        convergence=lambda x, y, *p: torch.zeros_like(x + p[0]),
    ),
    "MULTIPOLE": Profile(
        name="MULTIPOLE",
        params=_MULTIPOLE_PARAMS,
        padding={"m": 2.0, "a_m": 0.0, "phi_m": 0.0, **_CENTER},
        defaults=_CENTER,
        ignored=("r_E",),
        deflection=multipole_deflection,
        prepare=_in_order(_MULTIPOLE_PARAMS),
    ),
    "CONVERGENCE": Profile(
        name="CONVERGENCE",
        params=_SHEET_PARAMS,
        padding={"kappa": 0.0, "ra_0": 0.0, "dec_0": 0.0},
        defaults={"ra_0": 0.0, "dec_0": 0.0},
        deflection=sheet_deflection,
        prepare=_in_order(_SHEET_PARAMS),
        convergence=lambda x, y, kappa, *_: torch.zeros_like(x) + kappa,
    ),
}

_SERSIC_PADDING = {"amp": 0.0, "R_sersic": 1.0, "n_sersic": 1.0, "e1": 0.0, "e2": 0.0, **_CENTER}
#: lenstronomy light model name → profile.
LIGHT_PROFILES: dict[str, Profile] = {
    "SERSIC_ELLIPSE": Profile(
        name="SERSIC_ELLIPSE",
        params=_SERSIC_PARAMS,
        padding=_SERSIC_PADDING,
        defaults=_CENTER,
        prepare=_in_order(_SERSIC_PARAMS),
        light=sersic_ellipse,
    ),
    "SERSIC": Profile(
        name="SERSIC_ELLIPSE",
        params=_SERSIC_PARAMS,
        padding=_SERSIC_PADDING,
        defaults={"e1": 0.0, "e2": 0.0, **_CENTER},
        prepare=_in_order(_SERSIC_PARAMS),
        light=sersic_ellipse,
    ),
}
