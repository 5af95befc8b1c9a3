"""External shear deflection (lenstronomy 'SHEAR' convention, 1.14.0).

The potential ψ = ½ γ1 (x² − y²) + γ2 x y about (ra_0, dec_0) deflects by α = (γ1 x + γ2 y, γ2 x − γ1 y); it has
zero convergence.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["shear_deflection"]


def shear_deflection(
    x: Tensor, y: Tensor, gamma1: Tensor, gamma2: Tensor, ra_0: Tensor | float = 0.0, dec_0: Tensor | float = 0.0
) -> tuple[Tensor, Tensor]:
    """Shear deflection (α_x, α_y), lenstronomy ``Shear.derivatives`` signature; arguments broadcast."""
    dx = x - ra_0
    dy = y - dec_0
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy
