"""lensinfer.observe: HST observations of strong lenses, from MAST to the simulator's grid.

* :mod:`~lensinfer.observe.lenses` — the 13 SLACS lenses of the reference analysis and
  config-defined lenses (:class:`LensSpec`, :func:`lens_specs_from_config`);
* :mod:`~lensinfer.observe.mast` — :func:`fetch_hst`: HAPCut cutouts or DRC/DRZ frames,
  retried, verified, recorded in a manifest, offline when already present;
* :mod:`~lensinfer.observe.preprocess` — :func:`reference_cutout` (``observations.preprocess:
  reference``: the published input, frame pixels cut at the catalogue position, nothing else),
  :func:`preprocess_fits` (``calibrated``: units, background, recentring, flux-conserving
  north-up resampling, noise, zero point) and :func:`write_preprocessed` (arrays, mask, metadata
  JSON, diagnostic figure);
* :mod:`~lensinfer.observe.sources` — raw-frame paths of each ``observations.source``, per-lens
  rule parameters, provenance records (source, file, sha256, MAST product);
* :mod:`~lensinfer.observe.fitsio` — :func:`write_hst_like_fits` for mock observations, which
  then go through the same preprocessing as real data; :func:`verify_fits`;
* :mod:`~lensinfer.observe.photometry` and :mod:`~lensinfer.observe.errors`.

The MAST code imports astroquery; it is loaded only when :mod:`~lensinfer.observe.mast` is.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CorruptFitsError,
    DownloadError,
    FitsUnitError,
    FitsWcsError,
    MastFetchError,
    NoCoverageError,
    NoProductsError,
    ObserveError,
)
from .lenses import SLACS_REFERENCE_LENSES, LensSpec, lens_specs_from_config, parse_sdss_name, reference_lens

#: names imported on first use (PEP 562): astropy/scipy/reproject load only when FITS work needs them, so that the
#: workflow's config step (which only needs the lens table) stays fast for the DAG of thousands of jobs
_LAZY = {
    "tan_wcs": "fitsio", "verify_fits": "fitsio", "write_hst_like_fits": "fitsio",
    "ab_zero_point": "photometry", "zero_point_scale": "photometry",
    "PreprocessResult": "preprocess", "apply_circular_mask": "preprocess", "circular_mask": "preprocess",
    "preprocess_fits": "preprocess", "write_preprocessed": "preprocess", "reference_cutout": "preprocess",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CorruptFitsError",
    "DownloadError",
    "FitsUnitError",
    "FitsWcsError",
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
    "reference_cutout",
    "reference_lens",
    "tan_wcs",
    "verify_fits",
    "write_hst_like_fits",
    "write_preprocessed",
    "zero_point_scale",
]
