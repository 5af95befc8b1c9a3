"""``observations.preprocess: reference`` (issue 16 item 1), input guards (issue 17 item 2), provenance and per-lens
parameters of the observation branch (issues 15 and 21 item 5), without Snakemake.

The acceptance test builds what the published analysis fed its network — a north-up 100×100 frame at 0.04″/pix in
e⁻/s centred on a SLACS lens — and checks that ``reference`` returns its pixels bit for bit with the published mask
of that lens (science.md §2 "HST masks").
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from lensinfer.observe.errors import FitsUnitError, FitsWcsError
from lensinfer.observe.fitsio import tan_wcs, write_hst_like_fits
from lensinfer.observe.lenses import SLACS_REFERENCE_LENSES, reference_lens
from lensinfer.observe.pipeline import preprocess_observation
from lensinfer.observe.preprocess import reference_cutout
from lensinfer.observe.sources import (
    fetch_params,
    observation_record,
    preprocess_params,
    record_in_summary,
    summary_observations,
)

# The published masks, typed in from spec/science.md §2 independently of lenses.py: name → (x, y, radius) in pixels
PUBLISHED_MASKS = {
    "J1023+4230": (48, 47, 48), "J1627-0053": (49, 48, 45), "J0946+1006": (49, 48, 49), "J2238-0754": (50, 48, 46),
    "J0956+5100": (50, 50, 49), "J0822+2652": (50, 50, 50), "J2300+0022": (50, 50, 44), "J0936+0913": (50, 50, 45),
    "J1103+5322": (50, 50, 40), "J1402+6321": (47, 48, 44), "J0728+3835": (50, 48, 45), "J1205+4910": (49, 52, 42),
    "J1142+1001": (49, 48, 48),
}
PAPER_GRID = {"pixel_scale": 0.04, "num_pix": 100, "magnitude_zero_point": 25.127}


def _published_mask(x: int, y: int, r: int, n: int = 100) -> np.ndarray:
    rows, cols = np.indices((n, n))
    return (cols - x) ** 2 + (rows - y) ** 2 <= r**2  # integer arithmetic: no rounding anywhere


def _frame(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Raw e⁻/s as a HAPCut cutout holds them (float32, as FITS stores it): a sky pedestal, extended lens light
    and background noise σ = 0.005 e⁻/s."""
    rows, cols = np.indices(shape) - (np.array(shape)[:, None, None] - 1) / 2.0
    light = 0.5 * np.exp(-0.5 * (rows**2 + cols**2) / 12.0**2)
    return (0.12 + light + rng.normal(0.0, 0.005, shape)).astype(np.float32)


def _observations(name: str, file: str, mode: str = "reference", **extra) -> dict:
    return {"source": "local", "preprocess": mode, "lenses": [{"name": name, "file": file}],
            "background_annulus_arcsec": [1.2, 1.9], **extra}


def _run(tmp_path: Path, frame: Path, name: str, mode: str = "reference", grid: dict = PAPER_GRID, **extra) -> dict:
    return preprocess_observation(lens_name=name, frame=frame, observations=_observations(name, frame.name, mode, **extra),
                                  instrument=grid, radius_theta_e=1.5, outdir=tmp_path / "out" / name)


@pytest.mark.parametrize("name", ["J1205+4910", "J1023+4230"])
def test_reference_returns_the_frame_bit_for_bit_with_the_published_mask(tmp_path: Path, name: str) -> None:
    lens = reference_lens(name)
    data = _frame(np.random.default_rng(7), (100, 100))
    frame = write_hst_like_fits(tmp_path / f"{name}.fits", data, pixel_scale_arcsec=0.04, ra=lens.ra_deg,
                                dec=lens.dec_deg, exptime=2200.0, zero_point=25.94)
    meta = _run(tmp_path, frame, name)
    out = tmp_path / "out" / name
    image = np.load(out / "image.npy")
    assert image.dtype == np.float32 and image.tobytes() == data.tobytes()  # bit for bit
    mask = np.load(out / "mask.npy")
    x, y, r = PUBLISHED_MASKS[name]
    assert np.array_equal(mask, _published_mask(x, y, r))
    assert meta["mask_centre_xy"] == [x, y] and meta["mask_radius_px"] == r
    assert meta["preprocess"] == "reference" and meta["background_subtracted"] is False
    assert meta["recentred"] is False and meta["resampled"] is False and meta["zero_point_flux_scale"] == 1.0
    assert meta["cutout_origin_xy"] == [0, 0]
    assert any("no background subtraction" in step for step in meta["steps"])
    assert meta["observation"] == {"source": "local", "file": str(frame),
                                   "sha256": hashlib.sha256(frame.read_bytes()).hexdigest()}
    assert 0.9 < meta["noise_sigma"] / 0.005 < 1.1  # neighbour differences see the noise, not sky or lens light


