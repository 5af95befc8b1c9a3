"""Mean convergence of lens components over the image field, for the negative mass sheet, without a κ map.

The reference (spec/science.md §1.2) adds a 'CONVERGENCE' sheet κ = −⟨κ_sub⟩ with ⟨κ_sub⟩ the mean of the
subhalos' convergence over the image, which it got from a κ map on the pixel centres. Two means are offered:

* ``over="field"`` (default): the continuous mean over the square field [−h, h]², h = N Δ / 2, by Gauss's
  theorem ∇·α = 2κ ⇒ ⟨κ⟩ = (1/2A) ∮ α·n dl (A = 4h²). Each component's flux is integrated along the four
  sides with Gauss–Legendre nodes in u, s = s₀ + d sinh u, where s₀ is the foot of the component's centre on that
  side and d its distance to it (floored at 1e-6″). The sinh map puts the nodes where the integrand varies (within
  ~d of s₀). With 32 nodes per side the flux is exact to ~1e-12 relative for components away from the edges and
  to < 1e-8 in κ for a θE = 0.1″, γ = 2.9 subhalo 1e-3″ from an edge (a component exactly on the boundary is
  ill-posed for any mean). Nodes, deflections and the sum run in one fused kernel: ~7 ms for 1500 EPL subhalos
  on one core (~5 % of rendering the image). This is the only implementation of the sheet quadrature: the
  lenstronomy backend feeds lenstronomy's per-component deflections into the same nodes and weights
  (:func:`mean_convergence_from_deflections`), so both backends' sheets agree to rounding.
* ``over="pixels"``: the reference's mean of κ over the N² pixel centres, from each profile's analytic κ (no
  deflection series). For cuspy profiles this is not the field mean: a point sample misses the mass within
  ~Δ/2 of a steep subhalo's centre (for ρ ∝ r^-2.9 most of it), so it under-compensates steep subhalos. At the
  reference configuration (1500 EPL subhalos, 0.04″ pixels) pixels/field − 1 is < 1e-5 for γ_pop ≤ 1.5, 3e-4 at
  2.0, −9 % at 2.5 and −52 % at 2.9 (Δκ ≈ −0.08, a sheet deflection error of ~0.08″ at 1″); measured in
  ``tests/test_lensing_sheet.py`` and reported per image by ``bench/simulate.py``.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss
from torch import Tensor

from .kernels import summed_over_components
from .render import MAX_CHUNK, pixel_grid
from .scene import ProfileGroup, Scene, SceneArrays, scene_to_arrays

__all__ = [
    "boundary_nodes",
    "boundary_quadrature",
    "mean_convergence",
    "mean_convergence_arrays",
    "mean_convergence_batch",
    "mean_convergence_from_deflections",
    "mean_from_boundary_flux",
]

Over = Literal["field", "pixels"]
#: Gauss–Legendre nodes per side of the field.
NODES_PER_SIDE = 32
_D_FLOOR = 1e-6


def _sides(center_x: Tensor, center_y: Tensor, half_width: float) -> tuple[Tensor, ...]:
    """Per (component, side) geometry, each (H, 4, 1): fixed coordinate, 1 if it is x, foot of the centre on the
    side, distance d to it, and the u-interval [lo, hi] of s = foot + d sinh u ∈ [−h, h]."""
    dtype, device = center_x.dtype, center_x.device
    # sides x = +h, x = −h (running coordinate y), then y = +h, y = −h (running coordinate x)
    value = torch.tensor([half_width, -half_width] * 2, dtype=dtype, device=device).view(1, 4, 1)
    fixed_x = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=dtype, device=device).view(1, 4, 1)
    cx, cy = center_x.view(-1, 1, 1), center_y.view(-1, 1, 1)
    foot = fixed_x * cy + (1.0 - fixed_x) * cx
    d = torch.clamp(torch.abs(value - (fixed_x * cx + (1.0 - fixed_x) * cy)), min=_D_FLOOR)
    lo, hi = torch.asinh((-half_width - foot) / d), torch.asinh((half_width - foot) / d)
    return value.expand_as(d), fixed_x.expand_as(d), foot, d, lo, hi


def _nodes(
    xi: Tensor, wi: Tensor, value: Tensor, fixed_x: Tensor, foot: Tensor, d: Tensor, lo: Tensor, hi: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x, y, w_x, w_y of the sinh-mapped Gauss–Legendre nodes (element-wise, so it fuses into the flux kernel)."""
    u = 0.5 * (hi + lo) + 0.5 * (hi - lo) * xi
    e = torch.exp(u)
    s = foot + d * 0.5 * (e - 1.0 / e)
    w = torch.sign(value) * 0.25 * (hi - lo) * wi * d * (e + 1.0 / e)
    x = fixed_x * value + (1.0 - fixed_x) * s
    y = fixed_x * s + (1.0 - fixed_x) * value
    return x, y, fixed_x * w, (1.0 - fixed_x) * w


