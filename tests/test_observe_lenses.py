"""Lens table: SDSS-name parsing, the 13 reference SLACS lenses, config entries."""

from __future__ import annotations

import pytest

from lensinfer.observe.lenses import (
    REFERENCE_NUM_PIX,
    REFERENCE_PIXEL_SCALE_ARCSEC,
    SLACS_REFERENCE_LENSES,
    LensSpec,
    lens_specs_from_config,
    parse_sdss_name,
    reference_lens,
)

# Independent values: observations.md §1 table (5 decimals), cross-checked there for 0728/0946/2300.
EXPECTED_DEG = {
    "J0946+1006": (146.73617, 10.11467),
    "J1023+4230": (155.88442, 42.50050),
    "J0728+3835": (112.02062, 38.59047),
    "J0822+2652": (125.67633, 26.87875),
    "J0936+0913": (144.00321, 9.22661),
    "J1103+5322": (165.78421, 53.37450),
    "J1142+1001": (175.73896, 10.01994),
    "J1402+6321": (210.61754, 63.35931),
    "J2300+0022": (345.22146, 0.37722),
    "J2238-0754": (339.66750, -7.91556),
    "J0956+5100": (149.12408, 51.00183),
    "J1205+4910": (181.41850, 49.17483),
    "J1627-0053": (246.94354, -0.89933),
}


@pytest.mark.parametrize(
    ("name", "ra", "dec"),
    [
        ("J094656.68+100652.8", 146.7361667, 10.1146667),
        ("SDSS J223840.20-075456.0", 339.6675, -7.9155556),
        ("J162746.45\u2212005357.6", 246.9435417, -0.8993333),  # Unicode minus, Dec in (-1, 0)
        ("J000000.00+000000.0", 0.0, 0.0),
    ],
)
def test_parse_sdss_name(name: str, ra: float, dec: float) -> None:
    got_ra, got_dec = parse_sdss_name(name)
    assert got_ra == pytest.approx(ra, abs=1e-7)
    assert got_dec == pytest.approx(dec, abs=1e-7)


@pytest.mark.parametrize("bad", ["J0946+1006", "094656.68+100652.8", "J246656.68+100652.8", "J094656.68+916652.8", ""])
def test_parse_sdss_name_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="SDSS"):
        parse_sdss_name(bad)


def test_reference_table_matches_independent_coordinates() -> None:
    assert [lens.name for lens in SLACS_REFERENCE_LENSES][:3] == ["J1023+4230", "J1627-0053", "J0946+1006"]
    assert {lens.name for lens in SLACS_REFERENCE_LENSES} == set(EXPECTED_DEG)
    for lens in SLACS_REFERENCE_LENSES:
        ra, dec = EXPECTED_DEG[lens.name]
        assert lens.ra_deg == pytest.approx(ra, abs=6e-6), lens.name
        assert lens.dec_deg == pytest.approx(dec, abs=6e-6), lens.name
        assert lens.sdss_name is not None and lens.sdss_name[:5] + lens.sdss_name[10:15] == lens.name
    # six MAST target names are SDSS plate-MJD-fibre identifiers (observations.md §1)
    assert sum(not str(lens.mast_target).startswith("SDSSJ") for lens in SLACS_REFERENCE_LENSES) == 6


def test_reference_mask_geometry_round_trips_to_notebook_pixels() -> None:
    lens = reference_lens("J1205+4910")  # by short name
    centre, radius = lens.mask_geometry(REFERENCE_PIXEL_SCALE_ARCSEC, REFERENCE_NUM_PIX)
    assert centre == pytest.approx((49.0, 52.0)) and radius == pytest.approx(42.0)
    # the same sky circle on a 0.08"/pix, 50 px grid
    centre, radius = lens.mask_geometry(0.08, 50)
    assert centre == pytest.approx((24.5 - 0.25, 24.5 + 1.25)) and radius == pytest.approx(21.0)
    assert reference_lens("0969-52442-134") is lens
    assert reference_lens("J120540.44+491029.4") is lens
    with pytest.raises(KeyError, match="not one of the reference"):
        reference_lens("J0000+0000")


def test_default_mask_radius_is_1p5_theta_e() -> None:
    lens = LensSpec(name="mine", ra_deg=10.0, dec_deg=-5.0, theta_e_arcsec=1.0)
    centre, radius = lens.mask_geometry(0.05, 80)
    assert centre == (39.5, 39.5) and radius == pytest.approx(30.0)
    with pytest.raises(ValueError, match="no mask radius"):
        LensSpec(name="bare", ra_deg=10.0, dec_deg=0.0).mask_geometry(0.04, 100)


def test_config_entries() -> None:
    specs = lens_specs_from_config(
        [
            "J0946+1006",
            {"name": "SDSSJ1023+4230", "mask_radius_px": 40, "mask_center_xy": [49.5, 49.5]},
            {"name": "myLens", "sdss_name": "J120000.00-301530.0", "theta_e_arcsec": 0.9},
            {"name": "radec", "ra": 1.5, "dec": 2.5, "mask_radius_px": 30},
        ],
        pixel_scale_arcsec=0.04,
        num_pix=100,
    )
    assert [s.name for s in specs] == ["J0946+1006", "J1023+4230", "myLens", "radec"]
    assert specs[0] == reference_lens("J0946+1006")
    assert specs[1].mask_geometry(0.04, 100) == ((49.5, 49.5), pytest.approx(40.0))
    assert specs[1].ra_deg == reference_lens("J1023+4230").ra_deg
    assert (specs[2].ra_deg, specs[2].dec_deg) == pytest.approx((180.0, -30.258333333))
    assert specs[2].mask_geometry(0.04, 100)[1] == pytest.approx(1.5 * 0.9 / 0.04)
    assert specs[3].mask_geometry(0.04, 100) == ((49.5, 49.5), pytest.approx(30.0))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "new"}, "not a reference lens"),
        ({"name": "new", "ra": 10.0}, "both 'ra' and 'dec'"),
        ({"name": "new", "ra": 10.0, "dec": 1.0, "colour": "red"}, "unknown keys"),
        ({"name": "J0946+1006", "ra": 146.8, "dec": 10.11467, "sdss_name": "J094656.68+100652.8"}, "disagree"),
        ({"name": "new", "sdss_name": "J0946+1006"}, "full SDSS J-name"),
        ({"name": "new", "ra": 400.0, "dec": 0.0}, "out of range"),
        ({"name": "new", "ra": 1.0, "dec": 0.0, "mask_center_xy": [1.0]}, "mask_center_xy"),
        ({"name": "has space", "ra": 1.0, "dec": 0.0}, "lens name"),
        ({"ra": 1.0, "dec": 0.0}, "needs at least|must be a name"),
    ],
)
def test_config_errors(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lens_specs_from_config([entry], pixel_scale_arcsec=0.04, num_pix=100)


def test_config_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        lens_specs_from_config(["J0946+1006", "SDSSJ0946+1006"], pixel_scale_arcsec=0.04, num_pix=100)
