"""Exceptions raised by :mod:`lensinfer.observe`.

One small hierarchy so that Snakemake scripts (and users) can tell a missing observation
(no coverage / no products: a configuration or data question) from a transient archive problem
(retry later) and from a damaged file (never used silently).
"""

from __future__ import annotations

__all__ = [
    "ObserveError",
    "MastFetchError",
    "NoCoverageError",
    "NoProductsError",
    "DownloadError",
    "CorruptFitsError",
    "FitsUnitError",
    "FitsWcsError",
]


class ObserveError(Exception):
    """Base class of every error raised by :mod:`lensinfer.observe`."""


class MastFetchError(ObserveError):
    """Base class of errors raised while fetching data from MAST."""


class NoCoverageError(MastFetchError):
    """MAST holds no image of the requested instrument/filter covering the target."""


class NoProductsError(MastFetchError):
    """Observations exist, but none of their products match the request (e.g. no DRC/DRZ)."""


class DownloadError(MastFetchError):
    """A download failed: persistent HTTP 5xx / connection errors / timeouts after all
    retries, or a download reported with status ``ERROR`` by astroquery."""


class CorruptFitsError(ObserveError):
    """A FITS file is truncated, unreadable, fails its CHECKSUM/DATASUM verification, or has
    no 2-D image extension."""


class FitsUnitError(ObserveError, ValueError):
    """A FITS image carries a BUNIT that cannot be converted to electrons per second."""


class FitsWcsError(ObserveError, ValueError):
    """A FITS image has no usable celestial WCS (RA/Dec axes), so the lens cannot be located in it."""
