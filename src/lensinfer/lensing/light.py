"""Sérsic surface brightness in lenstronomy's amplitude convention ('SERSIC', 'SERSIC_ELLIPSE', 1.14.0).

I(R) = amp · exp(−b_n [(R/R_sersic)^(1/n) − 1]) (Sérsic 1963) with b_n = 1.9992 n − 0.3271 (Capaccioli 1989,
floored at 1e-5 as lenstronomy), so ``amp`` is the surface brightness at R_sersic. The elliptical radius is the
product-average one (lenstronomy ``param_util.transform_e1e2_product_average``, ``sersic_major_axis=False``)::

    x' = ((1 − e1) x − e2 y)/ν,  y' = (−e2 x + (1 + e1) y)/ν,  ν = √max(|1 − e1² − e2²|, 1e-6),  R = √(x'² + y'²).

R and R_sersic are floored at 1e-4 and the profile is zero beyond R = 1000 R_sersic (lenstronomy ``SersicUtil``).
Units are lenstronomy's: counts per second per arcsec² when amp is; the renderer multiplies by the pixel area.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sersic_ellipse"]

_SMOOTHING = 1e-4
_MAX_R_FRAC = 1000.0


def sersic_ellipse(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    R_sersic: Tensor,
    n_sersic: Tensor,
    e1: Tensor | float = 0.0,
    e2: Tensor | float = 0.0,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> Tensor:
    """Elliptical Sérsic surface brightness at (x, y); e1 = e2 = 0 gives lenstronomy's circular 'SERSIC'."""
    e1 = torch.as_tensor(e1, dtype=x.dtype, device=x.device)
    e2 = torch.as_tensor(e2, dtype=x.dtype, device=x.device)
    dx = x - center_x
    dy = y - center_y
    norm = torch.sqrt(torch.clamp(torch.abs(1.0 - e1 * e1 - e2 * e2), min=1e-6))
    xp = ((1.0 - e1) * dx - e2 * dy) / norm
    yp = (-e2 * dx + (1.0 + e1) * dy) / norm
    r = torch.clamp(torch.sqrt(xp * xp + yp * yp), min=_SMOOTHING)
    r_s = torch.clamp(R_sersic, min=_SMOOTHING)
    b_n = torch.clamp(1.9992 * n_sersic - 0.3271, min=1e-5)
    frac = r / r_s
    value = amp * torch.exp(-b_n * (frac ** (1.0 / n_sersic) - 1.0))
    return torch.where(frac <= _MAX_R_FRAC, value, torch.zeros_like(value))
