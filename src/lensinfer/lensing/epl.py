"""Elliptical power-law (EPL) deflections by the Tessore & Metcalf (2015) series, in torch.

Convergence (lenstronomy 'EPL' convention, 1.14.0)::

    κ(x, y) = (3 − γ)/2 · [θ_E / √(q x'² + y'²/q)]^(γ−1)

with (x', y') the coordinates rotated onto the major axis by φ_G = ½ atan2(e2, e1) and the axis ratio
q = (1 − |e|)/(1 + |e|), |e| = √(e1² + e2²) capped at 0.9999 (``param_util.ellipticity2phi_q``).

Tessore & Metcalf (2015, A&A 580, A79, "The elliptical power law profile lens"; TM15) write it as
κ = (2 − t)/2 · (b/R)^t with t = γ − 1, b = θ_E √q and the elliptical radius R = |Z|, Z = q x' + i y' = R e^{iφ}.
The complex deflection is (TM15 eqs. 22–23, with the hypergeometric function expanded in its power series)::

    α' = 2b/(1 + q) · (b/R)^(t−1) · Ω(φ),   Ω(φ) = e^{iφ} Σ_{n≥0} c_n w^n,   w = −f e^{2iφ},  f = (1 − q)/(1 + q),
    c_0 = 1,  c_n = c_{n−1} · (2n − 2 + t)/(2n + 2 − t)

so α' = 2 b^t/(1 + q) · Z R^{−t} · S(w) with S(w) = Σ c_n w^n = ₂F₁(1, t/2; 2 − t/2; w), and the lab-frame
deflection is α = α' e^{iφ_G}. Since |c_n| ≤ 1 and |w| = f, truncating after N terms leaves a relative error
below f^N/(1 − f); :func:`epl_series_length` picks N from a tolerance as lenstronomy's 'EPL_NUMBA' does.

With u = e^{2iφ} on the unit circle, S = Σ d_n u^n with real d_n = c_n (−f)^n is a cosine/sine series in 2φ. It is
split into even and odd terms, S = E(u²) + u O(u²), and each half is summed with Clenshaw's recurrence
b_k = a_k + 2cos(4φ) b_{k+1} − b_{k+2}, E = a_0 + u² b_1 − b_2 (Clenshaw 1955; one multiply-add and one subtraction
per term). The two independent recurrences halve the dependency chain, which bounds the speed of a vectorised
loop. No transcendental function depends on the series length: per (halo, point) pair the cost is one log, one
exp, one division and ~2N additions/multiplications.

Conventions copied from lenstronomy so that images agree pixel for pixel: R is floored at 1e-9 (``EPLMajorAxis``),
and the deflection is exactly 0 at the centre (lenstronomy's ``nan_to_num``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "EPLCoefficients",
    "epl_coefficients",
    "epl_convergence",
    "epl_deflection",
    "epl_deflection_from_coefficients",
    "epl_series_length",
]

#: Relative truncation tolerance of the series; lenstronomy's 'EPL_NUMBA' uses the same 1e-16.
DEFAULT_TOL = 1e-16
_MIN_TERMS = 6
#: Floor of the elliptical radius R (lenstronomy ``EPLMajorAxis.derivatives``: 1e-9), applied to R².
_R2_FLOOR = 1e-18


class EPLCoefficients(NamedTuple):
    """Per-halo constants of the TM15 series, each broadcastable against the evaluation points.

    ``series`` holds d_n = c_n (−f)^n for n = 0 … N−1 stacked on a leading axis of length N.
    """

    center_x: Tensor
    center_y: Tensor
    cos_phi: Tensor
    sin_phi: Tensor
    q: Tensor
    half_t: Tensor
    amp_cos: Tensor
    amp_sin: Tensor
    series: Tensor


def epl_series_length(f_max: float, tol: float = DEFAULT_TOL) -> int:
    """Number of series terms N with f_max^N / (1 − f_max) ≤ tol (at least 6: two recurrences of ≥ 3 terms).

    The term bound |c_n w^n| ≤ f^n holds because |c_n| ≤ 1 for 0 ≤ t ≤ 2.
    """
    if not 0.0 <= f_max < 1.0:
        raise ValueError(f"EPL series needs 0 <= f < 1, got {f_max}")
    if f_max <= tol:
        return _MIN_TERMS
    return max(_MIN_TERMS, math.ceil(math.log(tol * (1.0 - f_max)) / math.log(f_max)))


def epl_coefficients(
    theta_E: Tensor,
    gamma: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor,
    center_y: Tensor,
    *,
    n_terms: int | None = None,
    tol: float = DEFAULT_TOL,
) -> EPLCoefficients:
    """Convert lenstronomy EPL parameters into the per-halo constants of the TM15 series.

    All parameters broadcast against each other (e.g. shape (H,) or (C, 1, K)). ``n_terms`` defaults to
    :func:`epl_series_length` of the largest f among them. θ_E = 0 gives exactly zero deflection (padding).
    """
    theta_E, gamma, e1, e2, center_x, center_y = torch.broadcast_tensors(theta_E, gamma, e1, e2, center_x, center_y)
    phi = 0.5 * torch.atan2(e2, e1)
    c = torch.clamp(torch.sqrt(e1 * e1 + e2 * e2), max=0.9999)
    q = (1.0 - c) / (1.0 + c)
    f = (1.0 - q) / (1.0 + q)
    t = gamma - 1.0
    b = theta_E * torch.sqrt(q)
    amp = 2.0 * b**t / (1.0 + q)
    if n_terms is None:
        n_terms = epl_series_length(float(f.max()) if f.numel() else 0.0, tol)
    n = torch.arange(1, n_terms, dtype=t.dtype, device=t.device).reshape((-1,) + (1,) * t.dim())
    ratios = -f * (2.0 * n - 2.0 + t) / (2.0 * n + 2.0 - t)
    series = torch.cat([torch.ones_like(t).unsqueeze(0), torch.cumprod(ratios, dim=0)], dim=0)
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    return EPLCoefficients(
        center_x=center_x,
        center_y=center_y,
        cos_phi=cos_phi,
        sin_phi=sin_phi,
        q=q,
        half_t=0.5 * t,
        amp_cos=amp * cos_phi,
        amp_sin=amp * sin_phi,
        series=series,
    )


def _clenshaw(a: Tensor, cos_v: Tensor, sin_v: Tensor) -> tuple[Tensor, Tensor]:
    """Σ_k a_k v^k for real a_k (leading axis) and v = cos_v + i sin_v on the unit circle (Clenshaw 1955)."""
    n = a.shape[0]
    two_cos = 2.0 * cos_v
    b2 = a[n - 1]
    b1 = a[n - 2] + two_cos * b2
    for j in range(n - 3, 0, -1):
        b1, b2 = a[j] + two_cos * b1 - b2, b1
    return a[0] + cos_v * b1 - b2, sin_v * b1


def epl_deflection_from_coefficients(x: Tensor, y: Tensor, k: EPLCoefficients) -> tuple[Tensor, Tensor]:
    """Deflection (α_x, α_y) at (x, y) from precomputed :class:`EPLCoefficients` (TM15 eqs. 22–23).

    Pure element-wise arithmetic (one log, one exp, one division, ~2N multiply-adds), so ``torch.compile``
    fuses it with a following reduction over halos into a single loop.
    """
    dx = x - k.center_x
    dy = y - k.center_y
    zx = k.q * (k.cos_phi * dx + k.sin_phi * dy)
    zy = k.cos_phi * dy - k.sin_phi * dx
    zx2, zy2 = zx * zx, zy * zy
    r2 = torch.clamp(zx2 + zy2, min=_R2_FLOOR)
    inv_r2 = 1.0 / r2
    cos2 = (zx2 - zy2) * inv_r2  # u = e^{2iφ} = Z/Z̄ = Z²/R²
    sin2 = 2.0 * zx * zy * inv_r2
    cos4 = 2.0 * cos2 * cos2 - 1.0  # v = u² = e^{4iφ}
    sin4 = 2.0 * sin2 * cos2
    even_re, even_im = _clenshaw(k.series[0::2], cos4, sin4)
    odd_re, odd_im = _clenshaw(k.series[1::2], cos4, sin4)
    s_re = even_re + cos2 * odd_re - sin2 * odd_im
    s_im = even_im + sin2 * odd_re + cos2 * odd_im
    # Z · S · R^{-t}, rotated back by e^{iφ_G} and scaled by 2 b^t / (1 + q)
    a_re = zx * s_re - zy * s_im
    a_im = zx * s_im + zy * s_re
    radial = torch.exp(-k.half_t * torch.log(r2))
    alpha_x = (k.amp_cos * a_re - k.amp_sin * a_im) * radial
    alpha_y = (k.amp_sin * a_re + k.amp_cos * a_im) * radial
    return alpha_x, alpha_y


def epl_deflection(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    gamma: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
    *,
    tol: float = DEFAULT_TOL,
) -> tuple[Tensor, Tensor]:
    """EPL deflection (α_x, α_y), lenstronomy ``EPL.derivatives`` signature; all arguments broadcast.

    For many halos at many points pass parameters of shape (H, 1) and points of shape (P,) to get (H, P).
    """
    ref = torch.as_tensor(theta_E)
    params = [
        torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for v in (theta_E, gamma, e1, e2, center_x, center_y)
    ]
    return epl_deflection_from_coefficients(x, y, epl_coefficients(*params, tol=tol))


def epl_convergence(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    gamma: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> Tensor:
    """EPL convergence κ = (2 − t)/2 · (b/R)^t (TM15 eq. 2) as lenstronomy evaluates it (R floored at 1e-8)."""
    phi = 0.5 * torch.atan2(e2, e1)
    c = torch.clamp(torch.sqrt(e1 * e1 + e2 * e2), max=0.9999)
    q = (1.0 - c) / (1.0 + c)
    t = gamma - 1.0
    b = theta_E * torch.sqrt(q)
    dx = x - center_x
    dy = y - center_y
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    r = torch.clamp(torch.hypot(q * (cos_phi * dx + sin_phi * dy), cos_phi * dy - sin_phi * dx), min=1e-8)
    return (2.0 - t) / 2.0 * (b / r) ** t
