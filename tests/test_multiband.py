"""Multi-band ground-based images, colours, seeing draws, the lensed point source and noiseless storage (issue #7)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lensinfer import physics
from lensinfer.config import ConfigError, check_config
from lensinfer.data.store import directory_sha256, open_images, read_shard_table
from lensinfer.seeds import image_rng
from lensinfer.simulate.bands import BandSet
from lensinfer.simulate.shard import population_of, simulate_image_bands, simulate_shard

ROOT = Path(__file__).resolve().parents[1]

#: DES-like bands (lenstronomy 1.14.0 SimulationAPI/ObservationConfig/DES.py), g with drawn seeing
BANDS = [
    {"name": "g", "exposure_time": 90.0, "num_exposures": 10, "sky_brightness": 22.01, "magnitude_zero_point": 26.58,
     "psf": {"type": "gaussian", "fwhm": {"uniform": [1.0, 1.2]}}},
    {"name": "r", "exposure_time": 90.0, "num_exposures": 10, "sky_brightness": 21.15, "magnitude_zero_point": 26.78,
     "psf": {"type": "gaussian", "fwhm": 0.96}},
    {"name": "i", "exposure_time": 90.0, "num_exposures": 10, "sky_brightness": 19.89, "magnitude_zero_point": 26.75,
     "psf": {"type": "gaussian", "fwhm": 0.88}},
]


def _validated(cfg: dict[str, Any]) -> dict[str, Any]:
    from snakemake.utils import validate

    validate(cfg, str(ROOT / "schemas" / "config.schema.yaml"))
    check_config(cfg, ROOT)
    return cfg


def _single_band() -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["datasets"]["train"]["shard_size"] = 3
    cfg["train"]["batch_size"] = 2
    return _validated(cfg)


def _multi_band(num_pix: int = 32, point_source: bool = False, lens_light: bool = True) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["instrument"].update(pixel_scale=0.263, num_pix=num_pix, read_noise=7.0, ccd_gain=4.0,
                             bands=copy.deepcopy(BANDS), reference_band="r")
    lens = cfg["lens"]
    lens["main"]["theta_E"] = {"uniform": [1.2, 1.6]}
    lens["source"].update(R_sersic={"uniform": [0.3, 0.5]},
                          colors={"g": {"uniform": [0.1, 0.5]}, "i": {"uniform": [-0.4, -0.2]}})
    if lens_light:
        lens["lens_light"]["colors"] = {"g": {"uniform": [1.0, 1.5]}, "i": -0.5}
    else:
        lens["lens_light"] = None
    if point_source:
        lens["point_source"] = {"magnitude": {"uniform": [19.0, 20.0]}, "colors": {"g": 0.3, "i": {"uniform": [-0.2, 0.0]}}}
    cfg["datasets"]["train"].update(shard_size=3)
    cfg["train"]["batch_size"] = 2
    cfg["datasets"]["train"]["population"]["n_sub"] = {"randint": [0, 4]}
    return _validated(cfg)


def test_multiband_shard_layout_and_reproducibility(tmp_path):
    cfg = _multi_band()
    simulate_shard(cfg, "train", 0, tmp_path / "a.zarr", progress=False)
    simulate_shard(cfg, "train", 0, tmp_path / "b.zarr", progress=False)
    assert directory_sha256(tmp_path / "a.zarr") == directory_sha256(tmp_path / "b.zarr")
    images = open_images(tmp_path / "a.zarr")
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32
    assert images.chunks == (3, 3, 32, 32)
    params, columns, _, attrs = read_shard_table(tmp_path / "a.zarr")
    assert attrs["bands"] == ["g", "r", "i"] and attrs["reference_band"] == "r"
    expected = [physics.background_sigma(pixel_scale=0.263, exposure_time=90.0, sky_brightness=b["sky_brightness"],
                                         read_noise=7.0, magnitude_zero_point=b["magnitude_zero_point"],
                                         num_exposures=10) for b in BANDS]
    assert attrs["sigma_bkg"] == pytest.approx(expected)
    assert attrs["exposure_time"] == [900.0] * 3 and attrs["zero_point"] == [26.58, 26.78, 26.75]
    assert "noiseless" not in attrs
    col = {c: i for i, c in enumerate(columns)}
    g = params[:, col["psf_fwhm_g"]]
    assert np.all((g >= 1.0) & (g <= 1.2)) and np.unique(g).size == 3  # seeing drawn per image
    assert np.all(params[:, col["psf_fwhm_r"]] == 0.96)
    for prefix in ("source", "lens_light"):
        assert np.allclose(params[:, col[f"{prefix}_magnitude_r"]], params[:, col[f"{prefix}_magnitude"]])
        assert np.allclose(params[:, col[f"{prefix}_magnitude_g"]] - params[:, col[f"{prefix}_magnitude"]],
                           params[:, col[f"{prefix}_color_g"]])
    assert np.all(params[:, col["lens_light_color_i"]] == -0.5)
    assert "source_color_r" not in col  # the reference band carries no colour
    # a different config (noiseless storage) changes the hash
    noiseless = copy.deepcopy(cfg)
    noiseless["storage"]["noiseless"] = True
    simulate_shard(noiseless, "train", 0, tmp_path / "c.zarr", progress=False)
    _, _, _, attrs_c = read_shard_table(tmp_path / "c.zarr")
    assert attrs_c["noiseless"] is True and attrs_c["config_hash"] != attrs["config_hash"]


def test_background_noise_per_band_matches_the_configuration():
    cfg = _multi_band(num_pix=64, lens_light=False)
    cfg["lens"]["source"]["magnitude"] = 35.0  # empty sky
    bands = BandSet(cfg)
    image, _ = simulate_image_bands(image_rng(7), bands=bands, config=cfg, population=population_of(cfg, "train"),
                                    global_index=0)
    assert image.shape == (3, 64, 64)
    for c, b in enumerate(BANDS):
        sigma = physics.background_sigma(pixel_scale=0.263, exposure_time=90.0, sky_brightness=b["sky_brightness"],
                                         read_noise=7.0, magnitude_zero_point=b["magnitude_zero_point"], num_exposures=10)
        assert image[c].std() == pytest.approx(sigma, rel=0.05), b["name"]


def test_band_fluxes_follow_the_drawn_colours():
    cfg = _multi_band(num_pix=48, lens_light=False)
    bands = BandSet(cfg)
    zp = {b["name"]: b["magnitude_zero_point"] for b in BANDS}
    image, scene = simulate_image_bands(image_rng(3), bands=bands, config=cfg, population=population_of(cfg, "train"),
                                        global_index=0, noise=False)
    p = scene.params
    flux = {b: float(image[c].sum()) for c, b in enumerate(bands.names)}
    for b in ("g", "i"):
        expected = 10 ** (-0.4 * (p[f"source_color_{b}"] - (zp[b] - zp["r"])))
        assert flux[b] / flux["r"] == pytest.approx(expected, rel=0.01), b
        assert flux[b] == pytest.approx(
            float(physics.magnitude_to_cps(p[f"source_magnitude_{b}"], zp[b])) * flux["r"]
            / float(physics.magnitude_to_cps(p["source_magnitude"], zp["r"])), rel=0.01)


def test_point_source_images_and_flux_per_band():
    cfg = _multi_band(num_pix=40, point_source=True, lens_light=False)
    lens = cfg["lens"]
    lens["main"].update(center_x=0.0, center_y=0.0, e1=0.05, e2=0.0, theta_E=1.4)
    lens["source"].update(center_x=0.03, center_y=0.01, magnitude=40.0)  # point source only (galaxy invisible)
    cfg["lens"]["shear"] = None
    bands = BandSet(cfg)
    image, scene = simulate_image_bands(image_rng(11), bands=bands, config=cfg, population={
        "profile": "EPL", "gamma": 2.0, "n_sub": 0, "placement_threshold": 0.2}, global_index=0, noise=False)
    p = scene.params
    assert p["ps_n_images"] >= 2 and scene.point_source is not None
    assert len(scene.point_source["ra_image"]) == p["ps_n_images"]
    zp = {b["name"]: b["magnitude_zero_point"] for b in BANDS}
    assert p["ps_magnitude_g"] == pytest.approx(p["ps_magnitude"] + 0.3)
    for c, b in enumerate(bands.names):
        expected = float(physics.magnitude_to_cps(p[f"ps_magnitude_{b}"], zp[b])) * p["ps_magnification_total"]
        assert image[c].sum() == pytest.approx(expected, rel=0.02), b
    # the torch backend (when present) refuses point sources at config time
    bad = copy.deepcopy(cfg)
    bad["renderer"]["backend"] = "torch"
    with pytest.raises(ConfigError, match="lens.point_source"):
        check_config(bad, ROOT)


def test_single_band_output_is_unchanged(tmp_path):
    cfg = _single_band()
    simulate_shard(cfg, "train", 0, tmp_path / "a.zarr", progress=False)
    simulate_shard(cfg, "train", 0, tmp_path / "b.zarr", progress=False)
    assert directory_sha256(tmp_path / "a.zarr") == directory_sha256(tmp_path / "b.zarr")
    images = open_images(tmp_path / "a.zarr")
    assert images.shape == (3, 32, 32)
    _, columns, _, attrs = read_shard_table(tmp_path / "a.zarr")
    assert not any(c.startswith(("ps_", "psf_fwhm")) or "_color_" in c for c in columns)
    assert not {"bands", "noiseless", "reference_band"} & set(attrs)
    assert isinstance(attrs["sigma_bkg"], float) and isinstance(attrs["zero_point"], float)
    from lensinfer.simulate.shard import simulation_config_section

    assert "storage" not in simulation_config_section(cfg, "train")
    noiseless = copy.deepcopy(cfg)
    noiseless["storage"]["noiseless"] = True
    simulate_shard(noiseless, "train", 0, tmp_path / "n.zarr", progress=False)
    clean = open_images(tmp_path / "n.zarr")[...]
    noisy = images[...]
    assert clean.min() > -1e-6  # no background noise; the noisy shard is the same scene plus noise
    assert (noisy - clean).std() > 0.9 * attrs["sigma_bkg"]


def test_band_config_errors_name_the_key():
    cfg = _multi_band()
    dup = copy.deepcopy(cfg)
    dup["instrument"]["bands"][1]["name"] = "g"
    with pytest.raises(ConfigError, match="instrument.bands: band names must be unique"):
        check_config(dup, ROOT)
    unknown = copy.deepcopy(cfg)
    unknown["lens"]["source"]["colors"]["y"] = 0.1
    with pytest.raises(ConfigError, match=r"lens.source.colors: unknown band\(s\) \['y'\]"):
        check_config(unknown, ROOT)
    ref = copy.deepcopy(cfg)
    ref["lens"]["source"]["colors"]["r"] = 0.2
    with pytest.raises(ConfigError, match="lens.source.colors.r: the reference band"):
        check_config(ref, ROOT)
    single = _single_band()
    single["lens"]["source"]["colors"] = {"g": 0.1}
    with pytest.raises(ConfigError, match="lens.source.colors: colours need a multi-band instrument"):
        check_config(single, ROOT)


def test_mock_multiband_observation_preprocesses_to_a_cube(tmp_path):
    from lensinfer.observe.lenses import SLACS_REFERENCE_LENSES
    from lensinfer.observe.pipeline import preprocess_observation
    from lensinfer.simulate.mock import write_mock_observations

    cfg = _multi_band(num_pix=32)
    cfg["observations"]["mock"]["frame_num_pix"] = 96
    cfg["observations"]["background_annulus_arcsec"] = [6.5, 10.5]
    cfg["lens"]["lens_light"]["magnitude"] = {"uniform": [18.5, 19.5]}  # DES-like: keep its wings out of the annulus
    lens = SLACS_REFERENCE_LENSES[0]
    truths = write_mock_observations(cfg, [lens], [tmp_path / "raw"])
    assert truths[0]["bands"] == ["g", "r", "i"]
    meta = preprocess_observation(lens_name=lens.name, frame=tmp_path / "raw" / "science.fits",
                                  observations=cfg["observations"], instrument=cfg["instrument"],
                                  radius_theta_e=1.5, outdir=tmp_path / "out")
    image = np.load(tmp_path / "out" / "image.npy")
    mask = np.load(tmp_path / "out" / "mask.npy")
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    assert mask.shape == (32, 32) and mask.dtype == bool and mask.any()
    assert meta["bands"] == ["g", "r", "i"] and meta["reference_band"] == "r"
    on_disk = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert set(on_disk["noise_sigma_bands"]) == {"g", "r", "i"}
    bands = BandSet(cfg)
    for b in bands.names:  # resampling onto the recentred grid averages neighbouring pixels: σ can only drop
        assert 0.4 < on_disk["noise_sigma_bands"][b] / bands.instruments[b].sigma_bkg < 1.15, b
    # every band is resampled onto the reference band's lens-light centroid
    centres = {(m["centre_ra_deg"], m["centre_dec_deg"]) for m in on_disk["per_band"].values()}
    assert centres == {(on_disk["centre_ra_deg"], on_disk["centre_dec_deg"])}
    centre = (image.shape[1] - 1) / 2
    row, col = np.unravel_index(np.argmax(image[1]), image[1].shape)
    assert abs(row - centre) <= 1.5 and abs(col - centre) <= 1.5
