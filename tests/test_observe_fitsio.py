"""HST-like FITS writing/verification and photometric conversions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from lensinfer.observe.errors import CorruptFitsError, FitsUnitError
from lensinfer.observe.fitsio import find_science_hdu, orientation_deg, tan_wcs, verify_fits, write_hst_like_fits
from lensinfer.observe.photometry import ab_zero_point, count_rate_factor, photflam_for_zero_point, zero_point_scale

RA, DEC = 146.73617, 10.11467


def _write(path: Path, **kwargs: object) -> Path:
    image = np.arange(40 * 30, dtype=float).reshape(30, 40) / 100.0
    options: dict = {"pixel_scale_arcsec": 0.05, "ra": RA, "dec": DEC, "exptime": 2200.0, "zero_point": 25.95}
    options.update(kwargs)
    return write_hst_like_fits(path, image, **options)


@pytest.mark.parametrize("rotation", [0.0, 30.0, -120.0])
def test_tan_wcs_orientation_and_centre(rotation: float) -> None:
    w = tan_wcs(ra=RA, dec=DEC, pixel_scale_arcsec=0.05, shape=(30, 40), rotation_deg=rotation)
    assert orientation_deg(w) == pytest.approx(rotation)
    centre = w.pixel_to_world((40 - 1) / 2, (30 - 1) / 2)
    assert centre.separation(SkyCoord(RA, DEC, unit="deg")).arcsec < 1e-9
    # +y points to position angle `rotation` (east of north), 0.05" per pixel
    step = w.pixel_to_world((40 - 1) / 2, (30 - 1) / 2 + 1)
    assert centre.position_angle(step).deg % 360 == pytest.approx(rotation % 360, abs=1e-4)
    assert centre.separation(step).arcsec == pytest.approx(0.05, rel=1e-6)
    # parity: +x is 90 deg clockwise from +y on the sky (east left when north up)
    east_check = w.pixel_to_world((40 - 1) / 2 + 1, (30 - 1) / 2)
    assert centre.position_angle(east_check).deg % 360 == pytest.approx((rotation - 90) % 360, abs=1e-4)


def test_write_layout_checksums_and_reproducibility(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.fits", rotation_deg=30.0, extra_header={"GAMMA_TRUE": 2.1})
    b = _write(tmp_path / "b.fits", rotation_deg=30.0, extra_header={"GAMMA_TRUE": 2.1})
    assert a.read_bytes() == b.read_bytes()  # no timestamps in CHECKSUM comments
    verify_fits(a)
    with fits.open(a, checksum=True) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
        assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in hdul)
        assert hdul[0].header["GAMMA_TRUE"] == 2.1 and hdul[0].header["EXPTIME"] == 2200.0
        sci = find_science_hdu(hdul)
        assert sci.name == "SCI" and sci.data.dtype == np.dtype(">f4") and sci.header["BUNIT"] == "ELECTRONS/S"
        assert ab_zero_point(sci.header["PHOTFLAM"], sci.header["PHOTPLAM"]) == pytest.approx(25.95, abs=1e-9)
        assert orientation_deg(WCS(sci.header)) == pytest.approx(30.0)
        assert np.all(hdul["WHT"].data == 2200.0)


def test_write_totals_and_photflam(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.fits", bunit="COUNTS", zero_point=None, photflam=7.0e-20, photplam=8045.0)
    with fits.open(path) as hdul:
        assert hdul["SCI"].data[1, 2] == pytest.approx(0.42 * 2200.0, rel=1e-6)
        assert hdul["SCI"].header["PHOTFLAM"] == 7.0e-20
    with pytest.raises(ValueError, match="exactly one"):
        _write(tmp_path / "d.fits", photflam=7e-20, photplam=8000.0)
    with pytest.raises(FitsUnitError):
        _write(tmp_path / "e.fits", bunit="JY/BEAM")


def test_verify_detects_damage(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.fits").read_bytes()
    flipped = bytearray(good)
    flipped[-2880 + 100] ^= 0x01  # inside the WHT data unit
    (tmp_path / "flipped.fits").write_bytes(bytes(flipped))
    (tmp_path / "truncated.fits").write_bytes(good[:-1500])
    (tmp_path / "html.fits").write_bytes(b"<html>503 Service Unavailable</html>")
    for name, reason in [("flipped", "Checksum|Datasum"), ("truncated", "unreadable|corrupt"), ("html", "unreadable")]:
        with pytest.raises(CorruptFitsError, match=reason):
            verify_fits(tmp_path / f"{name}.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(
        tmp_path / "table.fits"
    )
    with pytest.raises(CorruptFitsError, match="no 2-D image"):
        verify_fits(tmp_path / "table.fits")


def test_photometry() -> None:
    # ACS/WFC F814W header values (observations.md §3): ZP ≈ 25.95
    assert ab_zero_point(7.0724e-20, 8044.9) == pytest.approx(25.94, abs=0.02)
    assert ab_zero_point(photflam_for_zero_point(25.127, 8045.0), 8045.0) == pytest.approx(25.127, abs=1e-12)
    assert zero_point_scale(25.95, 25.127) == pytest.approx(10 ** (-0.4 * 0.823)) == pytest.approx(0.4686, abs=1e-4)
    assert zero_point_scale(25.0, 25.0) == 1.0
    for unit in ["ELECTRONS/S", "electron / s", "e-/s", "CPS", "counts/s", "ELECTRONS/SEC"]:
        assert count_rate_factor(unit, None) == 1.0
    assert count_rate_factor("ELECTRONS", 2000.0) == pytest.approx(1 / 2000.0)
    assert count_rate_factor("counts", 400.0) == pytest.approx(1 / 400.0)
    with pytest.raises(FitsUnitError, match="EXPTIME"):
        count_rate_factor("ELECTRONS", None)
    with pytest.raises(FitsUnitError, match="unsupported BUNIT"):
        count_rate_factor("DN", 100.0)
    with pytest.raises(FitsUnitError):
        ab_zero_point(0.0, 8000.0)
    # STScI's form: ABMAG_ZPT = −2.5 log10(PHOTFLAM) − 21.10 − 5 log10(PHOTPLAM) + 18.6921 (ACS zero-point pages)
    assert ab_zero_point(1e-19, 5000.0) == pytest.approx(47.5 - 21.10 - 5 * math.log10(5000.0) + 18.6921, abs=1e-3)
