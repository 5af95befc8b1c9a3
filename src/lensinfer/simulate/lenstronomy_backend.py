"""Scene rendering with lenstronomy ``ImageModel`` (the reference renderer; single plane, or ``MultiPlane`` for LOS).

Pixel grid from ``lenstronomy.Util.simulation_util.data_configure_simple`` (x increases with the column index,
(0, 0) at pixel (N−1)/2), PSF as a 'PIXEL' kernel so that every PSF choice goes through one code path.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..lensing.sheet import mean_convergence_from_deflections
from .instrument import Instrument
from .scene import MacroDraw, Scene

__all__ = ["LenstronomyRenderer"]

@functools.lru_cache(maxsize=32)
def _single_model(name: str) -> Any:
    """A lenstronomy ``LensModel`` of one component (cached: building one per subhalo would dominate)."""
    from lenstronomy.LensModel.lens_model import LensModel

    return LensModel([name])


@functools.lru_cache(maxsize=16)
def _image_data(num_pix: int, pixel_scale: float, exposure_time: float, sigma_bkg: float) -> Any:
    """lenstronomy ``ImageData`` of a pixel grid (cached: ~10 ms to build, and a multi-band config with per-image
    seeing builds a renderer per band and image; ``ImageModel`` only reads it)."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Util.simulation_util import data_configure_simple

    return ImageData(**data_configure_simple(num_pix, pixel_scale, exposure_time, sigma_bkg))


def _centre(kwargs: dict[str, float]) -> tuple[float, float]:
    if "center_x" in kwargs:
        return float(kwargs["center_x"]), float(kwargs["center_y"])
    return float(kwargs.get("ra_0", 0.0)), float(kwargs.get("dec_0", 0.0))


class LenstronomyRenderer:
    """Render scenes on the instrument's grid with lenstronomy."""

    def __init__(self, instrument: Instrument, cosmology: str = "planck18") -> None:
        from lenstronomy.Data.psf import PSF

        self.instrument = instrument
        self.cosmology = cosmology
        self._data = _image_data(instrument.num_pix, instrument.pixel_scale, instrument.exposure_time,
                                 instrument.sigma_bkg)
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
        """Noiseless, PSF-convolved image of the full scene (lens light and lensed point source included)."""
        image = self._image(
            scene.lens_model_list, scene.kwargs_lens, scene.source_model_list, scene.kwargs_source,
            scene.lens_light_model_list, scene.kwargs_lens_light, scene.lens_redshift_list, scene.z_source,
        )
        if getattr(scene, "point_source", None) is not None:
            image = image + self.point_source_image(scene.point_source)
        return image

    def point_source_image(self, point_source: dict) -> np.ndarray:
        """The images of a lensed point source (:mod:`lensinfer.simulate.point_source`) with this band's PSF.

        lenstronomy ``PointSource(['LENSED_POSITION'])`` in an ``ImageModel``: each image is the PSF kernel placed
        at its sub-pixel position with flux ``point_amp`` = |μ|·source_amp.
        """
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.PointSource.point_source import PointSource

        from .point_source import point_source_kwargs

        if len(point_source["ra_image"]) == 0:
            return np.zeros((self.instrument.num_pix, self.instrument.num_pix))
        model = ImageModel(self._data, self._psf, point_source_class=PointSource(["LENSED_POSITION"]),
                           kwargs_numerics=self._numerics)
        return model.image(kwargs_ps=point_source_kwargs(point_source), source_add=False, lens_light_add=False,
                           point_source_add=True)

    def mean_convergence(self, models: list[str], kwargs: list[dict[str, float]]) -> float:
        """Mean convergence of the given components over the image field (for the negative mass sheet).

        Gauss's theorem on the field boundary with lenstronomy deflections of each component on nodes adapted to
        its centre (:func:`lensinfer.lensing.sheet.mean_convergence_from_deflections`, shared with the torch
        backend).
        """
        if not models:
            return 0.0
        alphas = [functools.partial(_single_model(m).alpha, kwargs=[kw]) for m, kw in zip(models, kwargs)]
        return mean_convergence_from_deflections(alphas, [_centre(kw) for kw in kwargs], self.half_width)
