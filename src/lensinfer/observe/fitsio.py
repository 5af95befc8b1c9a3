"""HST-like FITS files: TAN WCS construction, writing, science-HDU lookup and verification.

The writer produces the layout of a drizzled HST product (observations.md §3): an empty
PRIMARY HDU with the observation keywords, a ``SCI`` image (BUNIT, PHOTFLAM/PHOTPLAM, EXPTIME,
TAN WCS with a CD matrix) and a ``WHT`` image (≈ effective exposure time per pixel), each with
CHECKSUM/DATASUM. It is used by the tests and by the mock-observation stage, so that simulated
lenses go through exactly the same preprocessing as real data.

Orientation convention (as HST's ORIENTAT): ``rotation_deg`` is the position angle of the image
+y axis, measured from north through east; 0 means north up, east left.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .errors import CorruptFitsError, FitsWcsError
from .photometry import count_rate_factor, photflam_for_zero_point

__all__ = [
    "F814W_PHOTPLAM",
    "tan_wcs",
    "orientation_deg",
    "write_hst_like_fits",
    "find_science_hdu",
    "celestial_wcs",
    "verify_fits",
]

#: Pivot wavelength (Å) of ACS/WFC F814W, used when only a zero point is given.
F814W_PHOTPLAM = 8045.0

# Fixed checksum comments keep the files byte-identical across runs (astropy would otherwise
# write the current time into the CHECKSUM/DATASUM comments).
_CHECKSUM_COMMENT = "HDU checksum"


def tan_wcs(
    *,
    ra: float,
    dec: float,
    pixel_scale_arcsec: float,
    shape: tuple[int, int],
    rotation_deg: float = 0.0,
) -> WCS:
    """A gnomonic (TAN) WCS with reference point (``ra``, ``dec``) at the array centre.

    The reference pixel is the geometric centre, 0-based ((nx−1)/2, (ny−1)/2) — lenstronomy's
    convention that the image centre (x = y = 0) lies at pixel (N−1)/2. The CD matrix encodes
    the pixel scale and the position angle ``rotation_deg`` of the +y axis (east of north),
    with the sky parity of HST images (east to the left of north when north is up).
    """
    ny, nx = shape
    s = pixel_scale_arcsec / 3600.0
    theta = math.radians(rotation_deg)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cd = [[-s * math.cos(theta), s * math.sin(theta)], [s * math.sin(theta), s * math.cos(theta)]]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    return w


def orientation_deg(wcs: WCS) -> float:
    """Position angle (deg, east of north) of the image +y axis — HST's ORIENTAT,
    atan2(CD1_2, CD2_2) — from any celestial WCS (CD or PC+CDELT)."""
    m = wcs.celestial.pixel_scale_matrix
    return math.degrees(math.atan2(m[0, 1], m[1, 1]))


def write_hst_like_fits(
    path: str | os.PathLike[str],
    image_e_per_s: np.ndarray,
    *,
    pixel_scale_arcsec: float,
    ra: float,
    dec: float,
    exptime: float,
    rotation_deg: float = 0.0,
    zero_point: float | None = None,
    photflam: float | None = None,
    photplam: float | None = None,
    bunit: str = "ELECTRONS/S",
    weight: np.ndarray | None = None,
    instrument: str = "ACS",
    detector: str = "WFC",
    filter_name: str = "F814W",
    extra_header: Mapping[str, Any] | None = None,
) -> Path:
    """Write an image as an HST drizzled-product-like FITS file (PRIMARY + SCI + WHT).

    Args:
        path: output file (overwritten).
        image_e_per_s: 2-D image in electrons per second; the (``ra``, ``dec``) reference point
            is at its centre, pixel ((nx−1)/2, (ny−1)/2).
        pixel_scale_arcsec, rotation_deg: pixel scale and position angle of the +y axis
            (see :func:`tan_wcs`).
        exptime: exposure time (s), written as EXPTIME in PRIMARY and SCI.
        zero_point: AB zero point; alternatively give ``photflam`` (then ``photplam`` too).
            With ``zero_point``, PHOTPLAM defaults to :data:`F814W_PHOTPLAM` and PHOTFLAM is
            derived so that ZP = −2.5 log PHOTFLAM − 5 log PHOTPLAM − 2.408.
        bunit: BUNIT of SCI; rates are written as given, totals (``ELECTRONS``, ``COUNTS``) as
            ``image × exptime`` — a way to test unit handling.
        weight: WHT image (default: constant ``exptime``, as EXP-weighted drizzling gives).
        instrument, detector, filter_name: INSTRUME / DETECTOR / FILTER keywords.
        extra_header: extra PRIMARY keywords (e.g. the true parameters of a mock observation;
            keys longer than 8 characters become HIERARCH cards).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    A mock observation must be large enough for :func:`~lensinfer.observe.preprocess.preprocess_fits`:
    its background annulus has to lie inside the image, so pad a simulated cutout with sky (noise)
    to at least twice the annulus' outer radius plus the centroid search radius.
    """
    image = np.asarray(image_e_per_s, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if (zero_point is None) == (photflam is None):
        raise ValueError("give exactly one of zero_point or photflam (+ photplam)")
    if photflam is not None and photplam is None:
        raise ValueError("photflam needs photplam")
    plam = F814W_PHOTPLAM if photplam is None else photplam
    flam = photflam_for_zero_point(zero_point, plam) if zero_point is not None else photflam
    data = image / count_rate_factor(bunit, exptime)

    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["TELESCOP"] = "HST"
    ph["INSTRUME"] = instrument
    ph["DETECTOR"] = detector
    ph["FILTER"] = filter_name
    ph["EXPTIME"] = (float(exptime), "exposure time (s)")
    for key, value in (extra_header or {}).items():
        ph[key if len(key) <= 8 else f"HIERARCH {key}"] = value

    w = tan_wcs(ra=ra, dec=dec, pixel_scale_arcsec=pixel_scale_arcsec, shape=image.shape, rotation_deg=rotation_deg)
    sci_header = w.to_header()
    sci_header["BUNIT"] = bunit
    sci_header["EXPTIME"] = (float(exptime), "exposure time (s)")
    sci_header["PHOTFLAM"] = (float(flam), "inverse sensitivity, erg/cm2/A/e-")
    sci_header["PHOTPLAM"] = (float(plam), "pivot wavelength (A)")
    sci_header["ORIENTAT"] = (float(rotation_deg), "position angle of image y axis (deg. e of n)")
    sci = fits.ImageHDU(data.astype(np.float32), header=sci_header, name="SCI")
    wht_data = np.full(image.shape, exptime, dtype=np.float32) if weight is None else np.asarray(weight, np.float32)
    if wht_data.shape != image.shape:
        raise ValueError(f"weight shape {wht_data.shape} differs from image shape {image.shape}")
    wht = fits.ImageHDU(wht_data, header=w.to_header(), name="WHT")

    hdul = fits.HDUList([primary, sci, wht])
    for hdu in hdul:
        hdu.add_checksum(when=_CHECKSUM_COMMENT)
    out = Path(path)
    hdul.writeto(out, overwrite=True)
    return out


def find_science_hdu(hdul: fits.HDUList) -> fits.ImageHDU | fits.PrimaryHDU:
    """The science image of an HST file: the ``SCI`` extension if present (drizzled products,
    HAPCut cutouts), else the first HDU holding a 2-D image (e.g. astrocut's ``CUTOUT``).

    Raises:
        CorruptFitsError: no 2-D image HDU.
    """
    if "SCI" in hdul:
        hdu = hdul["SCI"]
        if hdu.data is not None and hdu.data.ndim == 2:
            return hdu
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.data is not None:
            if hdu.data.ndim == 2:
                return hdu
    raise CorruptFitsError(f"{hdul.filename() or 'FITS file'}: no 2-D image HDU")


def celestial_wcs(header: fits.Header, hdul: fits.HDUList | None, path: str | os.PathLike[str]) -> WCS:
    """The celestial (RA/Dec) part of ``header``'s WCS, checked before any coordinate is converted.

    A frame without one (no CTYPE/CRVAL/CD keywords, or only non-celestial axes) would otherwise fail deep inside
    wcslib ("NULL error object") or silently treat pixels as degrees.

    Raises:
        FitsWcsError: naming ``path``, when the header has no celestial WCS or wcslib rejects it.
    """
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's FITSFixedWarning chatter on odd but valid headers
            w = WCS(header, hdul)
    except Exception as err:  # wcslib errors come as several exception types
        raise FitsWcsError(f"{name}: invalid WCS in the science header ({type(err).__name__}: {err})") from err
    if not w.has_celestial:
        ctypes = [c for c in w.wcs.ctype if c] or ["none"]
        raise FitsWcsError(
            f"{name}: the science image has no celestial WCS (CTYPE: {', '.join(ctypes)}); a frame needs "
            "RA---TAN/DEC--TAN (or another celestial projection) with CRVAL, CRPIX and CD/CDELT keywords "
            "to locate the lens"
        )
    cel = w.celestial
    m = cel.pixel_scale_matrix
    if not (np.all(np.isfinite(m)) and abs(float(np.linalg.det(m))) > 0):
        raise FitsWcsError(f"{name}: the celestial WCS has a singular or non-finite CD matrix ({m.tolist()})")
    return cel


def verify_fits(path: str | os.PathLike[str]) -> None:
    """Check that a FITS file is complete and intact.

    Opens with ``checksum=True`` (HST files carry CHECKSUM/DATASUM; astropy only *warns* on a
    mismatch, which is turned into an error here), reads every data unit in full (catching
    truncation) and requires a 2-D science image.

    Raises:
        CorruptFitsError: with the reason.
    """
    p = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(p, checksum=True, memmap=False) as hdul:
                for hdu in hdul:
                    _ = hdu.data  # memmap=False: reads the whole data unit (raises if truncated)
                find_science_hdu(hdul)
    except CorruptFitsError:
        raise
    except Exception as err:  # astropy raises OSError, TypeError, ValueError … on damaged files
        raise CorruptFitsError(f"{p}: unreadable FITS ({type(err).__name__}: {err})") from err
    problems = [
        str(w.message).strip()
        for w in caught
        if any(word in str(w.message).lower() for word in ("checksum", "datasum", "truncat", "corrupt"))
    ]
    if problems:
        raise CorruptFitsError(f"{p}: " + "; ".join(problems))
