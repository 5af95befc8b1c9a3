"""Pixelised surface brightness (lenstronomy 1.14.0 light model 'INTERPOL'), e.g. COSMOS galaxies from paltas.

lenstronomy's ``Interpol`` maps a point (x, y) to image-pixel coordinates by shifting to (center_x, center_y),
dividing by ``scale`` (arcsec per image pixel) and rotating by φ_G::

    u = (Δx cos φ_G + Δy sin φ_G) / scale,   v = (−Δx sin φ_G + Δy cos φ_G) / scale,

then interpolates the image bilinearly (a degree-1 spline, ``RectBivariateSpline(kx=1, ky=1, s=0)``) on the
grid whose pixel (r, c) of an (n_r, n_c) image sits at v = r − (n_r − 1)/2, u = c − (n_c − 1)/2 (v runs along
rows, u along columns). The image is padded with one ring of zeros and FITPACK clamps arguments to the padded
grid, so the profile falls linearly to zero over one pixel outside the image and is zero beyond. The image is in
surface-brightness units (flux per arcsec²) and is multiplied by ``amp``.

Here the same function is evaluated directly: the four neighbouring pixels are gathered (zero outside the image)
and weighted by the bilinear weights; this equals the spline up to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interpol_light"]


def interpol_light(
    x: Tensor,
    y: Tensor,
    image: Tensor,
    amp: float = 1.0,
    center_x: float = 0.0,
    center_y: float = 0.0,
    phi_G: float = 0.0,
    scale: float = 1.0,
) -> Tensor:
    """Surface brightness of a pixelised light profile at points (x, y) of any shape (lenstronomy 'INTERPOL')."""
    if image.dim() != 2:
        raise ValueError(f"INTERPOL image must be 2-D, got shape {tuple(image.shape)}")
    n_rows, n_cols = image.shape
    cos, sin = torch.cos(torch.as_tensor(phi_G, dtype=x.dtype)), torch.sin(torch.as_tensor(phi_G, dtype=x.dtype))
    dx = (x - center_x) / scale
    dy = (y - center_y) / scale
    u = dx * cos + dy * sin + (n_cols - 1) / 2.0  # column coordinate
    v = -dx * sin + dy * cos + (n_rows - 1) / 2.0  # row coordinate
    # beyond one pixel outside the image the value is 0; clamping keeps floor() finite and in range
    u = torch.clamp(u, -2.0, float(n_cols + 1))
    v = torch.clamp(v, -2.0, float(n_rows + 1))
    c0, r0 = torch.floor(u), torch.floor(v)
    fu, fv = u - c0, v - r0
    c0, r0 = c0.long(), r0.long()
    flat = image.reshape(-1)

    def pixel(r: Tensor, c: Tensor) -> Tensor:
        inside = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols)
        index = torch.where(inside, r * n_cols + c, torch.zeros_like(r))
        return torch.where(inside, flat[index], torch.zeros((), dtype=image.dtype, device=image.device))

    value = (
        pixel(r0, c0) * (1.0 - fu) * (1.0 - fv)
        + pixel(r0, c0 + 1) * fu * (1.0 - fv)
        + pixel(r0 + 1, c0) * (1.0 - fu) * fv
        + pixel(r0 + 1, c0 + 1) * fu * fv
    )
    return amp * value
