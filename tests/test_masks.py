"""Mask geometry: lenstronomy's pixel-centre convention (the reference is one pixel off; spec §2)."""

import numpy as np
import pytest

from lensinfer.data.masks import circular_mask, masks_for_table, pixel_index_of


def test_centre_convention_matches_lenstronomy():
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Util.simulation_util import data_configure_simple

    data = ImageData(**data_configure_simple(100, 0.04))
    for x, y in [(0.0, 0.0), (0.13, -0.07), (-0.2, 0.2)]:
        col, row = data.map_coord2pix(x, y)
        assert pixel_index_of(x, 100, 0.04) == pytest.approx(col)
        assert pixel_index_of(y, 100, 0.04) == pytest.approx(row)


def test_centred_mask_is_symmetric_and_not_shifted():
    m = masks_for_table(np.array([1.0]), np.array([0.0]), np.array([0.0]), num_pix=100, pixel_scale=0.04,
                        radius_theta_e=1.5)[0]
    np.testing.assert_array_equal(m, m[::-1, :])
    np.testing.assert_array_equal(m, m[:, ::-1])
    rows, cols = np.nonzero(m)
    assert rows.mean() == pytest.approx(49.5) and cols.mean() == pytest.approx(49.5)
    # the reference centre N/2 + 0.5 = 50.5 would put the mass centre one pixel up and right
    ref = circular_mask(100, 50.5, 50.5, 1.5 * 1.0 / 0.04)
    assert np.nonzero(ref)[0].mean() == pytest.approx(50.5, abs=0.05)


def test_radius_and_offset():
    m = masks_for_table(np.array([0.9]), np.array([0.2]), np.array([-0.12]), num_pix=100, pixel_scale=0.04,
                        radius_theta_e=1.5)[0]
    rows, cols = np.nonzero(m)
    assert cols.mean() == pytest.approx(49.5 + 5, abs=0.05)
    assert rows.mean() == pytest.approx(49.5 - 3, abs=0.05)
    assert m.sum() == pytest.approx(np.pi * (1.5 * 0.9 / 0.04) ** 2, rel=0.01)


def test_no_mask_keeps_every_pixel():
    """mask.radius_theta_E: null → all pixels kept (macro-model NPE must not see truth-drawn masks)."""
    m = masks_for_table(np.array([1.0, 1.2]), np.array([0.1, -0.1]), np.array([0.0, 0.05]), num_pix=20,
                        pixel_scale=0.1, radius_theta_e=None)
    assert m.shape == (2, 20, 20) and m.all()