def test_reference_cut_position_in_a_larger_frame(tmp_path: Path) -> None:
    """The catalogue position at frame pixel (140.3, 120.7): the cutout whose centre (49.5, 49.5) lies nearest
    starts at column round(90.8) = 91 and row round(71.2) = 71."""
    lens = reference_lens("J0946+1006")
    data = _frame(np.random.default_rng(3), (260, 300))
    w = tan_wcs(ra=lens.ra_deg, dec=lens.dec_deg, pixel_scale_arcsec=0.04, shape=data.shape)
    w.wcs.crpix = [141.3, 121.7]  # 1-based: the lens at 0-based pixel (140.3, 120.7)
    header = w.to_header()
    header["BUNIT"] = "ELECTRONS/S"
    path = tmp_path / "big.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header, name="SCI")]).writeto(path)
    result = reference_cutout(path, ra=lens.ra_deg, dec=lens.dec_deg, pixel_scale_arcsec=0.04, num_pix=100)
    assert result.image.tobytes() == data[71:171, 91:191].tobytes()
    assert result.metadata["cutout_origin_xy"] == [91, 71]
    assert result.metadata["target_offset_from_cutout_centre_px_xy"] == pytest.approx([-0.2, 0.2], abs=1e-6)
    assert result.metadata["zero_point_in"] is None  # no PHOTFLAM: recorded as unknown, not needed


def test_reference_mask_geometry_is_exactly_the_published_table() -> None:
    for spec in SLACS_REFERENCE_LENSES:
        (x, y), r = spec.mask_geometry(0.04, 100)
        assert (x, y, r) == PUBLISHED_MASKS[spec.name], spec.name


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("kind, message", [
    ("scale", "differs from instrument.pixel_scale 0.04"),
    ("rotated", "not north-up/east-left"),
    ("small", "reaches beyond the 60 x 60 frame"),
])
def test_reference_refuses_frames_it_would_have_to_resample(tmp_path: Path, kind: str, message: str) -> None:
    lens = reference_lens("J0946+1006")
    options = {"scale": (0.05, 0.0, 100), "rotated": (0.04, 30.0, 100), "small": (0.04, 0.0, 60)}[kind]
    scale, rotation, size = options
    frame = write_hst_like_fits(tmp_path / "f.fits", _frame(np.random.default_rng(0), (size, size)),
                                pixel_scale_arcsec=scale, rotation_deg=rotation, ra=lens.ra_deg, dec=lens.dec_deg,
                                exptime=2200.0, zero_point=25.94)
    with pytest.raises(ValueError, match=message) as err:
        _run(tmp_path, frame, lens.name)
    assert "f.fits" in str(err.value) and "observations." in str(err.value)
    assert _listing(tmp_path / "out") == []  # nothing left behind


def _without(path: Path, keys: tuple[str, ...]) -> Path:
    with fits.open(path) as hdul:
        for hdu in hdul:
            for key in keys:
                hdu.header.remove(key, ignore_missing=True, remove_all=True)
        out = path.with_name("bad_" + path.name)
        hdul.writeto(out)  # no checksums: the edited headers no longer match them
    return out


@pytest.mark.parametrize("mode", ["reference", "calibrated"])
def test_frame_without_celestial_wcs_names_the_file(tmp_path: Path, mode: str) -> None:
    lens = reference_lens("J0946+1006")
    good = write_hst_like_fits(tmp_path / "frame.fits", _frame(np.random.default_rng(1), (100, 100)),
                               pixel_scale_arcsec=0.04, ra=lens.ra_deg, dec=lens.dec_deg, exptime=2200.0,
                               zero_point=25.94)
    wcs_keys = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                "RADESYS", "WCSAXES", "LONPOLE", "LATPOLE", "MJDREF", "DATEREF", "CUNIT1", "CUNIT2", "CHECKSUM",
                "DATASUM")
    bad = _without(good, wcs_keys)
    with pytest.raises(FitsWcsError, match=r"bad_frame\.fits: the science image has no celestial WCS"):
        _run(tmp_path, bad, lens.name, mode)
    assert _listing(tmp_path / "out") == []


def test_missing_photflam_names_the_config_key(tmp_path: Path) -> None:
    lens = reference_lens("J0946+1006")
    good = write_hst_like_fits(tmp_path / "frame.fits", _frame(np.random.default_rng(2), (100, 100)),
                               pixel_scale_arcsec=0.04, ra=lens.ra_deg, dec=lens.dec_deg, exptime=2200.0,
                               zero_point=25.94)
    bad = _without(good, ("PHOTFLAM", "CHECKSUM", "DATASUM"))
    with pytest.raises(FitsUnitError, match=r"bad_frame\.fits: no PHOTFLAM keyword.*set observations\.zero_point"):
        _run(tmp_path, bad, lens.name, "calibrated")
    assert _listing(tmp_path / "out") == []
    # reference rescales nothing, so it needs no zero point; calibrated takes it from the config key
    assert _run(tmp_path, bad, lens.name, "reference")["zero_point_in"] is None
    meta = _run(tmp_path, bad, lens.name, "calibrated", zero_point=25.94)
    assert meta["zero_point_in"] == 25.94 and meta["preprocess"] == "calibrated"


