"""Detector, PSF and noise of HST-like observations (spec/science.md §1.4).

The reference run is WFC3/UVIS-F814W-like: pixel scale Δ, gain 1.58, read noise 3 e⁻, zero point 25.127,
exposure 2200 s, sky 21.83 mag/arcsec², one exposure; units are e⁻/s. Noise follows lenstronomy
``SingleBand.noise_for_model`` (Gaussian approximation of Poisson noise on |image| plus Gaussian background), but
is drawn from the image's own generator so that outputs are reproducible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import physics

__all__ = [
    "Instrument",
    "BAND_KEYS",
    "band_configs",
    "band_names",
    "reference_band",
    "reference_zero_point",
    "gaussian_psf_kernel",
    "pixel_psf_kernel",
    "psf_kernel",
    "add_noise",
]

#: Keys a band of ``instrument.bands`` may override; pixel_scale, num_pix and supersampling are shared by all bands.
BAND_KEYS = ("exposure_time", "sky_brightness", "magnitude_zero_point", "read_noise", "ccd_gain", "num_exposures", "psf")


def band_configs(cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """(name, full single-band instrument config) of every band of ``instrument.bands``, or None if single-band.

    A band's config is the top-level ``instrument`` section (shared camera: pixel scale, grid, supersampling, and
    defaults for everything else) overridden by the band's own keys (:data:`BAND_KEYS`); a band ``psf`` replaces the
    top-level PSF as a whole. Per-band survey values of this kind are what lenstronomy's
    ``SimulationAPI.ObservationConfig`` classes (e.g. ``DES.py``: per-band ``exposure_time``, ``sky_brightness``,
    ``magnitude_zero_point``, ``num_exposures``, ``seeing``; shared camera ``read_noise``, ``ccd_gain``,
    ``pixel_scale``) hold.
    """
    bands = cfg.get("bands")
    if not bands:
        return None
    base = {k: v for k, v in cfg.items() if k not in ("bands", "reference_band")}
    out = []
    for band in bands:
        merged = dict(base)
        merged.update({k: v for k, v in band.items() if k != "name"})
        out.append((str(band["name"]), merged))
    return out


def band_names(cfg: Mapping[str, Any]) -> list[str] | None:
    """Names of the bands of ``instrument.bands`` in channel order, or None for a single-band instrument."""
    bands = cfg.get("bands")
    return [str(b["name"]) for b in bands] if bands else None


def reference_band(cfg: Mapping[str, Any]) -> str | None:
    """The band in which magnitudes are drawn (``instrument.reference_band``, default: the first band); None if
    single-band."""
    names = band_names(cfg)
    if names is None:
        return None
    return str(cfg.get("reference_band") or names[0])


def reference_zero_point(cfg: Mapping[str, Any]) -> float:
    """AB zero point of the band magnitudes refer to: the reference band's, or the single band's."""
    bands = band_configs(cfg)
    if bands is None:
        return float(cfg["magnitude_zero_point"])
    ref = reference_band(cfg)
    return float(dict(bands)[ref]["magnitude_zero_point"])



class Instrument:
    """The ``instrument`` section of the config with derived quantities."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)
        self.pixel_scale = float(cfg["pixel_scale"])
        self.num_pix = int(cfg["num_pix"])
        self.exposure_time = float(cfg["exposure_time"]) * int(cfg.get("num_exposures", 1))
        self.zero_point = float(cfg["magnitude_zero_point"])
        self.supersampling = int(cfg.get("supersampling", 1))
        self.sigma_bkg = physics.background_sigma(
            pixel_scale=self.pixel_scale,
            exposure_time=float(cfg["exposure_time"]),
            sky_brightness=float(cfg["sky_brightness"]),
            read_noise=float(cfg["read_noise"]),
            magnitude_zero_point=self.zero_point,
            num_exposures=int(cfg.get("num_exposures", 1)),
        )

    def psf(self) -> np.ndarray:
        """The normalised PSF kernel on the detector pixel grid."""
        return psf_kernel(self.cfg["psf"], self.pixel_scale)


def gaussian_psf_kernel(fwhm: float, pixel_scale: float, truncation: float = 5.0) -> np.ndarray:
    """A normalised, odd-sized Gaussian kernel truncated at ``truncation`` σ (lenstronomy's GAUSSIAN default)."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    half = max(1, int(math.ceil(truncation * sigma / pixel_scale)))
    x = np.arange(-half, half + 1) * pixel_scale
    # integrate the Gaussian over each pixel (error functions) rather than sampling its centre
    from scipy.special import erf

    edges = np.append(x - pixel_scale / 2, x[-1] + pixel_scale / 2) / (math.sqrt(2) * sigma)
    w = np.diff(erf(edges)) / 2.0
    kernel = np.outer(w, w)
    return kernel / kernel.sum()


def pixel_psf_kernel(path: str | Path, index: int, supersampling: int, size: int | None = None) -> np.ndarray:
    """An empirical PSF from a FITS library, degraded from its supersampling to detector pixels.

    The reference (``--load_psf``) used element [17] of the 4×-supersampled WFC3/UVIS F814W empirical library minus
    its minimum, degraded by 4 (spec §1.4). The FITS holds either one 2-D kernel or a cube (n, ny, nx).
    """
    from astropy.io import fits
    from lenstronomy.Util import kernel_util

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"instrument.psf.path: PSF file {path} does not exist")
    with fits.open(path) as hdul:
        data = next((h.data for h in hdul if h.data is not None), None)
    if data is None:
        raise ValueError(f"instrument.psf.path: {path} has no image data")
    data = np.asarray(data, dtype=float)
    if data.ndim == 3:
        if not 0 <= index < data.shape[0]:
            raise ValueError(f"instrument.psf.index: {index} out of range [0, {data.shape[0]})")
        data = data[index]
    kernel = data - data.min()
    if supersampling > 1:
        kernel = kernel_util.degrade_kernel(kernel, supersampling)
    if size is not None:
        kernel = kernel_util.cut_psf(kernel, size)
    if kernel.shape[0] % 2 == 0:
        kernel = kernel_util.cut_psf(kernel, kernel.shape[0] - 1)
    return kernel / kernel.sum()


def psf_kernel(psf_cfg: Mapping[str, Any], pixel_scale: float) -> np.ndarray:
    """PSF kernel from the config: ``{type: gaussian, fwhm}`` or ``{type: pixel, path, index, supersampling}``."""
    kind = psf_cfg["type"]
    if kind == "gaussian":
        return gaussian_psf_kernel(float(psf_cfg["fwhm"]), pixel_scale)
    if kind == "pixel":
        return pixel_psf_kernel(psf_cfg["path"], int(psf_cfg.get("index", 0)), int(psf_cfg.get("supersampling", 1)),
                                psf_cfg.get("size"))
    raise ValueError(f"instrument.psf.type: unknown {kind!r}; allowed: gaussian, pixel")


def add_noise(rng: np.random.Generator, image: np.ndarray, exposure_time: float, sigma_bkg: float) -> np.ndarray:
    """Image plus Poisson (Gaussian approximation on |image|, lenstronomy ``add_poisson``) and background noise."""
    poisson = rng.standard_normal(image.shape) * np.sqrt(np.abs(image) / exposure_time)
    background = rng.standard_normal(image.shape) * sigma_bkg
    return image + poisson + background
