"""HST image → the network's input grid, two ways (``observations.preprocess``).

``reference`` (:func:`reference_cutout`): the published analysis' input (Zhang, Şengül & Dvorkin 2023; science.md
§5 — "raw count rates (e⁻/s), not normalised", lens light included): ``num_pix`` × ``num_pix`` pixels of a
north-up frame at the instrument's pixel scale, cut at the catalogue position; nothing else.

``calibrated`` (:func:`preprocess_fits`, observations.md §3), each step recorded in the result's metadata:

1. verify the file (FITS checksums, full read), read the science image (``SCI``) and its WCS;
2. units: BUNIT must be electrons per second or an electron/count total (÷ EXPTIME);
3. cut a working region around the target (``Cutout2D``, partial, NaN fill);
4. background: sigma-clipped median of an annulus (default 8"–12") around the target,
   subtracted (AstroDrizzle leaves residual sky pedestals; the reference cutouts had
   0.04–0.24 e-/s of it while the simulations have a zero-mean background, science.md §5);
5. recentre: HST and SDSS astrometry differ by 0.1–0.3", so the lens-light centre is found
   as the brightest smoothed pixel within ``centroid_search_radius_arcsec`` of the catalogue
   position, refined by a Gaussian-windowed centroid (mean-shift to the point where the
   windowed first moment vanishes, like SExtractor's XWIN), exact for point-symmetric light;
6. resample flux-conservingly onto a north-up, east-left TAN grid centred on that centroid,
   with lenstronomy's centre convention (grid centre at pixel (N−1)/2): ``reproject_exact``
   (exact spherical-polygon overlap, × output/input pixel area) or ``reproject_adaptive``
   with ``conserve_flux=True``;
7. noise: resampling correlates noise, so σ is *measured* (sigma-clipped std) on the same
   annulus of the resampled working grid rather than propagated analytically;
8. convert to the simulator's zero point (× 10^(−0.4 (ZP_in − ZP_out))).

The lens light is kept (the reference simulations include it). The circular analysis mask is
*not* applied to the saved image: the reference whitens first and masks afterwards
(science.md §2), so the mask is saved alongside (:func:`write_preprocessed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area, proj_plane_pixel_scales
from reproject import reproject_adaptive, reproject_exact
from scipy import ndimage

from .errors import FitsUnitError
from .fitsio import celestial_wcs, find_science_hdu, orientation_deg, tan_wcs, verify_fits
from .lenses import LensSpec
from .photometry import ab_zero_point, count_rate_factor, zero_point_scale

__all__ = [
    "ResampleMethod",
    "PreprocessResult",
    "preprocess_fits",
    "reference_cutout",
    "REFERENCE_SCALE_RTOL",
    "REFERENCE_MAX_ROTATION_DEG",
    "circular_mask",
    "apply_circular_mask",
    "write_preprocessed",
    "observation_label",
    "MultiBandPreprocessResult",
    "fits_band_extensions",
    "preprocess_fits_bands",
    "write_preprocessed_bands",
]

ResampleMethod = Literal["exact", "adaptive"]

_MIN_ANNULUS_PIXELS = 200


@dataclass(frozen=True)
class PreprocessResult:
    """Output of :func:`preprocess_fits`.

    Attributes:
        image: (N, N) float32, background-subtracted count rate at ``zero_point_out``,
            north up / east left, lens-light centroid at pixel ((N−1)/2, (N−1)/2);
            pixels without input data are 0.
        noise_sigma: per-pixel background noise σ of ``image`` (same units).
        valid: (N, N) bool, pixels fully covered by valid input data.
        noise_sample: resampled annulus pixels (same units) σ was measured on, for diagnostics.
        metadata: JSON-serialisable record of every step (see module docstring).
    """

    image: np.ndarray
    noise_sigma: float
    valid: np.ndarray
    noise_sample: np.ndarray
    metadata: dict[str, Any]


def _keyword(key: str, *headers: fits.Header) -> Any:
    """First value of ``key`` among ``headers`` (SCI before PRIMARY), or None."""
    for header in headers:
        if key in header:
            return header[key]
    return None


def _annulus(shape: tuple[int, int], centre_xy: tuple[float, float], r_in_px: float, r_out_px: float) -> np.ndarray:
    """Pixels whose centres lie at r_in ≤ distance ≤ r_out from ``centre_xy`` (x=column, y=row)."""
    y, x = np.indices(shape)
    r2 = (x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2
    return (r2 >= r_in_px**2) & (r2 <= r_out_px**2)


def _clipped_stats(values: np.ndarray, what: str) -> tuple[float, float]:
    """3σ-clipped median and standard deviation of the finite ``values``."""
    values = values[np.isfinite(values)]
    if values.size < _MIN_ANNULUS_PIXELS:
        raise ValueError(
            f"{what}: only {values.size} valid pixels in the background annulus (need {_MIN_ANNULUS_PIXELS}); "
            "fetch a larger cutout or change background_annulus_arcsec"
        )
    _, median, std = sigma_clipped_stats(values, sigma=3.0, maxiters=10)
    return float(median), float(std)


def _windowed_centroid(
    image: np.ndarray, start_xy: tuple[float, float], window_px: float, max_iter: int = 2000
) -> tuple[float, float]:
    """Point (x, y) where the Gaussian-windowed first moment of ``image`` vanishes.

    Mean-shift iteration: the window is moved to the windowed centroid until it stops moving
    (1e-6 px). Its fixed point is the peak of the window-smoothed light, which is exactly the
    centre of any point-symmetric light distribution (elliptical Sérsic, Einstein ring).
    """
    half = int(math.ceil(6.0 * window_px)) + 3
    x0, y0 = int(round(start_xy[0])), int(round(start_xy[1]))
    ys, xs = slice(max(y0 - half, 0), y0 + half + 1), slice(max(x0 - half, 0), x0 + half + 1)
    box = np.nan_to_num(image[ys, xs])
    y, x = np.indices(box.shape)
    x, y = x + xs.start, y + ys.start
    cx, cy = start_xy
    for _ in range(max_iter):
        weights = box * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * window_px**2))
        total = weights.sum()
        if not total > 0:
            raise ValueError(f"no lens light to centre on near pixel {start_xy}")
        nx, ny = float((weights * x).sum() / total), float((weights * y).sum() / total)
        if math.hypot(nx - start_xy[0], ny - start_xy[1]) > half - 3.0 * window_px:
            raise ValueError(f"lens-light centroid wandered off from pixel {start_xy}")
        if math.hypot(nx - cx, ny - cy) < 1e-6:
            return nx, ny
        cx, cy = nx, ny
    raise ValueError(f"lens-light centroid did not converge near pixel {start_xy}")


def _find_centroid(
    image: np.ndarray, target_xy: tuple[float, float], search_px: float, window_px: float
) -> tuple[float, float]:
    """Brightest smoothed pixel within ``search_px`` of the target, refined by
    :func:`_windowed_centroid`."""
    smooth = ndimage.gaussian_filter(np.nan_to_num(image), sigma=max(window_px / 2.0, 1.0))
    near = _annulus(image.shape, target_xy, 0.0, search_px)
    if not near.any():
        raise ValueError("centroid search region lies outside the image")
    peak = np.unravel_index(np.argmax(np.where(near, smooth, -np.inf)), image.shape)
    return _windowed_centroid(image, (float(peak[1]), float(peak[0])), window_px)


def _resample(
    data: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape_out: tuple[int, int], method: ResampleMethod
) -> tuple[np.ndarray, np.ndarray]:
    """Flux-conserving resampling (per-pixel fluxes in, per-pixel fluxes out) + footprint."""
    if method == "exact":
        area_ratio = proj_plane_pixel_area(wcs_out) / proj_plane_pixel_area(wcs_in)
        out, footprint = reproject_exact((data, wcs_in), wcs_out, shape_out=shape_out)
        return out * area_ratio, footprint
    return reproject_adaptive((data, wcs_in), wcs_out, shape_out=shape_out, conserve_flux=True)


@dataclass(frozen=True)
class _Input:
    """Science image in e-/s (invalid pixels NaN) with its WCS and header facts."""

    data: np.ndarray
    wcs: WCS
    bunit: str
    exptime: float | None
    unit_factor: float
    zero_point: float
    instrument: str | None
    filter_name: str | None


def _read_input(path: Path, bunit: str | None, zero_point: float | None, extver: int | None = None,
                require_zero_point: bool = True) -> _Input:
    """Verify ``path`` and read its science image, converted to e-/s (see :class:`_Input`).

    ``extver`` selects the ``SCI`` (and ``WHT``) extension of that EXTVER — one band of a multi-band file.
    ``require_zero_point=False`` (reference cutouts: no flux rescaling) records the header zero point when there is
    one and ``nan`` otherwise instead of failing.

    Raises:
        FitsWcsError: the science image has no celestial WCS (checked before any coordinate is used).
        FitsUnitError: no/unknown BUNIT; no PHOTFLAM/PHOTPLAM when the zero point is needed and
            ``observations.zero_point`` is not set.
    """
    verify_fits(path)
    with fits.open(path, memmap=False) as hdul:
        sci = find_science_hdu(hdul) if extver is None else hdul["SCI", extver]
        headers = (sci.header, hdul[0].header)
        wcs = celestial_wcs(sci.header, hdul, path)
        unit = bunit if bunit is not None else _keyword("BUNIT", *headers)
        if unit is None:
            raise FitsUnitError(f"{path.name}: no BUNIT keyword; pass bunit= if the unit is known")
        exptime = _keyword("EXPTIME", *headers)
        exptime = None if exptime is None else float(exptime)
        unit_factor = count_rate_factor(str(unit), exptime)
        if zero_point is None:
            photflam, photplam = _keyword("PHOTFLAM", *headers), _keyword("PHOTPLAM", *headers)
            if photflam is not None and photplam is not None:
                zero_point = ab_zero_point(float(photflam), float(photplam))
            elif require_zero_point:
                missing = " and ".join(k for k, v in (("PHOTFLAM", photflam), ("PHOTPLAM", photplam)) if v is None)
                raise FitsUnitError(
                    f"{path.name}: no {missing} keyword, so its AB zero point is unknown; set "
                    "observations.zero_point in the config to the frames' zero point (e.g. 25.94 for ACS/WFC "
                    "F814W), or use observations.preprocess: reference (no flux rescaling)"
                )
            else:
                zero_point = math.nan
        data = np.asarray(sci.data, dtype=np.float64) * unit_factor
        invalid = ~np.isfinite(data)
        if extver is None:
            weight = hdul["WHT"].data if "WHT" in hdul else None
        else:
            weight = hdul["WHT", extver].data if ("WHT", extver) in hdul else None
        if weight is not None and weight.shape == data.shape:
            invalid |= ~(weight > 0)  # drizzled frames: SCI = 0 where nothing was observed
        instrument = _keyword("INSTRUME", *headers)
        # ACS has two filter wheels (FILTER1/FILTER2); the unused one reads CLEAR*
        wheels = [_keyword(key, *headers) for key in ("FILTER", "FILTER1", "FILTER2")]
        filter_name = next((str(f) for f in wheels if f and not str(f).upper().startswith("CLEAR")), None)
        return _Input(
            data=np.where(invalid, np.nan, data),
            wcs=wcs,
            bunit=str(unit),
            exptime=exptime,
            unit_factor=unit_factor,
            zero_point=float(zero_point),
            instrument=None if instrument is None else str(instrument),
            filter_name=filter_name,
        )


def _valid_resampled(footprint: np.ndarray, region: np.ndarray, wcs_in: WCS, wcs_out: WCS) -> np.ndarray:
    """Output pixels fully inside the input region and free of NaN input pixels."""
    valid = np.nan_to_num(footprint) > 0.999
    bad = ~np.isfinite(region)
    if bad.any():
        bad_fraction, _ = reproject_exact((bad.astype(np.float64), wcs_in), wcs_out, shape_out=footprint.shape)
        valid &= np.nan_to_num(bad_fraction, nan=1.0) < 1e-3
    return valid


def preprocess_fits(
    path: str | os.PathLike[str],
    *,
    ra: float,
    dec: float,
    pixel_scale_arcsec: float,
    num_pix: int,
    zero_point_out: float,
    zero_point_in: float | None = None,
    bunit: str | None = None,
    recenter: bool = True,
    subtract_background: bool = True,
    background_annulus_arcsec: tuple[float, float] = (8.0, 12.0),
    centroid_search_radius_arcsec: float = 0.5,
    centroid_window_arcsec: float = 0.2,
    method: ResampleMethod = "exact",
    extver: int | None = None,
    centre_radec: tuple[float, float] | None = None,
) -> PreprocessResult:
    """Preprocess one HST image onto a ``num_pix`` × ``num_pix`` north-up grid.

    Args:
        path: FITS file with a ``SCI`` extension (or a first 2-D image HDU) and a celestial WCS.
        ra, dec: catalogue position of the lens (degrees).
        pixel_scale_arcsec, num_pix: the simulator's grid.
        zero_point_out: AB zero point of the simulator's count rates (25.127 in the reference).
        zero_point_in: AB zero point of the input; ``None`` → from PHOTFLAM/PHOTPLAM
            (SCI header, else PRIMARY).
        bunit: unit override for files without BUNIT (otherwise BUNIT is required).
        recenter: centre the grid on the measured lens-light centroid (else on ``ra``/``dec``).
        subtract_background: subtract the sigma-clipped median of the annulus.
        background_annulus_arcsec: inner/outer radius of the background/noise annulus around
            the target. The input must cover it (≥ 200 valid pixels): a 30" HAPCut cutout for
            the default. Far out, so that the wings of the lens light (SLACS ellipticals have
            R_eff ≈ 1–2") are not mistaken for sky.
        centroid_search_radius_arcsec: the lens-light peak is searched within this radius.
        centroid_window_arcsec: σ of the Gaussian centroid window (keep it well inside the
            Einstein ring so the arcs do not pull the centroid).
        method: ``"exact"`` (reproject_exact × pixel-area ratio; no extra smoothing) or
            ``"adaptive"`` (reproject_adaptive with ``conserve_flux=True``; its kernel smooths
            the noise even between equal pixel scales).
        extver: read the ``SCI``/``WHT`` extensions of this EXTVER (one band of a multi-band file,
            see :func:`preprocess_fits_bands`); default: the first science image.
        centre_radec: grid centre (deg) imposed instead of a measured one (no recentring): the
            other bands of a multi-band observation share the reference band's centroid.

    Raises:
        CorruptFitsError: the file fails verification.
        FitsUnitError: unknown/missing BUNIT, or missing photometric keywords.
        ValueError: bad arguments, too little data in the annulus, centroid failure.
    """
    r_in, r_out = background_annulus_arcsec
    if not 0 <= r_in < r_out:
        raise ValueError(f"background_annulus_arcsec must satisfy 0 <= inner < outer, got {background_annulus_arcsec}")
    if num_pix < 2 or pixel_scale_arcsec <= 0:
        raise ValueError(f"bad grid: num_pix={num_pix}, pixel_scale_arcsec={pixel_scale_arcsec}")
    if method not in ("exact", "adaptive"):
        raise ValueError(f"unknown resampling method {method!r}; use 'exact' or 'adaptive'")
    p = Path(path)
    src = _read_input(p, bunit, zero_point_in, extver)
    scales_in = proj_plane_pixel_scales(src.wcs) * 3600.0
    scale_in = float(np.mean(scales_in))
    target = SkyCoord(ra, dec, unit="deg")

    # input region: the annulus plus margins for the centroid search and the resampling
    half_in = r_out + centroid_search_radius_arcsec + 4.0 * scale_in
    cut = Cutout2D(src.data, target, 2.0 * half_in * u.arcsec, wcs=src.wcs, mode="partial", fill_value=np.nan)
    tx, ty = (float(v) for v in cut.wcs.world_to_pixel(target))
    annulus_in = _annulus(cut.data.shape, (tx, ty), r_in / scale_in, r_out / scale_in)
    level_in, sigma_in = _clipped_stats(cut.data[annulus_in], p.name)
    region = cut.data - (level_in if subtract_background else 0.0)

    centre = target
    if centre_radec is not None:
        centre = SkyCoord(*centre_radec, unit="deg")
    elif recenter:
        cx, cy = _find_centroid(
            region, (tx, ty), centroid_search_radius_arcsec / scale_in, centroid_window_arcsec / scale_in
        )
        centre = cut.wcs.pixel_to_world(cx, cy)

    # working grid = output grid extended symmetrically (same pixel phase) to hold the annulus
    k = max(0, math.ceil(r_out / pixel_scale_arcsec - num_pix / 2.0))
    m = num_pix + 2 * k
    wcs_work = tan_wcs(
        ra=float(centre.ra.deg), dec=float(centre.dec.deg), pixel_scale_arcsec=pixel_scale_arcsec, shape=(m, m)
    )
    resampled, footprint = _resample(np.nan_to_num(region, nan=0.0), cut.wcs, wcs_work, (m, m), method)
    valid_work = _valid_resampled(footprint, region, cut.wcs, wcs_work)
    resampled = np.where(valid_work, resampled, 0.0)
    centre_work = ((m - 1) / 2.0, (m - 1) / 2.0)
    annulus_out = _annulus((m, m), centre_work, r_in / pixel_scale_arcsec, r_out / pixel_scale_arcsec) & valid_work
    _, sigma = _clipped_stats(resampled[annulus_out], f"{p.name} (resampled)")

    flux_scale = zero_point_scale(src.zero_point, zero_point_out)
    crop = slice(k, k + num_pix)
    image = (resampled[crop, crop] * flux_scale).astype(np.float32)
    valid = valid_work[crop, crop]
    n_invalid = int(np.count_nonzero(~valid))
    if n_invalid:
        warnings.warn(f"{p.name}: {n_invalid} output pixels lack input data and were set to 0", stacklevel=2)
    east, north = (float(a.to_value(u.arcsec)) for a in target.spherical_offsets_to(centre))
    metadata: dict[str, Any] = {
        "input_file": p.name,
        "input_bunit": src.bunit,
        "input_exptime_s": src.exptime,
        "input_unit_factor": src.unit_factor,
        "input_pixel_scale_arcsec": [float(v) for v in scales_in],
        "input_orientation_deg": orientation_deg(src.wcs),
        "input_instrument": src.instrument,
        "input_filter": src.filter_name,
        "target_ra_deg": float(ra),
        "target_dec_deg": float(dec),
        "centre_ra_deg": float(centre.ra.deg),
        "centre_dec_deg": float(centre.dec.deg),
        "recentred": bool(recenter) and centre_radec is None,
        "centroid_shift_arcsec_east_north": [east, north],
        "centroid_shift_px_xy": [-east / pixel_scale_arcsec, north / pixel_scale_arcsec],
        "background_annulus_arcsec": [float(r_in), float(r_out)],
        "background_level_input_e_per_s_per_pixel": level_in,
        "background_sigma_input_e_per_s_per_pixel": sigma_in,
        "background_subtracted": bool(subtract_background),
        "resampling_method": method,
        "num_pix": int(num_pix),
        "pixel_scale_arcsec": float(pixel_scale_arcsec),
        "grid": "TAN, north up, east left; grid centre (lens-light centroid) at pixel ((N-1)/2, (N-1)/2)",
        "zero_point_in": src.zero_point,
        "zero_point_out": float(zero_point_out),
        "zero_point_flux_scale": float(flux_scale),
        "units": f"electrons/s at AB zero point {zero_point_out}",
        "noise_sigma": float(sigma * flux_scale),
        "n_invalid_pixels": n_invalid,
        "preprocess": "calibrated",
        "steps": [
            f"units: BUNIT {src.bunit!r} x {src.unit_factor:g} -> electrons/s",
            (f"background: 3-sigma-clipped median of the {r_in}-{r_out} arcsec annulus ({level_in:.4g} e-/s) "
             "subtracted") if subtract_background else "background: not subtracted",
            ("recentred on the lens-light centroid" if recenter and centre_radec is None
             else "centred on the catalogue position" if centre_radec is None else "centred on the reference band"),
            f"resampled ({method}, flux-conserving) onto a north-up TAN grid of {num_pix} x "
            f"{pixel_scale_arcsec} arcsec",
            f"flux x {flux_scale:.6g} (zero point {src.zero_point:.4f} -> {zero_point_out})",
        ],
    }
    return PreprocessResult(
        image=image,
        noise_sigma=float(sigma * flux_scale),
        valid=valid,
        noise_sample=(resampled[annulus_out] * flux_scale).astype(np.float32),
        metadata=metadata,
    )


#: Relative tolerance on the frame's pixel scale for a reference cutout (no resampling): 1e-3 moves the edge of a
#: 100-pixel cutout by 0.05 px against the instrument's grid.
REFERENCE_SCALE_RTOL = 1e-3
#: Largest rotation (deg) of the frame's pixel grid from north-up (CD matrix, like HST's ORIENTAT) accepted for a
#: reference cutout: 0.01 deg turns the corner of a 100-pixel cutout by 0.01 px.
REFERENCE_MAX_ROTATION_DEG = 0.01


def _difference_noise(image: np.ndarray, valid: np.ndarray) -> tuple[float, np.ndarray]:
    """Pixel-to-pixel noise σ of an image that still holds its sky and lens light: 3σ-clipped std of the horizontal
    differences of neighbouring valid pixels in the four corners (side N/8, at least 4 px; 12 px on the published
    100-pixel cutouts, science.md §5), divided by √2. Differencing removes the smooth sky and lens-light gradient.
    Returns σ and the differences / √2 (the sample, for the diagnostic histogram)."""
    n_rows, n_cols = image.shape
    c = max(min(n_rows, n_cols) // 8, 4)
    samples = []
    for rows in (slice(0, c), slice(n_rows - c, n_rows)):
        for cols in (slice(0, c), slice(n_cols - c, n_cols)):
            block, ok = image[rows, cols].astype(np.float64), valid[rows, cols]
            pair = ok[:, 1:] & ok[:, :-1]
            samples.append(((block[:, 1:] - block[:, :-1]) / math.sqrt(2.0))[pair])
    sample = np.concatenate(samples)
    if sample.size < 20:
        return math.nan, sample
    _, median, std = sigma_clipped_stats(sample, sigma=3.0, maxiters=10)
    return float(std), sample


def reference_cutout(
    path: str | os.PathLike[str],
    *,
    ra: float,
    dec: float,
    pixel_scale_arcsec: float,
    num_pix: int,
    bunit: str | None = None,
    scale_rtol: float = REFERENCE_SCALE_RTOL,
    max_rotation_deg: float = REFERENCE_MAX_ROTATION_DEG,
) -> PreprocessResult:
    """The published analysis' input (``observations.preprocess: reference``; science.md §5): a ``num_pix`` ×
    ``num_pix`` block of the frame's own pixels at the catalogue position, in e⁻/s.

    No background subtraction, no flux rescaling (the zero point is recorded, not applied), no recentring, no
    resampling: the frame must already be north-up/east-left at the instrument's pixel scale (a HAPCut cutout of
    the HAP mosaics at 0.04″ is). The block is the one whose centre, pixel ((N−1)/2, (N−1)/2) in lenstronomy's
    convention, lies nearest the catalogue position: its first column is ``round(x_cat − (N−1)/2)`` (halves
    rounded up), likewise for rows; the catalogue position's offset from the cutout centre (|·| ≤ 0.5 px) is
    recorded. Pixel values are copied bit for bit from an e⁻/s frame (totals such as ``ELECTRONS`` are divided by
    EXPTIME); pixels without data (NaN, or WHT ≤ 0) become 0 and are excluded from ``valid``.

    Raises:
        CorruptFitsError, FitsWcsError, FitsUnitError: unreadable file, no celestial WCS, unknown BUNIT.
        ValueError: a pixel scale other than ``pixel_scale_arcsec``, a frame that is not north-up/east-left, or a
            cutout reaching beyond the frame — each naming the file and what to change.
    """
    if num_pix < 2 or pixel_scale_arcsec <= 0:
        raise ValueError(f"bad grid: num_pix={num_pix}, pixel_scale_arcsec={pixel_scale_arcsec}")
    p = Path(path)
    src = _read_input(p, bunit, None, require_zero_point=False)
    scales = proj_plane_pixel_scales(src.wcs) * 3600.0
    if not np.allclose(scales, pixel_scale_arcsec, rtol=scale_rtol, atol=0.0):
        raise ValueError(
            f"{p.name}: pixel scale {scales[0]:.5g}\" x {scales[1]:.5g}\" differs from instrument.pixel_scale "
            f"{pixel_scale_arcsec}\" (relative tolerance {scale_rtol:g}); observations.preprocess: reference cuts "
            "the frame's own pixels without resampling. Fetch a frame at the instrument's scale (observations.mast."
            "method: hapcut gives 0.04\" north-up cutouts) or use observations.preprocess: calibrated (resamples)"
        )
    m = src.wcs.pixel_scale_matrix
    rotation = orientation_deg(src.wcs)
    if not (m[0, 0] < 0 < m[1, 1] and abs(rotation) <= max_rotation_deg):
        raise ValueError(
            f"{p.name}: the frame is not north-up/east-left (position angle of +y {rotation:.3f} deg, CD "
            f"{(m * 3600.0).round(6).tolist()} arcsec/px); observations.preprocess: reference does not rotate or "
            "resample. Use a north-up frame (HAPCut) or observations.preprocess: calibrated"
        )
    target = SkyCoord(ra, dec, unit="deg")
    tx, ty = (float(v) for v in src.wcs.world_to_pixel(target))
    half = (num_pix - 1) / 2.0
    x0, y0 = math.floor(tx - half + 0.5), math.floor(ty - half + 0.5)
    n_rows, n_cols = src.data.shape
    if x0 < 0 or y0 < 0 or x0 + num_pix > n_cols or y0 + num_pix > n_rows:
        raise ValueError(
            f"{p.name}: a {num_pix} x {num_pix} cutout at the catalogue position (pixel {tx:.1f}, {ty:.1f}) reaches "
            f"beyond the {n_cols} x {n_rows} frame; fetch a larger frame (observations.mast.size_arcsec)"
        )
    block = src.data[y0:y0 + num_pix, x0:x0 + num_pix]
    valid = np.isfinite(block)
    image = np.where(valid, block, 0.0).astype(np.float32)
    n_invalid = int(np.count_nonzero(~valid))
    if n_invalid:
        warnings.warn(f"{p.name}: {n_invalid} cutout pixels lack input data and were set to 0", stacklevel=2)
    sigma, sample = _difference_noise(image, valid)
    zp = None if math.isnan(src.zero_point) else src.zero_point
    local = target.directional_offset_by(0.0, 1.0 * u.arcsec)  # 1" north of the lens
    nx_, ny_ = (float(v) for v in src.wcs.world_to_pixel(local))
    metadata: dict[str, Any] = {
        "preprocess": "reference",
        "steps": [
            f"units: BUNIT {src.bunit!r} x {src.unit_factor:g} -> electrons/s",
            f"cut {num_pix} x {num_pix} frame pixels (columns {x0}..{x0 + num_pix - 1}, rows {y0}..{y0 + num_pix - 1}) "
            "at the catalogue position",
            "no background subtraction, no flux rescaling, no recentring, no resampling",
        ],
        "input_file": p.name,
        "input_bunit": src.bunit,
        "input_exptime_s": src.exptime,
        "input_unit_factor": src.unit_factor,
        "input_pixel_scale_arcsec": [float(v) for v in scales],
        "input_orientation_deg": rotation,
        "north_from_y_axis_at_target_deg": math.degrees(math.atan2(-(nx_ - tx), ny_ - ty)),
        "input_instrument": src.instrument,
        "input_filter": src.filter_name,
        "input_shape": [int(n_rows), int(n_cols)],
        "target_ra_deg": float(ra),
        "target_dec_deg": float(dec),
        "target_pixel_in_frame_xy": [tx, ty],
        "cutout_origin_xy": [int(x0), int(y0)],
        "target_offset_from_cutout_centre_px_xy": [tx - x0 - half, ty - y0 - half],
        "centre_ra_deg": float(ra),
        "centre_dec_deg": float(dec),
        "recentred": False,
        "centroid_shift_arcsec_east_north": [0.0, 0.0],
        "centroid_shift_px_xy": [0.0, 0.0],
        "background_subtracted": False,
        "resampled": False,
        "num_pix": int(num_pix),
        "pixel_scale_arcsec": float(pixel_scale_arcsec),
        "grid": ("the frame's own pixels (north up, east left); catalogue position within 0.5 px of pixel "
                 "((N-1)/2, (N-1)/2)"),
        "zero_point_in": zp,
        "zero_point_out": zp,
        "zero_point_flux_scale": 1.0,
        "units": "electrons/s, raw (sky and lens light included)",
        "noise_sigma": sigma,
        "noise_sigma_method": "3-sigma-clipped std of neighbour differences / sqrt(2) in the four N/8 corners",
        "n_invalid_pixels": n_invalid,
    }
    return PreprocessResult(image=image, noise_sigma=sigma, valid=valid, noise_sample=sample.astype(np.float32),
                            metadata=metadata)


def circular_mask(shape: tuple[int, int], centre_xy: tuple[float, float], radius_px: float) -> np.ndarray:
    """Boolean mask, True inside the circle (distance ≤ radius, as lenstronomy's
    ``mask_util.mask_center_2d``). ``centre_xy`` = (column, row) in 0-based pixel coordinates,
    pixel centres at integer positions, so the grid centre is ((N−1)/2, (N−1)/2)."""
    return _annulus(shape, centre_xy, 0.0, radius_px)


def apply_circular_mask(image: np.ndarray, centre_xy: tuple[float, float], radius_px: float) -> np.ndarray:
    """``image`` with every pixel outside :func:`circular_mask` set to 0 (the reference's
    masking of whitened images)."""
    return np.where(circular_mask(image.shape, centre_xy, radius_px), image, 0).astype(image.dtype)


def _diagnostic_figure(
    result: PreprocessResult, lens: LensSpec, centre_xy: tuple[float, float], radius_px: float, path: Path,
    observation: Mapping[str, Any] | None = None,
) -> None:
    """Three panels: asinh image with mask and compass, masked S/N map, noise histogram.
    Object-oriented Matplotlib on the Agg canvas: no pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    sigma = result.noise_sigma if result.noise_sigma > 0 else 1.0  # False for NaN too
    n = result.image.shape[0]
    fig = Figure(figsize=(13.5, 4.6), layout="constrained")
    if observation:
        fig.suptitle(observation_label(observation, result.metadata), fontsize=9)
    FigureCanvasAgg(fig)
    ax_img, ax_snr, ax_hist = fig.subplots(1, 3)

    shown = ax_img.imshow(np.arcsinh(result.image / (3.0 * sigma)), origin="lower", cmap="magma")
    fig.colorbar(shown, ax=ax_img, label="asinh(image / 3σ)")
    ax_img.add_patch(Circle(centre_xy, radius_px, fill=False, color="cyan", lw=1.0))
    ax_img.plot([(n - 1) / 2.0], [(n - 1) / 2.0], "+", color="cyan", ms=10)
    arrow = {"arrowstyle": "->", "color": "w"}
    for label, tip in (("N", (0.9, 0.95)), ("E", (0.73, 0.78))):  # north up, east left
        ax_img.annotate(label, xy=tip, xytext=(0.9, 0.78), xycoords="axes fraction", color="w", arrowprops=arrow)
    md = result.metadata
    scale, pa = md["pixel_scale_arcsec"], md["input_orientation_deg"]
    ax_img.set_title(f"{lens.name}: {n}×{n} @ {scale}″/px, input PA {pa:.1f}°")

    snr = apply_circular_mask(result.image / sigma, centre_xy, radius_px)
    top = max(float(np.percentile(snr, 99.5)), 3.0)
    shown = ax_snr.imshow(snr, origin="lower", cmap="viridis", vmin=-3, vmax=top)
    fig.colorbar(shown, ax=ax_snr, label="image / σ (masked)")
    dx, dy = md["centroid_shift_px_xy"]
    if md.get("preprocess") == "reference":
        ax_snr.set_title(f"cut at the catalogue position; mask r = {radius_px:.1f} px")
    else:
        ax_snr.set_title(f"centroid shift ({dx:+.2f}, {dy:+.2f}) px; mask r = {radius_px:.1f} px")

    z = result.noise_sample / sigma
    bins = np.linspace(-5, 5, 81)
    sample_label = "annulus pixels" if md.get("preprocess") != "reference" else "corner differences / √2"
    ax_hist.hist(z, bins=bins, density=True, histtype="step", color="k", label=sample_label)
    ax_hist.plot(bins, np.exp(-0.5 * bins**2) / math.sqrt(2 * math.pi), color="C3", label="N(0, 1)")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("pixel / σ")
    ax_hist.set_title(f"σ = {result.noise_sigma:.3g} ({md['units']})", fontsize=9)
    ax_hist.legend(fontsize=8)
    fig.savefig(path, dpi=90)