def test_calibrated_records_its_steps(tmp_path: Path) -> None:
    lens = reference_lens("J0946+1006")
    frame = write_hst_like_fits(tmp_path / "frame.fits", _frame(np.random.default_rng(4), (100, 100)),
                                pixel_scale_arcsec=0.04, ra=lens.ra_deg, dec=lens.dec_deg, exptime=2200.0,
                                zero_point=25.94)
    meta = _run(tmp_path, frame, lens.name, "calibrated")
    assert meta["preprocess"] == "calibrated" and meta["background_subtracted"] is True
    assert [s.split(":")[0].split(" ")[0] for s in meta["steps"]] == ["units", "background", "recentred", "resampled",
                                                                       "flux"]
    assert meta["observation"]["source"] == "local"


# ------------------------------------------------------------------ provenance
def _manifest(tmp_path: Path, frame: Path, sha: str) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"file": {"name": "science.fits", "sha256": sha, "size": frame.stat().st_size,
                                         "source": {"service": "hapcut", "member": "x_acs_wfc_f814w.fits"}}}))
    return path


def test_mast_record_names_product_and_checksum_and_refuses_an_edited_frame(tmp_path: Path) -> None:
    frame = tmp_path / "science.fits"
    frame.write_bytes(b"frame bytes")
    sha = hashlib.sha256(b"frame bytes").hexdigest()
    record = observation_record("mast", frame, manifest=_manifest(tmp_path, frame, sha))
    assert record["source"] == "mast" and record["sha256"] == sha and record["product"] == "x_acs_wfc_f814w.fits"
    with pytest.raises(ValueError, match="changed after it was fetched"):
        observation_record("mast", frame, manifest=_manifest(tmp_path, frame, "0" * 64))


def test_summary_records_every_lens_source(tmp_path: Path) -> None:
    paths = []
    for name in ("A", "B"):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"preprocess": "reference", "observation": {"source": "mast", "product": f"{name}.fits",
                                                                            "sha256": name * 64}}))
        paths.append(p)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"combined": {"mle": 2.0}}))
    out = record_in_summary(summary, ["A", "B"], paths)
    assert json.loads(summary.read_text()) == out and out["combined"] == {"mle": 2.0}
    assert out["observations"] == summary_observations(["A", "B"], paths)
    assert out["observations"]["source"] == "mast" and out["observations"]["preprocess"] == "reference"
    assert out["observations"]["per_lens"]["B"] == {"source": "mast", "product": "B.fits", "sha256": "B" * 64,
                                                    "preprocess": "reference"}


# ------------------------------------------------------------------ per-lens parameters (issue 21, item 5)
PAPER_LIKE = {
    "instrument": {"pixel_scale": 0.04, "num_pix": 100, "magnitude_zero_point": 25.127, "exposure_time": 2200,
                   "sky_brightness": 21.83, "psf": {"type": "gaussian", "fwhm": 0.1}},
    "mask": {"radius_theta_E": 1.5},
    "observations": {"source": "mast", "preprocess": "reference", "lenses": ["J1023+4230", "J1627-0053"],
                     "mast": {"method": "hapcut", "size_arcsec": 12.0, "instrument": "ACS/WFC", "filter": "F814W",
                              "retries": 4},
                     "background_annulus_arcsec": [4.0, 5.9]},
}


def _both(cfg: dict, lens: str) -> tuple[dict, dict]:
    return fetch_params(cfg, lens), preprocess_params(cfg, lens)


def test_per_lens_params_ignore_other_lenses_and_unrelated_settings() -> None:
    before = _both(PAPER_LIKE, "J1023+4230")
    for edit in (lambda c: c["observations"]["lenses"].append("J0946+1006"),
                 lambda c: c["observations"]["lenses"].reverse(),
                 lambda c: c["instrument"].update(exposure_time=1000, sky_brightness=22.0),
                 lambda c: c["observations"]["mast"].update(retries=9),
                 lambda c: c["observations"].update(background_annulus_arcsec=[3.0, 5.0])):  # unused by reference
        cfg = copy.deepcopy(PAPER_LIKE)
        edit(cfg)
        assert _both(cfg, "J1023+4230") == before
    for edit, changed in ((lambda c: c["observations"]["mast"].update(filter="F606W"), (True, False)),
                          (lambda c: c["observations"].update(preprocess="calibrated"), (False, True)),
                          (lambda c: c["instrument"].update(num_pix=50), (False, True)),
                          (lambda c: c["observations"]["lenses"].__setitem__(0, {"name": "J1023+4230",
                                                                                  "mask_radius_px": 30}), (False, True))):
        cfg = copy.deepcopy(PAPER_LIKE)
        edit(cfg)
        after = _both(cfg, "J1023+4230")
        assert (after[0] != before[0], after[1] != before[1]) == changed
