"""Circular image masks (spec/science.md §2).

The simulation mask keeps a circle of radius ``radius_theta_E × θE`` around the *true* lens centre. Pixel centres
follow lenstronomy: coordinate 0 lies at pixel index (N−1)/2, x grows with the column and y with the row. The
reference code put the centre at N/2 + 0.5, one pixel (+Δ in x and y) off (spec §2, bug 5).

``radius_theta_E: null`` keeps every pixel. A mask drawn from the *true* θE and centre tells the network those
values, which is harmless for the subhalo slope γ (the reference's use) but leaks the answer when a posterior
estimator infers the macro model (θE, centre) itself: such configs (e.g. ``config/survey.yaml``) use no mask.
"""

from __future__ import annotations

import numpy as np

__all__ = ["circular_mask", "masks_for_table", "pixel_index_of"]


def pixel_index_of(coord: float | np.ndarray, num_pix: int, pixel_scale: float) -> np.ndarray:
    """Fractional pixel index of an angular coordinate (lenstronomy convention)."""
    return np.asarray(coord) / pixel_scale + (num_pix - 1) / 2.0


def circular_mask(num_pix: int, center_col: float, center_row: float, radius_px: float) -> np.ndarray:
    """Boolean (num_pix, num_pix) mask, True inside the circle (pixel centres at integer indices)."""
    idx = np.arange(num_pix)
    return (idx[None, :] - center_col) ** 2 + (idx[:, None] - center_row) ** 2 <= radius_px**2


def masks_for_table(
    theta_e: np.ndarray, center_x: np.ndarray, center_y: np.ndarray, *, num_pix: int, pixel_scale: float,
    radius_theta_e: float | None,
) -> np.ndarray:
    """Masks (n, num_pix, num_pix) of circles of radius ``radius_theta_e·θE`` around the true lens centres
    (``radius_theta_e=None``: every pixel kept)."""
    if radius_theta_e is None:
        return np.ones((np.asarray(theta_e).shape[0], num_pix, num_pix), dtype=bool)
    idx = np.arange(num_pix, dtype=float)
    col = pixel_index_of(center_x, num_pix, pixel_scale)[:, None, None]
    row = pixel_index_of(center_y, num_pix, pixel_scale)[:, None, None]
    r = (radius_theta_e * np.asarray(theta_e) / pixel_scale)[:, None, None]
    return (idx[None, None, :] - col) ** 2 + (idx[None, :, None] - row) ** 2 <= r**2
