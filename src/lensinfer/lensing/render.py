"""Batched torch renderer: ray shooting through one lens plane, Sérsic light, PSF convolution.

Reproduces lenstronomy 1.14.0 ``ImageModel.image(..., unconvolved=False)`` with a 'PIXEL' PSF and
``supersampling_factor`` s (``supersampling_convolution=False``): surface brightness of the source at the
ray-shot positions plus the lens light, on the s×s-supersampled pixel grid, averaged to the pixel grid,
convolved with the normalised kernel (zero padding, as ``scipy.signal.fftconvolve(mode='same')``) and multiplied
by the pixel area. The grid is lenstronomy's ``make_grid`` / ``data_configure_simple``: pixel (i, j) sits at
x = (j − (N−1)/2)Δ, y = (i − (N−1)/2)Δ.

Halo profiles (EPL, NFW, TNFW) are evaluated in chunks of up to :data:`MAX_CHUNK` components of one image each:
the deflection of a (chunk, pixel, component) block and its sum over components run in one fused loop
(:mod:`.kernels`), so no (halo × pixel) array is ever stored. Chunks from all images of a batch go through the
same kernel call and are scattered back to their images. Wide chunks amortise the per-pixel reduction overhead.
EPL components are first sorted by ellipticity within each image, so that each chunk gets the series length its
own largest |e| needs (chunks of equal length share a kernel call) instead of the batch's worst case.
Other profiles (shear, multipoles, sheets) are a handful per image and are evaluated directly.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .kernels import summed_over_components
from .profiles import epl_terms
from .scene import ProfileGroup, Scene, SceneArrays, scene_to_arrays

__all__ = [
    "MAX_CHUNK",
    "convolve",
    "deflection",
    "pixel_grid",
    "ray_shoot",
    "render_arrays",
    "render_batch",
    "render_image",
    "surface_brightness",
]

#: Largest number of components per chunk of the fused halo kernel.
MAX_CHUNK = 512
#: Profiles evaluated by the chunked, fused kernel (any number of components per image).
_HALO_PROFILES = frozenset({"EPL", "NFW", "TNFW"})


def pixel_grid(
    num_pix: int,
    pixel_scale: float,
    supersampling: int = 1,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Flattened (row-major) coordinates of the (num_pix·s)² sub-pixel centres, lenstronomy ``make_grid`` order."""
    n = num_pix * supersampling
    axis = (torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2.0) * (pixel_scale / supersampling)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x.reshape(-1), y.reshape(-1)


def _sorted_by_ellipticity(group: ProfileGroup) -> ProfileGroup:
    """The same components, ordered by |e| within each image (padding stays last)."""
    f = torch.hypot(group.params["e1"], group.params["e2"])
    order = torch.argsort(torch.where(group.mask, f, torch.full_like(f, torch.inf)), dim=1, stable=True)
    params = {key: torch.gather(value, 1, order) for key, value in group.params.items()}
    return ProfileGroup(profile=group.profile, params=params, mask=torch.gather(group.mask, 1, order))


def _series_buckets(name: str, blocks: Mapping[str, Tensor]) -> list[Tensor]:
    """Chunk indices grouped by EPL series length (one group holding all chunks for other profiles)."""
    first = next(iter(blocks.values()))
    n_chunks, device = first.shape[0], first.device
    if name != "EPL":
        return [torch.arange(n_chunks, device=device)] if n_chunks else []
    terms = torch.tensor([epl_terms(blocks["e1"][c], blocks["e2"][c]) for c in range(n_chunks)], device=device)
    return [torch.nonzero(terms == n).flatten() for n in torch.unique(terms).tolist()]