def observation_label(observation: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """One line naming where an observation came from and how it was preprocessed (figure titles, logs)."""
    source = observation.get("source", "?")
    parts = [f"source: {source}"]
    if source == "mast":
        parts.append(f"MAST product {observation.get('product')}")
    elif observation.get("file"):
        parts.append(f"file {Path(str(observation['file'])).name}")
    if observation.get("sha256"):
        parts.append(f"sha256 {str(observation['sha256'])[:12]}…")
    parts.append(f"preprocess: {metadata.get('preprocess', '?')}")
    return " · ".join(parts)


def write_preprocessed(result: PreprocessResult, lens: LensSpec, outdir: str | os.PathLike[str],
                       observation: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``image.npy`` (float32, unmasked), ``mask.npy`` (bool: analysis circle of
    :meth:`LensSpec.mask_geometry` ∧ valid pixels), ``metadata.json`` (preprocessing record + lens + mask + noise σ
    + ``observation``, the provenance of the frame: source, file, sha256, MAST product; no timestamps) and
    ``diagnostic.png`` into ``outdir``.

    The files are written into a temporary folder beside them and renamed into place only when all four exist, so
    a failure never leaves a partial set.

    Returns:
        The written paths keyed ``image``, ``mask``, ``metadata``, ``figure``.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n = result.image.shape[0]
    centre_xy, radius_px = lens.mask_geometry(result.metadata["pixel_scale_arcsec"], n)
    mask = circular_mask(result.image.shape, centre_xy, radius_px) & result.valid
    files = {"image": "image.npy", "mask": "mask.npy", "metadata": "metadata.json", "figure": "diagnostic.png"}
    paths = {key: out / name for key, name in files.items()}
    record = {
        **result.metadata,
        "lens": {
            "name": lens.name,
            "ra_deg": lens.ra_deg,
            "dec_deg": lens.dec_deg,
            "sdss_name": lens.sdss_name,
            "mast_target": lens.mast_target,
            "theta_e_arcsec": lens.theta_e_arcsec,
        },
        "mask_centre_xy": [float(centre_xy[0]), float(centre_xy[1])],
        "mask_radius_px": float(radius_px),
        "mask_n_pixels": int(np.count_nonzero(mask)),
    }
    if observation is not None:
        record["observation"] = dict(observation)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".preprocess-"))
    try:
        np.save(tmp / files["image"], result.image)
        np.save(tmp / files["mask"], mask)
        (tmp / files["metadata"]).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _diagnostic_figure(result, lens, centre_xy, radius_px, tmp / files["figure"], observation)
        for name in files.values():
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Multi-band (ground-based survey) observations: one SCI/WHT pair per band in one file, stacked to (C, H, W)


