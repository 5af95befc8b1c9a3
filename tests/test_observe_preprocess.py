"""Preprocessing on synthetic drizzled HST-like files (issue 5, item 4).

The synthetic scene is rendered analytically (5×5 sub-pixel integration) on a rotated 0.05"/pix
TAN grid: an elliptical Sérsic lens displaced from the catalogue position (the HST–SDSS
astrometric offset to recover), a Gaussian Einstein ring, and two compact blobs 1.7" north and
0.7" east of the lens that break the symmetry (their landing pixels prove north-up/east-left).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from reproject import reproject_exact, reproject_adaptive

from lensinfer.observe.errors import CorruptFitsError, FitsUnitError
from lensinfer.observe.fitsio import tan_wcs, write_hst_like_fits
from lensinfer.observe.lenses import LensSpec, reference_lens
from lensinfer.observe.preprocess import (
    PreprocessResult,
    apply_circular_mask,
    circular_mask,
    preprocess_fits,
    write_preprocessed,
)

RA, DEC = 146.73617, 10.11467  # catalogue position of SDSS J0946+1006
S_IN, ROTATION, N_IN = 0.05, 30.0, 200  # input: drizzled-like, rotated 30 deg, 10" x 10"
S_OUT, N_OUT = 0.04, 100  # the published configuration's grid
OFFSET_EN = (0.13, -0.08)  # true lens position relative to the catalogue (arcsec east, north)
NORTH_BLOB, EAST_BLOB = 1.7, 0.7  # arcsec from the lens, clear of the 1.2" ring
SIGMA_IN, PEDESTAL = 0.006, 0.1  # e-/s per input pixel
ANNULUS = (2.5, 4.0)  # the synthetic frame is smaller than a real HAPCut cutout
ZP_ACS = 25.95
TRUE_CENTRE = SkyCoord(RA, DEC, unit="deg").spherical_offsets_by(OFFSET_EN[0] * u.arcsec, OFFSET_EN[1] * u.arcsec)


def _scene(east: np.ndarray, north: np.ndarray, blobs: bool) -> np.ndarray:
    """Surface brightness (e-/s per 0.05" pixel) at tangent-plane offsets from the catalogue."""
    dx, dy = east - OFFSET_EN[0], north - OFFSET_EN[1]
    pa = math.radians(40.0)
    major = dx * math.sin(pa) + dy * math.cos(pa)
    minor = dx * math.cos(pa) - dy * math.sin(pa)
    r = np.hypot(major * math.sqrt(0.7), minor / math.sqrt(0.7))
    n, r_eff = 1.0, 0.25
    b = 1.9992 * n - 0.3271
    lens = 0.6 * np.exp(-b * ((r / r_eff) ** (1.0 / n) - 1.0))
    ring = 0.03 * np.exp(-0.5 * ((np.hypot(dx, dy) - 1.2) / 0.08) ** 2)
    north_blob = 0.15 * np.exp(-0.5 * (dx**2 + (dy - NORTH_BLOB) ** 2) / 0.06**2)
    east_blob = 0.08 * np.exp(-0.5 * ((dx - EAST_BLOB) ** 2 + dy**2) / 0.06**2)
    return lens + ring + (north_blob + east_blob if blobs else 0.0)


def _render(blobs: bool = True, sub: int = 5) -> np.ndarray:
    cd = tan_wcs(ra=RA, dec=DEC, pixel_scale_arcsec=S_IN, shape=(N_IN, N_IN), rotation_deg=ROTATION).wcs.cd * 3600.0
    y, x = np.indices((N_IN, N_IN), dtype=float) - (N_IN - 1) / 2.0
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    image = np.zeros((N_IN, N_IN))
    for oy in offsets:
        for ox in offsets:
            east_deg = cd[0, 0] * (x + ox) + cd[0, 1] * (y + oy)  # tangent-plane xi (east) in arcsec
            north_deg = cd[1, 0] * (x + ox) + cd[1, 1] * (y + oy)
            image += _scene(east_deg, north_deg, blobs)
    return image / sub**2


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return _render()


@pytest.fixture(scope="module")
def no_blobs() -> np.ndarray:
    return _render(blobs=False)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(20230817).normal(0.0, SIGMA_IN, (N_IN, N_IN))


def _fits(path: Path, image: np.ndarray, **kwargs: object) -> Path:
    options: dict = {"pixel_scale_arcsec": S_IN, "ra": RA, "dec": DEC, "rotation_deg": ROTATION}
    options.update(exptime=2200.0, zero_point=ZP_ACS)
    options.update(kwargs)
    return write_hst_like_fits(path, image, **options)


def _run(path: Path, **kwargs: object) -> PreprocessResult:
    options: dict = {"ra": RA, "dec": DEC, "pixel_scale_arcsec": S_OUT, "num_pix": N_OUT}
    options.update(zero_point_out=ZP_ACS, background_annulus_arcsec=ANNULUS)
    options.update(kwargs)
    return preprocess_fits(path, **options)


def _centre_error_px(result: PreprocessResult) -> float:
    centre = SkyCoord(result.metadata["centre_ra_deg"], result.metadata["centre_dec_deg"], unit="deg")
    return centre.separation(TRUE_CENTRE).arcsec / S_OUT


@pytest.mark.parametrize("method", ["exact", "adaptive"])
def test_noiseless_flux_centre_and_orientation(
    tmp_path: Path, clean: np.ndarray, no_blobs: np.ndarray, method: str
) -> None:
    result = _run(_fits(tmp_path / "clean.fits", clean), method=method)
    image = result.image
    assert image.shape == (N_OUT, N_OUT) and image.dtype == np.float32 and result.valid.all()
    # flux conservation: the whole scene lies inside the 4" output field
    assert abs(float(image.sum(dtype=np.float64)) / clean.sum() - 1.0) < 1e-3
    # recentred on the lens light, to 0.1 output pixel
    assert _centre_error_px(result) < 0.1
    shift = result.metadata["centroid_shift_px_xy"]
    assert shift == pytest.approx([-OFFSET_EN[0] / S_OUT, OFFSET_EN[1] / S_OUT], abs=0.1)
    # north up, east left: the blobs land at +y and -x of the centre, never at the mirror images;
    # they are isolated by subtracting the blob-free scene (same centroid to 0.01 px: the window all but ignores them)
    reference = _run(_fits(tmp_path / "no_blobs.fits", no_blobs), method=method)
    assert _centre_error_px(reference) == pytest.approx(_centre_error_px(result), abs=0.01)
    blobs = image.astype(float) - reference.image
    c = (N_OUT - 1) / 2.0
    for d_east, d_north in [(0.0, NORTH_BLOB), (EAST_BLOB, 0.0)]:
        x, y = c - d_east / S_OUT, c + d_north / S_OUT
        rows, cols = slice(round(y) - 6, round(y) + 7), slice(round(x) - 6, round(x) + 7)
        window = blobs[rows, cols]
        yy, xx = np.mgrid[rows, cols]
        assert (window * xx).sum() / window.sum() == pytest.approx(x, abs=0.3)
        assert (window * yy).sum() / window.sum() == pytest.approx(y, abs=0.3)
        # lens and ring are point-symmetric about the centre: the excess over the point-reflected
        # image is the blob's flux (a flipped axis would make it negative)
        excess = (image.astype(float) - image[::-1, ::-1])[rows, cols].sum()
        assert excess == pytest.approx(window.sum(), rel=0.05)
    md = result.metadata
    assert md["input_orientation_deg"] == pytest.approx(ROTATION)
    assert md["input_pixel_scale_arcsec"] == pytest.approx([S_IN, S_IN])
    assert md["resampling_method"] == method and md["n_invalid_pixels"] == 0
    json.dumps(md)  # JSON-serialisable


def test_noisy_background_noise_and_centre(tmp_path: Path, clean: np.ndarray, noise: np.ndarray) -> None:
    result = _run(_fits(tmp_path / "noisy.fits", clean + PEDESTAL + noise))
    md = result.metadata
    assert md["background_level_input_e_per_s_per_pixel"] == pytest.approx(PEDESTAL, abs=3e-4)
    assert md["background_sigma_input_e_per_s_per_pixel"] == pytest.approx(SIGMA_IN, rel=0.05)
    assert _centre_error_px(result) < 0.1
    # truth: the same noise field resampled on the same grid, measured over all pixels
    w_in = tan_wcs(ra=RA, dec=DEC, pixel_scale_arcsec=S_IN, shape=(N_IN, N_IN), rotation_deg=ROTATION)
    w_out = tan_wcs(ra=md["centre_ra_deg"], dec=md["centre_dec_deg"], pixel_scale_arcsec=S_OUT, shape=(N_OUT, N_OUT))
    resampled, _ = reproject_exact((noise, w_in), w_out, shape_out=(N_OUT, N_OUT))
    true_sigma = float(np.std(resampled * (S_OUT / S_IN) ** 2))
    assert result.noise_sigma == pytest.approx(true_sigma, rel=0.10)
    # the background was removed: the noise-only corners scatter around 0
    corners = np.concatenate([result.image[:10, :10].ravel(), result.image[-10:, -10:].ravel()])
    assert abs(float(np.median(corners))) < 3 * true_sigma / math.sqrt(corners.size) + 1e-4
    # the pedestal (~3x the scene flux over the field) is gone from the total
    assert float(result.image.sum(dtype=np.float64)) / clean.sum() == pytest.approx(1.0, abs=2e-2)


def test_noise_estimate_adaptive(tmp_path: Path, clean: np.ndarray, noise: np.ndarray) -> None:
    result = _run(_fits(tmp_path / "noisy.fits", clean + PEDESTAL + noise), method="adaptive")
    w_in = tan_wcs(ra=RA, dec=DEC, pixel_scale_arcsec=S_IN, shape=(N_IN, N_IN), rotation_deg=ROTATION)
    md = result.metadata
    w_out = tan_wcs(ra=md["centre_ra_deg"], dec=md["centre_dec_deg"], pixel_scale_arcsec=S_OUT, shape=(N_OUT, N_OUT))
    resampled, _ = reproject_adaptive((noise, w_in), w_out, shape_out=(N_OUT, N_OUT), conserve_flux=True)
    assert result.noise_sigma == pytest.approx(float(np.std(resampled)), rel=0.10)


@pytest.mark.parametrize("bunit", ["ELECTRONS", "COUNTS", "electron / s", "cps"])
def test_bunit_variants_give_the_same_image(tmp_path: Path, clean: np.ndarray, bunit: str) -> None:
    reference = _run(_fits(tmp_path / "rate.fits", clean))
    other = _run(_fits(tmp_path / "other.fits", clean, bunit=bunit))
    assert other.metadata["input_bunit"] == bunit
    np.testing.assert_allclose(other.image, reference.image, rtol=0, atol=2e-6 * float(reference.image.max()))


def test_bunit_errors(tmp_path: Path, clean: np.ndarray) -> None:
    path = _fits(tmp_path / "jy.fits", clean)
    with fits.open(path, mode="update", checksum=True) as hdul:
        hdul["SCI"].header["BUNIT"] = "JY/BEAM"
    with pytest.raises(FitsUnitError, match="unsupported BUNIT 'JY/BEAM'"):
        _run(path)
    with fits.open(path, mode="update", checksum=True) as hdul:
        del hdul["SCI"].header["BUNIT"]
    with pytest.raises(FitsUnitError, match="no BUNIT"):
        _run(path)
    assert _run(path, bunit="ELECTRONS/S").metadata["input_bunit"] == "ELECTRONS/S"


def test_zero_point_conversion(tmp_path: Path, clean: np.ndarray, noise: np.ndarray) -> None:
    path = _fits(tmp_path / "zp.fits", clean + noise)
    native = _run(path)
    sim = _run(path, zero_point_out=25.127)
    factor = 10 ** (-0.4 * (ZP_ACS - 25.127))
    assert native.metadata["zero_point_in"] == pytest.approx(ZP_ACS, abs=1e-9)
    assert sim.metadata["zero_point_flux_scale"] == pytest.approx(factor)
    np.testing.assert_allclose(sim.image, native.image * factor, rtol=1e-6, atol=1e-9)
    assert sim.noise_sigma == pytest.approx(native.noise_sigma * factor, rel=1e-6)
    explicit = _run(path, zero_point_in=26.95)  # overrides PHOTFLAM/PHOTPLAM
    np.testing.assert_allclose(explicit.image, native.image * 10 ** (-0.4), rtol=1e-6, atol=1e-9)


def test_no_recentre_keeps_catalogue_position(tmp_path: Path, clean: np.ndarray) -> None:
    result = _run(_fits(tmp_path / "clean.fits", clean), recenter=False, subtract_background=False)
    assert result.metadata["centroid_shift_px_xy"] == [0.0, 0.0]
    assert result.metadata["centre_ra_deg"] == RA and result.metadata["background_subtracted"] is False
    assert _centre_error_px(result) == pytest.approx(math.hypot(*OFFSET_EN) / S_OUT, rel=1e-3)


def test_partial_coverage_and_small_frames(tmp_path: Path, clean: np.ndarray) -> None:
    edge = clean.copy()
    edge[:, :60] = np.nan  # footprint edge of a drizzled frame, 1-2" from the lens
    with pytest.warns(UserWarning, match="output pixels lack input data"):
        result = _run(_fits(tmp_path / "edge.fits", edge))
    assert result.metadata["n_invalid_pixels"] == int((~result.valid).sum()) > 0
    assert np.all(result.image[~result.valid] == 0.0) and np.all(np.isfinite(result.image))
    small = clean[60:140, 60:140]  # 4" frame cannot hold a 2.5"-4" annulus
    with pytest.raises(ValueError, match="valid pixels in the background annulus"):
        _run(_fits(tmp_path / "small.fits", small))


def test_corrupt_input_is_refused(tmp_path: Path, clean: np.ndarray) -> None:
    data = bytearray(_fits(tmp_path / "ok.fits", clean).read_bytes())
    data[2880 * 3 + 5000] ^= 0x40
    (tmp_path / "bad.fits").write_bytes(bytes(data))
    with pytest.raises(CorruptFitsError):
        _run(tmp_path / "bad.fits")


def test_circular_mask_matches_lenstronomy_convention() -> None:
    from lenstronomy.Util import mask_util, util

    n, scale = 100, 0.04
    x_grid, y_grid = util.make_grid(n, scale)  # (0, 0) at pixel (N-1)/2, x along columns
    for centre_arcsec, radius_arcsec in [((0.0, 0.0), 1.9013), ((-0.06, 0.1), 1.6807), ((0.3, -0.2), 0.5021)]:
        outside = mask_util.mask_center_2d(*centre_arcsec, radius_arcsec, x_grid, y_grid)
        expected = util.array2image(1 - outside).astype(bool)
        centre_px = ((n - 1) / 2 + centre_arcsec[0] / scale, (n - 1) / 2 + centre_arcsec[1] / scale)
        np.testing.assert_array_equal(circular_mask((n, n), centre_px, radius_arcsec / scale), expected)
    image = np.ones((5, 5), dtype=np.float32)
    masked = apply_circular_mask(image, (2.0, 2.0), 1.0)
    assert masked.dtype == np.float32 and masked.sum() == 5 and masked[2, 2] == 1 and masked[0, 0] == 0


def test_write_preprocessed(tmp_path: Path, clean: np.ndarray, noise: np.ndarray) -> None:
    result = _run(_fits(tmp_path / "noisy.fits", clean + PEDESTAL + noise))
    lens = reference_lens("J0946+1006")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pyplot/backend warnings from the Agg figure
        paths = write_preprocessed(result, lens, tmp_path / "out")
    names = {"image": "image.npy", "mask": "mask.npy", "metadata": "metadata.json", "figure": "diagnostic.png"}
    assert {key: path.name for key, path in paths.items()} == names
    np.testing.assert_array_equal(np.load(paths["image"]), result.image)
    mask = np.load(paths["mask"])
    assert mask.dtype == bool and mask[48, 49] and not mask[0, 0]
    record = json.loads(paths["metadata"].read_text())
    assert record["mask_centre_xy"] == [49.0, 48.0] and record["mask_radius_px"] == pytest.approx(49.0)
    assert record["mask_n_pixels"] == int(mask.sum()) and record["lens"]["name"] == "J0946+1006"
    assert record["noise_sigma"] == pytest.approx(result.noise_sigma)
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a user lens with the default 1.5 theta_E mask, centred
    own = LensSpec(name="own", ra_deg=RA, dec_deg=DEC, theta_e_arcsec=1.2)
    record = json.loads(write_preprocessed(result, own, tmp_path / "own")["metadata"].read_text())
    assert record["mask_centre_xy"] == [49.5, 49.5] and record["mask_radius_px"] == pytest.approx(45.0)


def test_mock_observation_round_trip(tmp_path: Path) -> None:
    """A simulated image written with write_hst_like_fits (north up, on the simulator's grid,
    padded with empty sky so the background annulus fits) comes back unchanged."""
    c = (N_OUT - 1) / 2.0
    y, x = (np.indices((N_OUT, N_OUT)) - c) * S_OUT  # lenstronomy grid: (0, 0) at pixel (N-1)/2
    sim = 0.5 * np.exp(-np.hypot(x, y) / 0.15) + 0.05 * np.exp(-0.5 * ((np.hypot(x, y) - 1.1) / 0.06) ** 2)
    sim += 0.2 * np.exp(-0.5 * ((x + 0.9) ** 2 + (y - 0.6) ** 2) / 0.05**2)  # east-north arc knot
    pad = 50
    path = _fits(tmp_path / "mock.fits", np.pad(sim, pad), pixel_scale_arcsec=S_OUT, rotation_deg=0.0, zero_point=25.127)
    result = _run(path, zero_point_out=25.127)
    assert result.metadata["centroid_shift_px_xy"] == pytest.approx([0.0, 0.0], abs=1e-3)
    np.testing.assert_allclose(result.image, sim, rtol=0, atol=1e-5 * sim.max())
