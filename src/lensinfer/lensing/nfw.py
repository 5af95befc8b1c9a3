"""NFW and truncated-NFW deflections and convergences, analytic, in torch (lenstronomy 'NFW' / 'TNFW' conventions).

Both profiles are parameterised as in lenstronomy 1.14.0: scale radius ``Rs`` (arcsec), deflection at Rs of the
untruncated NFW ``alpha_Rs`` (arcsec), and for TNFW the truncation radius ``r_trunc`` (arcsec). The density
normalisation is ρ0 = α_Rs / (4 Rs² (1 + ln ½)) in both (the truncation is neglected in it, as in lenstronomy).

* NFW (Bartelmann 1996; Wright & Brainerd 2000): with X = R/Rs, α(R) = 4 ρ0 Rs g(X)/X² · (x, y),
  g(X) = ln(X/2) + F(X), κ = 2 ρ0 Rs (1 − F(X))/(X² − 1).
* TNFW (Baltz, Marshall & Oguri 2009, JCAP 01, 015; ρ ∝ r_t²/(r² + r_t²) × NFW) with τ = r_t/Rs,
  L = ln(X/(τ + √(τ² + X²))):
  g(X, τ) = τ²/(τ² + 1)² [(τ² + 1 + 2(X² − 1)) F(X) + πτ + (τ² − 1) ln τ + √(τ² + X²)(−π + (τ² − 1) L/τ)],
  κ = 2 ρ0 Rs · τ²/(τ² + 1)² [(τ² + 1)(1 − F)/(X² − 1) + 2F − π/√(τ² + X²) + (τ² − 1) L/(τ √(τ² + X²))].

Here F(X) = arccosh(1/X)/√(1 − X²) for X < 1, arccos(1/X)/√(X² − 1) for X > 1. Both branches, and
(1 − F)/(X² − 1), are evaluated through s = 1 − X² with a Taylor series for |s| < 1e-3, which removes the
cancellation near X = 1 (lenstronomy's closed forms lose ~5 digits there). For X < ½ the NFW g(X) = O(X² ln X) is
the difference of two logarithms; it is rewritten without cancellation as
g = [X² ln(2/X)/(1 + σ) + log1p(−X²/(2(1 + σ)))]/σ with σ = √(1 − X²) (lenstronomy loses ~6 digits at X = 1e-5;
such deflections are tiny in absolute terms). The TNFW g keeps the closed form (X ≥ 0.001 there).

Regularisations copied from lenstronomy: NFW floors Rs at 1e-7, R at 1e-8 and X at 1e-6; TNFW floors R at
0.001 Rs and X at 0.001. The floors act on the radius only, so the deflection stays ∝ (x, y) near the centre.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "nfw_convergence",
    "nfw_deflection",
    "tnfw_convergence",
    "tnfw_deflection",
]

_SERIES_S = 1e-3
_TNFW_FLOOR = 0.001


def _f_and_slope(x: Tensor) -> tuple[Tensor, Tensor]:
    """F(X) and (1 − F(X))/(X² − 1) for X > 0, stable across X = 1."""
    s = 1.0 - x * x
    near = s.abs() < _SERIES_S
    s_in = torch.where(s > 0, s, torch.ones_like(s))
    s_out = torch.where(s < 0, -s, torch.ones_like(s))
    root_in, root_out = torch.sqrt(s_in), torch.sqrt(s_out)
    f_in = torch.log((1.0 + root_in) / x) / root_in  # arccosh(1/X)/√(1 − X²)
    f_out = torch.atan(root_out) / root_out  # arccos(1/X)/√(X² − 1)
    # F = Σ_k s^k/(2k+1) and (1 − F)/(X² − 1) = Σ_{k≥1} s^(k−1)/(2k+1), to s^5 (error < 1e-19 for |s| < 1e-3)
    f_ser = 1.0 + s * (1 / 3 + s * (1 / 5 + s * (1 / 7 + s * (1 / 9 + s * (1 / 11)))))
    slope_ser = 1 / 3 + s * (1 / 5 + s * (1 / 7 + s * (1 / 9 + s * (1 / 11 + s / 13))))
    f = torch.where(near, f_ser, torch.where(s > 0, f_in, f_out))
    denom = torch.where(near, torch.ones_like(s), -s)
    slope = torch.where(near, slope_ser, (1.0 - f) / denom)
    return f, slope


def _nfw_g(x: Tensor) -> Tensor:
    """NFW g(X) = ln(X/2) + F(X), free of cancellation for small X (see module docstring)."""
    f, _ = _f_and_slope(x)
    closed = torch.log(x / 2.0) + f
    small = x < 0.5
    xs = torch.where(small, x, torch.zeros_like(x))
    sigma = torch.sqrt(1.0 - xs * xs)
    x2 = xs * xs
    stable = (
        x2 * torch.log(2.0 / torch.where(small, x, torch.ones_like(x))) / (1.0 + sigma)
        + torch.log1p(-x2 / (2.0 * (1.0 + sigma)))
    ) / sigma
    return torch.where(small, stable, closed)


def _rho0_rs(Rs: Tensor, alpha_Rs: Tensor) -> Tensor:
    """ρ0 · Rs with ρ0 = α_Rs / (4 Rs² (1 + ln ½)) (lenstronomy ``NFW.alpha2rho0``)."""
    return alpha_Rs / (4.0 * Rs * (1.0 + math.log(0.5)))


def nfw_deflection(
    x: Tensor, y: Tensor, Rs: Tensor, alpha_Rs: Tensor, center_x: Tensor | float = 0.0, center_y: Tensor | float = 0.0
) -> tuple[Tensor, Tensor]:
    """NFW deflection (α_x, α_y), lenstronomy ``NFW.derivatives`` signature; arguments broadcast."""
    rs = torch.clamp(Rs, min=1e-7)
    rho_rs = _rho0_rs(Rs, alpha_Rs) * rs / Rs  # ρ0 from the unfloored Rs, times the floored Rs (as lenstronomy)
    dx = x - center_x
    dy = y - center_y
    r = torch.clamp(torch.sqrt(dx * dx + dy * dy), min=1e-8)
    xr = torch.clamp(r / rs, min=1e-6)
    a = 4.0 * rho_rs * _nfw_g(xr) / (xr * xr)
    return a * dx, a * dy


def nfw_convergence(
    x: Tensor, y: Tensor, Rs: Tensor, alpha_Rs: Tensor, center_x: Tensor | float = 0.0, center_y: Tensor | float = 0.0
) -> Tensor:
    """NFW convergence 2 ρ0 Rs (1 − F(X))/(X² − 1) (lenstronomy ``NFW.hessian``; X floored at 1e-7 as at X = 0)."""
    rs = torch.clamp(Rs, min=1e-7)
    rho_rs = _rho0_rs(Rs, alpha_Rs) * rs / Rs
    dx = x - center_x
    dy = y - center_y
    xr = torch.clamp(torch.sqrt(dx * dx + dy * dy) / rs, min=1e-7)
    _, slope = _f_and_slope(xr)
    return 2.0 * rho_rs * slope


def _tnfw_terms(x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    t2 = tau * tau
    root = torch.sqrt(t2 + x * x)
    log_l = torch.log(x / (tau + root))
    pref = t2 / (t2 + 1.0) ** 2
    return t2, root, log_l, pref


def tnfw_deflection(
    x: Tensor,
    y: Tensor,
    Rs: Tensor,
    alpha_Rs: Tensor,
    r_trunc: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Truncated-NFW deflection (Baltz et al. 2009), lenstronomy ``TNFW.derivatives`` signature; arguments broadcast."""
    rho_rs = _rho0_rs(Rs, alpha_Rs)
    dx = x - center_x
    dy = y - center_y
    r = torch.maximum(torch.sqrt(dx * dx + dy * dy), _TNFW_FLOOR * Rs)
    xr = torch.clamp(r / Rs, min=_TNFW_FLOOR)
    tau = r_trunc / Rs
    t2, root, log_l, pref = _tnfw_terms(xr, tau)
    f, _ = _f_and_slope(xr)
    g = pref * (
        (t2 + 1.0 + 2.0 * (xr * xr - 1.0)) * f
        + tau * math.pi
        + (t2 - 1.0) * torch.log(tau)
        + root * (-math.pi + log_l * (t2 - 1.0) / tau)
    )
    a = 4.0 * rho_rs * g / (xr * xr)
    return a * dx, a * dy


def tnfw_convergence(
    x: Tensor,
    y: Tensor,
    Rs: Tensor,
    alpha_Rs: Tensor,
    r_trunc: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> Tensor:
    """Truncated-NFW convergence (Baltz et al. 2009; lenstronomy ``TNFW.density_2d``, X floored at 0.001)."""
    rho_rs = _rho0_rs(Rs, alpha_Rs)
    dx = x - center_x
    dy = y - center_y
    xr = torch.clamp(torch.sqrt(dx * dx + dy * dy) / Rs, min=_TNFW_FLOOR)
    tau = r_trunc / Rs
    t2, root, log_l, pref = _tnfw_terms(xr, tau)
    f, slope = _f_and_slope(xr)
    k = pref * ((t2 + 1.0) * slope + 2.0 * f - math.pi / root + (t2 - 1.0) * log_l / (tau * root))
    return 2.0 * rho_rs * k