def _legendre(n_per_side: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    xi, wi = (torch.as_tensor(v, dtype=dtype, device=device).view(1, 1, -1) for v in leggauss(n_per_side))
    return xi, wi


def boundary_quadrature(
    center_x: Tensor, center_y: Tensor, half_width: float, n_per_side: int = NODES_PER_SIDE
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nodes and normal-weighted weights for ∮ α·n dl around [−h, h]², adapted to each centre.

    Returns x, y, w_x, w_y of shape (H, 4n) such that ∮ α·n dl ≈ Σ (w_x α_x + w_y α_y) for a deflection field
    smooth away from (center_x, center_y) (shape (H,)).
    """
    xi, wi = _legendre(n_per_side, center_x.dtype, center_x.device)
    x, y, wx, wy = _nodes(xi, wi, *_sides(center_x, center_y, half_width))
    return tuple(v.reshape(len(center_x), -1) for v in (x, y, wx, wy))


def boundary_nodes(
    center_x: Sequence[float] | np.ndarray,
    center_y: Sequence[float] | np.ndarray,
    half_width: float,
    n_per_side: int = NODES_PER_SIDE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`boundary_quadrature` as float64 numpy arrays (H, 4n), for deflections computed outside torch."""
    cx = torch.as_tensor(np.asarray(center_x, dtype=np.float64).reshape(-1))
    cy = torch.as_tensor(np.asarray(center_y, dtype=np.float64).reshape(-1))
    return tuple(v.numpy() for v in boundary_quadrature(cx, cy, half_width, n_per_side))


def mean_from_boundary_flux(flux: float | Tensor | np.ndarray, half_width: float) -> float | Tensor | np.ndarray:
    """⟨κ⟩ over [−h, h]² from the outward flux ∮ α·n dl of the deflection: ∇·α = 2κ ⇒ ⟨κ⟩ = flux / (2 · 4h²)."""
    return flux / (2.0 * (2.0 * half_width) ** 2)


def mean_convergence_from_deflections(
    deflections: Sequence[Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
    centers: Sequence[tuple[float, float]],
    half_width: float,
    n_per_side: int = NODES_PER_SIDE,
) -> float:
    """Mean convergence over [−h, h]² of components given as deflection functions (numpy in, numpy out).

    The same Gauss's-theorem quadrature as :func:`mean_convergence` (nodes adapted to each component's centre,
    :func:`boundary_quadrature`), for deflections from another code: the lenstronomy backend passes lenstronomy's
    per-component deflections, so both backends' sheets agree to rounding. A component whose deflection field is
    smooth everywhere (a sheet, shear) may pass any centre, e.g. (0, 0).
    """
    if len(deflections) != len(centers):
        raise ValueError(f"{len(deflections)} deflection functions but {len(centers)} centres")
    if not deflections:
        return 0.0
    cx, cy = (np.array(c, dtype=np.float64) for c in zip(*centers))
    x, y, wx, wy = boundary_nodes(cx, cy, half_width, n_per_side)
    total = 0.0
    for i, alpha in enumerate(deflections):
        ax, ay = alpha(x[i], y[i])
        total += float(np.sum(wx[i] * ax + wy[i] * ay))
    return float(mean_from_boundary_flux(total, half_width))


def _centre(group: ProfileGroup) -> tuple[str, str]:
    return ("center_x", "center_y") if "center_x" in group.params else ("ra_0", "dec_0")


def _field_flux(group: ProfileGroup, half_width: float, n_per_side: int, compile: bool) -> tuple[Tensor, Tensor]:
    """∮ α·n dl of every valid component (H,) and its image index (H,), nodes and all in one fused kernel."""
    profile = group.profile
    b, k = group.mask.nonzero(as_tuple=True)
    params = {name: value[b, k].view(-1, 1, 1) for name, value in group.params.items()}
    cx, cy = _centre(group)

    def flux(xi: Tensor, wi: Tensor, *geometry_and_params: Tensor) -> tuple[Tensor]:
        x, y, wx, wy = _nodes(xi, wi, *geometry_and_params[:6])
        ax, ay = profile.deflection(x, y, *geometry_and_params[6:])
        return (wx * ax + wy * ay,)

    # chunks = components; per (component, side) geometry (H, 4, 1); the n nodes (1, 1, n) are the summed axis
    sides = _sides(params[cx].flatten(), params[cy].flatten(), half_width)
    legendre = _legendre(n_per_side, params[cx].dtype, params[cx].device)
    (total,) = summed_over_components(
        f"{profile.name}_flux", flux, legendre, sides + profile.prepare(params), compile=compile
    )
    return total.sum(dim=-1), b


def _pixel_sum(group: ProfileGroup, x: Tensor, y: Tensor, compile: bool) -> tuple[Tensor, Tensor]:
    """Σ over pixel centres and components of κ, per chunk (C,), and each chunk's image index (C,)."""
    profile = group.profile
    if profile.convergence is None:
        raise NotImplementedError(f"no analytic convergence for {profile.name}; use over='field'")
    blocks, owner = group.chunks(MAX_CHUNK)
    kappa = lambda px, py, *p: (profile.convergence(px, py, *p),)  # noqa: E731
    params = tuple(blocks[n] for n in profile.params)
    (total,) = summed_over_components(
        f"{profile.name}_kappa", kappa, (x.view(1, -1, 1), y.view(1, -1, 1)), params, compile=compile
    )
    return total.sum(dim=-1), owner


def mean_convergence_arrays(
    arrays: SceneArrays,
    *,
    num_pix: int,
    pixel_scale: float,
    over: Over = "field",
    n_per_side: int = NODES_PER_SIDE,
    compile: bool = True,
) -> Tensor:
    """Mean convergence (B,) of the lens groups over the field (``over="field"``) or the pixel centres."""
    if over not in ("field", "pixels"):
        raise ValueError(f"over must be 'field' or 'pixels', got {over!r}")
    total = torch.zeros(arrays.batch_size, dtype=arrays.dtype, device=arrays.device)
    half_width = num_pix * pixel_scale / 2.0
    if over == "field":
        for group in arrays.lens.values():
            flux, owner = _field_flux(group, half_width, n_per_side, compile)
            total.index_add_(0, owner, flux)
        return mean_from_boundary_flux(total, half_width)
    x, y = pixel_grid(num_pix, pixel_scale, dtype=arrays.dtype, device=arrays.device)
    for group in arrays.lens.values():
        sums, owner = _pixel_sum(group, x, y, compile)
        total.index_add_(0, owner, sums)
    return total / x.numel()


def mean_convergence_batch(
    scenes: Sequence[Scene] | SceneArrays,
    *,
    num_pix: int,
    pixel_scale: float,
    over: Over = "field",
    n_per_side: int = NODES_PER_SIDE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = True,
) -> np.ndarray:
    """Mean convergence (B,) of all lens components of each scene (pass the subhalos only, for the sheet)."""
    arrays = scenes if isinstance(scenes, SceneArrays) else scene_to_arrays(scenes, device=device, dtype=dtype)
    kappa = mean_convergence_arrays(
        arrays, num_pix=num_pix, pixel_scale=pixel_scale, over=over, n_per_side=n_per_side, compile=compile
    )
    return kappa.detach().cpu().numpy().astype(np.float64)


def mean_convergence(
    scene: Scene | SceneArrays,
    *,
    num_pix: int,
    pixel_scale: float,
    over: Over = "field",
    n_per_side: int = NODES_PER_SIDE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = True,
) -> float:
    """Mean convergence of one scene's lens components (e.g. a scene holding only its subhalos)."""
    scenes = scene if isinstance(scene, SceneArrays) else [scene]
    values = mean_convergence_batch(
        scenes,
        num_pix=num_pix,
        pixel_scale=pixel_scale,
        over=over,
        n_per_side=n_per_side,
        device=device,
        dtype=dtype,
        compile=compile,
    )
    if values.shape != (1,):
        raise ValueError(f"expected one scene, got {values.shape[0]}")
    return float(values[0])