@dataclass(frozen=True)
class MultiBandPreprocessResult:
    """Output of :func:`preprocess_fits_bands`.

    Attributes:
        bands: band names in channel order.
        reference_band: the band whose lens-light centroid defines the common grid centre.
        image: (C, N, N) float32, each band at its own ``zero_points_out`` value.
        noise_sigma: per-band background σ (same units as each channel).
        valid: (N, N) bool, pixels valid in every band (one shared mask).
        per_band: the single-band results, in channel order.
    """

    bands: list[str]
    reference_band: str
    image: np.ndarray
    noise_sigma: list[float]
    valid: np.ndarray
    per_band: list[PreprocessResult]

    @property
    def metadata(self) -> dict[str, Any]:
        """The reference band's record plus per-band entries (``noise_sigma`` stays the reference band's float)."""
        ref = self.per_band[self.bands.index(self.reference_band)].metadata
        return {
            **ref,
            "bands": list(self.bands),
            "reference_band": self.reference_band,
            "image_layout": "(C, H, W), channels in 'bands' order",
            "noise_sigma_bands": {b: float(v) for b, v in zip(self.bands, self.noise_sigma)},
            "per_band": {b: r.metadata for b, r in zip(self.bands, self.per_band)},
            "n_invalid_pixels": int(np.count_nonzero(~self.valid)),
        }


