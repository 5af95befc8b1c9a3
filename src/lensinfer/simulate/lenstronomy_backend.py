"""Scene rendering with lenstronomy ``ImageModel`` (the reference renderer; single lens plane).

Pixel grid from ``lenstronomy.Util.simulation_util.data_configure_simple`` (x increases with the column index,
(0, 0) at pixel (N−1)/2), PSF as a 'PIXEL' kernel so that every PSF choice goes through one code path.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from numpy.polynomial.legendre import leggauss

from .instrument import Instrument
from .scene import MacroDraw, Scene

__all__ = ["LenstronomyRenderer", "mean_convergence_boundary"]

AlphaFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return leggauss(n)


def mean_convergence_boundary(alpha: AlphaFn, half_width: float, n_per_side: int = 128) -> float:
    """Mean convergence over the square field [−h, h]² from the deflection on its boundary (Gauss's theorem).

    ∇·α = 2κ, so ⟨κ⟩ = (1 / 2A) ∮ α·n dl with A = (2h)². Gauss–Legendre nodes on each side avoid rendering a κ map
    (the reference evaluated κ on every pixel twice, ~2/3 of its run time; spec §1.6). This is the continuous
    mean over the field, which the pixel-centre mean of the reference approximates (and which stays finite when a
    steep subhalo sits on a pixel centre). 64 nodes per side already agree with a 10⁶-point map to 1e-3 relative.
    """
    nodes, weights = _gauss_legendre(n_per_side)
    t = nodes * half_width
    w = weights * half_width
    h = np.full_like(t, half_width)
    xs = np.concatenate([h, -h, t, t])
    ys = np.concatenate([t, t, h, -h])
    ax, ay = alpha(xs, ys)
    n = n_per_side
    flux = (ax[:n] * w).sum() - (ax[n:2 * n] * w).sum() + (ay[2 * n:3 * n] * w).sum() - (ay[3 * n:] * w).sum()
    return float(flux / (2.0 * (2.0 * half_width) ** 2))


class LenstronomyRenderer:
    """Render scenes on the instrument's grid with lenstronomy."""

    def __init__(self, instrument: Instrument, cosmology: str = "planck18") -> None:
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.Util.simulation_util import data_configure_simple

        self.instrument = instrument
        self.cosmology = cosmology
        kwargs_data = data_configure_simple(instrument.num_pix, instrument.pixel_scale, instrument.exposure_time, instrument.sigma_bkg)
        self._data = ImageData(**kwargs_data)
        self.psf_kernel = instrument.psf()
        self._psf = PSF(psf_type="PIXEL", kernel_point_source=self.psf_kernel, point_source_supersampling_factor=1)
        self._numerics = {"supersampling_factor": instrument.supersampling, "supersampling_convolution": False}
        self.half_width = instrument.num_pix * instrument.pixel_scale / 2.0

    def _image(self, lens_models, kwargs_lens, src_models, kwargs_src, light_models, kwargs_light,
               redshifts: list[float] | None = None, z_source: float | None = None) -> np.ndarray:
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        if redshifts is None:
            lens_model = LensModel(lens_models)
        else:
            from .. import physics

            lens_model = LensModel(lens_models, z_source=z_source, lens_redshift_list=redshifts, multi_plane=True,
                                   cosmo=physics.get_cosmology(self.cosmology))
        model = ImageModel(
            self._data,
            self._psf,
            lens_model_class=lens_model,
            source_model_class=LightModel(src_models),
            lens_light_model_class=LightModel(light_models) if light_models else None,
            kwargs_numerics=self._numerics,
        )
        return model.image(kwargs_lens, kwargs_src, kwargs_light if light_models else None, lens_light_add=bool(light_models))

    def smooth_image(self, macro: MacroDraw) -> np.ndarray:
        """Noiseless, PSF-convolved lensed source without substructure or lens light (subhalo placement map)."""
        return self._image(macro.lens_model_list, macro.kwargs_lens, macro.source_model_list, macro.kwargs_source, [], [])

    def image(self, scene: Scene) -> np.ndarray:
        """Noiseless, PSF-convolved image of the full scene (lens light included)."""
        return self._image(
            scene.lens_model_list, scene.kwargs_lens, scene.source_model_list, scene.kwargs_source,
            scene.lens_light_model_list, scene.kwargs_lens_light, scene.lens_redshift_list, scene.z_source,
        )

    def mean_convergence(self, models: list[str], kwargs: list[dict[str, float]]) -> float:
        """Mean convergence of the given components over the image field (for the negative mass sheet)."""
        if not models:
            return 0.0
        from lenstronomy.LensModel.lens_model import LensModel

        lm = LensModel(models)
        return mean_convergence_boundary(lambda x, y: lm.alpha(x, y, kwargs), self.half_width)
