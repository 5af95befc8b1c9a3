"""Circular multipole deflection (lenstronomy 1.14.0 'MULTIPOLE', order m ≥ 2).

lenstronomy 1.14.0 ``Multipole`` (the circular form of Van de Vyvere et al. 2022, A&A 659, A127) has the
potential ψ = a_m r / (1 − m²) · cos(m(φ − φ_m)) about (center_x, center_y), so

    α_x = a_m/(1 − m²) [cos φ cos(m(φ − φ_m)) + m sin φ sin(m(φ − φ_m))],
    α_y = a_m/(1 − m²) [sin φ cos(m(φ − φ_m)) − m cos φ sin(m(φ − φ_m))],

with φ = atan2(y − center_y, x − center_x), and κ = a_m cos(m(φ − φ_m)) / (2r). The m = 1 branch (with r_E) and
the elliptical 'MULTIPOLE_ELL' of later versions are different profiles and are not implemented; ``r_E`` only
enters the m = 1 branch and is ignored here.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["multipole_deflection"]


def multipole_deflection(
    x: Tensor,
    y: Tensor,
    m: Tensor,
    a_m: Tensor,
    phi_m: Tensor,
    center_x: Tensor | float = 0.0,
    center_y: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Multipole deflection (α_x, α_y), lenstronomy ``Multipole.derivatives`` signature for m ≥ 2; arguments broadcast."""
    if bool(torch.any(torch.as_tensor(m) < 2)):
        raise ValueError("MULTIPOLE is implemented for m >= 2 only (lenstronomy's m = 1 branch differs)")
    phi = torch.atan2(y - center_y, x - center_x)
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    arg = m * (phi - phi_m)
    radial = a_m / (1.0 - m * m) * torch.cos(arg)
    tangential = m * a_m / (1.0 - m * m) * torch.sin(arg)
    return cos_phi * radial + sin_phi * tangential, sin_phi * radial - cos_phi * tangential