def fits_band_extensions(path: str | os.PathLike[str]) -> dict[str, int]:
    """Band name (``FILTER`` keyword of each ``SCI`` extension) → its EXTVER, for a multi-band file."""
    out: dict[str, int] = {}
    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            if hdu.name == "SCI":
                name = hdu.header.get("FILTER")
                if name is None:
                    raise FitsUnitError(f"{Path(path).name}: SCI extension {hdu.ver} has no FILTER keyword")
                out[str(name)] = int(hdu.ver)
    return out


def preprocess_fits_bands(
    path: str | os.PathLike[str],
    *,
    bands: list[str],
    reference_band: str,
    ra: float,
    dec: float,
    pixel_scale_arcsec: float,
    num_pix: int,
    zero_points_out: dict[str, float],
    **kwargs: Any,
) -> MultiBandPreprocessResult:
    """Preprocess every band of a multi-band file (one ``SCI``/``WHT`` pair per band, ``FILTER`` = band name)
    onto one common grid: the reference band is recentred on its lens-light centroid
    (:func:`preprocess_fits`), every other band is resampled onto the same centre; the bands are stacked
    in ``bands`` order and the valid-pixel masks combined.

    ``kwargs`` are passed to :func:`preprocess_fits` (``zero_point_in`` is read from each band's
    PHOTFLAM/PHOTPLAM unless given).
    """
    if reference_band not in bands:
        raise ValueError(f"reference band {reference_band!r} is not one of {bands}")
    ext = fits_band_extensions(path)
    missing = [b for b in bands if b not in ext]
    if missing:
        raise ValueError(f"{Path(path).name}: no SCI extension for band(s) {missing}; file has {sorted(ext)}")
    common = dict(ra=ra, dec=dec, pixel_scale_arcsec=pixel_scale_arcsec, num_pix=num_pix, **kwargs)
    ref = preprocess_fits(path, zero_point_out=zero_points_out[reference_band], extver=ext[reference_band], **common)
    centre = (ref.metadata["centre_ra_deg"], ref.metadata["centre_dec_deg"])
    results = []
    for band in bands:
        if band == reference_band:
            results.append(ref)
            continue
        results.append(preprocess_fits(path, zero_point_out=zero_points_out[band], extver=ext[band],
                                       centre_radec=centre, **common))
    valid = np.logical_and.reduce([r.valid for r in results])
    return MultiBandPreprocessResult(
        bands=list(bands), reference_band=reference_band, image=np.stack([r.image for r in results]).astype(np.float32),
        noise_sigma=[r.noise_sigma for r in results], valid=valid, per_band=results,
    )


def write_preprocessed_bands(result: MultiBandPreprocessResult, lens: LensSpec, outdir: str | os.PathLike[str],
                             observation: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Like :func:`write_preprocessed` for a multi-band result: ``image.npy`` (C, N, N) float32, one shared
    ``mask.npy`` (N, N) bool, ``metadata.json`` (reference-band record + per-band entries), and the reference
    band's diagnostic figure."""
    ref_index = result.bands.index(result.reference_band)
    ref = dataclasses.replace(result.per_band[ref_index], valid=result.valid, metadata=result.metadata)
    paths = write_preprocessed(ref, lens, outdir, observation)
    tmp = paths["image"].with_name(f".{paths['image'].name}.part.npy")
    np.save(tmp, result.image)
    os.replace(tmp, paths["image"])
    return paths