def deflection(
    lens: Mapping[str, ProfileGroup],
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    compile: bool = True,
    max_chunk: int = MAX_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Total deflection (B, P) of one lens plane at points x, y of shape (P,) (the same for every image) or
    (B, P) (each image its own points, as on the planes behind the first one in multi-plane ray tracing)."""
    per_image = x.dim() == 2
    if per_image and x.shape[0] != batch_size:
        raise ValueError(f"points of shape {tuple(x.shape)} for a batch of {batch_size} images")
    ax = torch.zeros((batch_size, x.shape[-1]), dtype=x.dtype, device=x.device)
    ay = torch.zeros_like(ax)
    for name, group in lens.items():
        profile = group.profile
        if name in _HALO_PROFILES:
            if name == "EPL":
                group = _sorted_by_ellipticity(group)
            blocks, owner = group.chunks(max_chunk)
            for rows in _series_buckets(name, blocks):
                part = {key: value[rows] for key, value in blocks.items()}
                if per_image:  # (C, P, 1): the points of each chunk's image
                    points = (x[owner[rows]].unsqueeze(-1), y[owner[rows]].unsqueeze(-1))
                else:
                    points = (x.view(1, -1, 1), y.view(1, -1, 1))
                sx, sy = summed_over_components(
                    name, profile.deflection, points, profile.prepare(part), compile=compile
                )
                ax.index_add_(0, owner[rows], sx)
                ay.index_add_(0, owner[rows], sy)
        else:
            params = [p.unsqueeze(1) for p in profile.prepare(group.params)]  # (B, 1, K)
            shape = (batch_size, -1, 1) if per_image else (1, -1, 1)
            dx, dy = profile.deflection(x.reshape(shape), y.reshape(shape), *params)
            ax += dx.sum(dim=-1)
            ay += dy.sum(dim=-1)
    return ax, ay


def ray_shoot(arrays: SceneArrays, x: Tensor, y: Tensor, *, compile: bool = True) -> tuple[Tensor, Tensor]:
    """Source-plane positions β = θ − α(θ), shape (B, P), for image-plane points of shape (P,)."""
    ax, ay = deflection(arrays.lens, x, y, arrays.batch_size, compile=compile)
    return x - ax, y - ay


def surface_brightness(light: Mapping[str, ProfileGroup], x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """Summed surface brightness (B, P) of the light groups at points x, y of shape (P,) or (B, P)."""
    out = torch.zeros((batch_size, x.shape[-1]), dtype=x.dtype, device=x.device)
    xs, ys = x.reshape(-1, x.shape[-1], 1), y.reshape(-1, y.shape[-1], 1)
    for group in light.values():
        params = [p.unsqueeze(1) for p in group.profile.prepare(group.params)]
        out += group.profile.light(xs, ys, *params).sum(dim=-1)
    return out


def convolve(images: Tensor, kernel: Tensor) -> Tensor:
    """2-D convolution of (B, N, N) images with an odd (k, k) kernel, zero padding, output size N.

    The 'same' part of the full linear convolution, computed with real FFTs on a grid of ≥ N + k − 1, as
    ``scipy.signal.fftconvolve(mode='same')`` (lenstronomy's 'fft_static'); a direct float64 conv2d of a 27×27
    HST kernel costs ~30 ms per image on one core, the FFT ~1 ms.
    """
    n, k = images.shape[-1], kernel.shape[-1]
    size = n + k - 1
    spectrum = torch.fft.rfft2(images, s=(size, size)) * torch.fft.rfft2(kernel, s=(size, size))
    full = torch.fft.irfft2(spectrum, s=(size, size))
    return full[..., k // 2 : k // 2 + n, k // 2 : k // 2 + n]


def _kernel_tensor(psf_kernel: np.ndarray | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    kernel = torch.as_tensor(psf_kernel, dtype=dtype, device=device)
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"psf_kernel must be square with odd size, got shape {tuple(kernel.shape)}")
    return kernel / kernel.sum()


def render_arrays(
    arrays: SceneArrays,
    *,
    num_pix: int,
    pixel_scale: float,
    psf_kernel: np.ndarray | Tensor,
    supersampling: int = 1,
    compile: bool = True,
) -> Tensor:
    """Noiseless images (B, num_pix, num_pix) of a batch of scenes, in the units of the light amplitudes × arcsec²."""
    dtype, device = arrays.dtype, arrays.device
    kernel = _kernel_tensor(psf_kernel, dtype, device)
    x, y = pixel_grid(num_pix, pixel_scale, supersampling, dtype=dtype, device=device)
    flux = surface_brightness(arrays.lens_light, x, y, arrays.batch_size)
    if arrays.source_light:
        bx, by = ray_shoot(arrays, x, y, compile=compile)
        flux += surface_brightness(arrays.source_light, bx, by, arrays.batch_size)
    n, s = num_pix, supersampling
    image = flux.view(-1, n, s, n, s).mean(dim=(2, 4))
    return convolve(image, kernel) * pixel_scale**2


def render_batch(
    scenes: Sequence[Scene],
    *,
    num_pix: int,
    pixel_scale: float,
    psf_kernel: np.ndarray,
    supersampling: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = True,
) -> np.ndarray:
    """Noiseless images (B, N, N) of many scenes, rendered together (see :func:`render_arrays`)."""
    arrays = scene_to_arrays(scenes, device=device, dtype=dtype)
    images = render_arrays(
        arrays,
        num_pix=num_pix,
        pixel_scale=pixel_scale,
        psf_kernel=psf_kernel,
        supersampling=supersampling,
        compile=compile,
    )
    return images.detach().cpu().numpy().astype(np.float64)


def render_image(
    scene: Scene,
    *,
    num_pix: int,
    pixel_scale: float,
    psf_kernel: np.ndarray,
    supersampling: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = True,
) -> np.ndarray:
    """Noiseless image (N, N) of one scene, as lenstronomy ``ImageModel.image`` with a 'PIXEL' PSF."""
    return render_batch(
        [scene],
        num_pix=num_pix,
        pixel_scale=pixel_scale,
        psf_kernel=psf_kernel,
        supersampling=supersampling,
        device=device,
        dtype=dtype,
        compile=compile,
    )[0]
