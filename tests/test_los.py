"""Line-of-sight halos (paltas DG19 ingredients, our draws) and multi-plane rendering."""

import numpy as np
import pytest

from lensinfer.simulate.instrument import Instrument
from lensinfer.simulate.lenstronomy_backend import LenstronomyRenderer
from lensinfer.simulate.los import LOS_COLUMNS, LineOfSight

COL = {c: i for i, c in enumerate(LOS_COLUMNS)}
LOS = {"delta_los": {"uniform": [1.9, 2.0]}, "m_min": 1e7, "m_max": 1e10, "z_min": 0.01, "dz": 0.01,
       "cone_angle": 4.0, "r_min": 0.5, "r_max": 10.0}
SUB = {"e1": {"uniform": [-0.2, 0.2]}, "e2": {"uniform": [-0.2, 0.2]}}
KW = dict(z_lens=0.2, z_source=0.6, theta_e=1.1, gamma_lens=2.0, gamma_pop=2.3, gamma_scatter=0.1,
          subhalo_cfg=SUB, h=0.6766)


@pytest.fixture(scope="module")
def los():
    return LineOfSight(LOS)


def test_epl_los_halos(los):
    a = los.draw(np.random.default_rng(5), profile="EPL", population={"profile": "EPL"}, **KW)
    b = los.draw(np.random.default_rng(5), profile="EPL", population={"profile": "EPL"}, **KW)
    np.testing.assert_array_equal(a.table, b.table)
    t = a.table
    assert len(a.models) == t.shape[0] > 0 and 1.9 <= a.delta_los <= 2.0
    assert t[:, COL["z"]].min() > 0.01 and t[:, COL["z"]].max() < 0.6
    assert t[:, COL["mass"]].min() >= 1e7 and t[:, COL["mass"]].max() <= 1e10
    assert t[:, COL["gamma"]].min() >= 1.01 and t[:, COL["gamma"]].max() <= 2.99
    assert np.all(np.hypot(t[:, COL["x"]], t[:, COL["y"]]) <= 2.0 + 1e-9)  # inside the 4" cone
    assert np.all(t[:, COL["theta_E"]] > 0)


def test_nfw_los_and_empty_normalisation(los):
    pop = {"profile": "NFW", "c_factor": 1.0, "dex_scatter": 0.1}
    nfw = los.draw(np.random.default_rng(6), profile="NFW", population=pop, **KW)
    assert set(nfw.models) == {"NFW"} and np.all(nfw.table[:, COL["Rs"]] > 0)
    none = LineOfSight(dict(LOS, delta_los=0.0)).draw(np.random.default_rng(6), profile="NFW", population=pop, **KW)
    assert none.models == [] and none.table.shape == (0, len(LOS_COLUMNS))


def test_multiplane_render_with_los(los):
    from lenstronomy.LensModel.lens_model import LensModel

    halos = los.draw(np.random.default_rng(7), profile="EPL", population={"profile": "EPL"}, **KW)
    models = ["EPL"] + halos.models
    kwargs = [dict(theta_E=1.1, gamma=2.0, e1=0.05, e2=0.0, center_x=0.0, center_y=0.0)] + halos.kwargs
    redshifts = [0.2] + halos.redshifts
    r = LenstronomyRenderer(Instrument({"pixel_scale": 0.08, "num_pix": 32, "exposure_time": 2200, "sky_brightness": 21.83,
                                        "read_noise": 3.0, "magnitude_zero_point": 25.127,
                                        "psf": {"type": "gaussian", "fwhm": 0.1}}))
    src = [dict(amp=50.0, R_sersic=0.2, n_sersic=1.0, e1=0.0, e2=0.0, center_x=0.05, center_y=0.0)]
    multi = r._image(models, kwargs, ["SERSIC_ELLIPSE"], src, [], [], redshifts, 0.6)
    single = r._image(models[:1], kwargs[:1], ["SERSIC_ELLIPSE"], src, [], [])
    assert np.isfinite(multi).all() and 0 < np.abs(multi - single).max() < 0.5 * single.max()
    # deflections: the multi-plane model of the main lens alone equals its single-plane model; the 1e7–1e10 M_sun
    # halos perturb it by a small, non-zero amount (here ~0.1–0.5 %)
    x, y = np.array([0.5, 1.0, -0.8]), np.array([0.5, -0.3, 0.9])
    with_los = np.array(LensModel(models, z_source=0.6, lens_redshift_list=redshifts, multi_plane=True).alpha(x, y, kwargs))
    main_mp = np.array(LensModel(models[:1], z_source=0.6, lens_redshift_list=redshifts[:1],
                                 multi_plane=True).alpha(x, y, kwargs[:1]))
    main = np.array(LensModel(models[:1]).alpha(x, y, kwargs[:1]))
    np.testing.assert_allclose(main_mp, main, rtol=1e-10, atol=0)
    change = np.hypot(*(with_los - main)) / np.hypot(*main)
    assert np.isfinite(with_los).all() and np.all(change > 1e-4) and np.all(change < 0.05), change


@pytest.mark.parametrize("mode, width", [("reference", 0.1 * 2.5**2), ("relative", 0.1 * 2.5)])
def test_los_slope_scatter_modes(monkeypatch, mode, width):
    """lens.los.gamma_scatter: the reference code's σ = 0.1 γ² (its LOSDG19_epl quirk) or the relative σ = 0.1 γ."""
    import scipy.stats

    from lensinfer.simulate import los as los_module

    model = LineOfSight(dict(LOS, gamma_scatter=mode))
    assert model.slope_width(2.5, 0.1) == pytest.approx(width, rel=1e-12)
    calls = []
    real = los_module.draw_truncnormal

    def spy(rng, loc, scale, low, high, size=None):
        calls.append((loc, scale, low, high))
        return real(rng, loc, scale, low, high, size=size)

    monkeypatch.setattr(los_module, "draw_truncnormal", spy)
    kw = dict(KW, gamma_pop=2.5)
    slopes = np.concatenate([model.draw(np.random.default_rng(s), profile="EPL", population={"profile": "EPL"},
                                        **kw).table[:, COL["gamma"]] for s in range(12)])
    assert calls and all(c == pytest.approx((2.5, width, 1.01, 2.99), rel=1e-12) for c in calls)
    # the drawn slopes follow that truncated normal: its mean and std within 4 standard errors
    a, b = (1.01 - 2.5) / width, (2.99 - 2.5) / width
    law = scipy.stats.truncnorm(a, b, loc=2.5, scale=width)
    n = len(slopes)
    assert n > 300
    assert abs(slopes.mean() - law.mean()) < 4 * law.std() / np.sqrt(n)
    assert abs(slopes.std() - law.std()) < 4 * law.std() / np.sqrt(2 * n) * 1.5


def test_los_scatter_mode_default_and_error():
    assert LineOfSight(LOS).scatter_mode == "relative"  # today's behaviour unless the config asks for the quirk
    with pytest.raises(ValueError, match="lens.los.gamma_scatter"):
        LineOfSight(dict(LOS, gamma_scatter="gamma2"))


def test_nfw_los_concentration_ignores_c_factor(los):
    """LOS NFW halos keep the plain DM14 concentration whatever the CDM population's c_factor (as the reference)."""
    base = {"profile": "NFW", "c_factor": 1.0, "dex_scatter": 0.1}
    one = los.draw(np.random.default_rng(8), profile="NFW", population=base, **KW)
    ten = los.draw(np.random.default_rng(8), profile="NFW", population=dict(base, c_factor=10.0), **KW)
    assert len(one.models) > 0
    np.testing.assert_array_equal(one.table, ten.table)
