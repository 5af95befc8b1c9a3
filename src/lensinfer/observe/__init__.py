"""lensinfer.observe: HST observations of strong lenses, from MAST to the simulator's grid.

* :mod:`~lensinfer.observe.lenses` — the 13 SLACS lenses of the reference analysis and
  config-defined lenses (:class:`LensSpec`, :func:`lens_specs_from_config`);
* :mod:`~lensinfer.observe.mast` — :func:`fetch_hst`: HAPCut cutouts or DRC/DRZ frames,
  retried, verified, recorded in a manifest, offline when already present;
* :mod:`~lensinfer.observe.preprocess` — :func:`preprocess_fits` (units, background,
  recentring, flux-conserving north-up resampling, noise, zero point) and
  :func:`write_preprocessed` (arrays, mask, metadata JSON, diagnostic figure);
* :mod:`~lensinfer.observe.fitsio` — :func:`write_hst_like_fits` for mock observations, which
  then go through the same preprocessing as real data; :func:`verify_fits`;
* :mod:`~lensinfer.observe.photometry` and :mod:`~lensinfer.observe.errors`.

The MAST code imports astroquery; it is loaded only when :mod:`~lensinfer.observe.mast` is.
"""

from __future__ import annotations

from .errors import (
    CorruptFitsError,
    DownloadError,
    FitsUnitError,
    MastFetchError,
    NoCoverageError,
    NoProductsError,
    ObserveError,
)
from .fitsio import tan_wcs, verify_fits, write_hst_like_fits
from .lenses import SLACS_REFERENCE_LENSES, LensSpec, lens_specs_from_config, parse_sdss_name, reference_lens
from .photometry import ab_zero_point, zero_point_scale
from .preprocess import PreprocessResult, apply_circular_mask, circular_mask, preprocess_fits, write_preprocessed

__all__ = [
    "CorruptFitsError",
    "DownloadError",
    "FitsUnitError",
    "LensSpec",
    "MastFetchError",
    "NoCoverageError",
    "NoProductsError",
    "ObserveError",
    "PreprocessResult",
    "SLACS_REFERENCE_LENSES",
    "ab_zero_point",
    "apply_circular_mask",
    "circular_mask",
    "lens_specs_from_config",
    "parse_sdss_name",
    "preprocess_fits",
    "reference_lens",
    "tan_wcs",
    "verify_fits",
    "write_hst_like_fits",
    "write_preprocessed",
    "zero_point_scale",
]
