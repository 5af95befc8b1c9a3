"""Torch lens profiles vs lenstronomy 1.14.0 at random parameters (deflections, convergences, Sérsic light).

NUMBA_CACHE_DIR comes from tests/conftest.py. The EPL yardstick is lenstronomy's own disagreement between 'EPL'
(scipy hyp2f1) and 'EPL_NUMBA' (TM15 series): ours must agree with 'EPL' within a small multiple of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensinfer.lensing.epl import epl_convergence, epl_deflection, epl_series_length
from lensinfer.lensing.light import sersic_ellipse
from lensinfer.lensing.multipole import multipole_deflection
from lensinfer.lensing.nfw import nfw_convergence, nfw_deflection, tnfw_convergence, tnfw_deflection
from lensinfer.lensing.profiles import sheet_deflection
from lensinfer.lensing.shear import shear_deflection

lenstronomy = pytest.importorskip("lenstronomy")


def _t(*values):
    return [torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in values]


def _points(rng, cx, cy, n=400, r_min=1e-6, r_max=10.0):
    """Points from r_min to r_max around (cx, cy), log-uniform in radius (near the centre and far)."""
    r = 10 ** rng.uniform(np.log10(r_min), np.log10(r_max), n)
    phi = rng.uniform(0, 2 * np.pi, n)
    return cx + r * np.cos(phi), cy + r * np.sin(phi)


def _rel(a, b):
    """|a − b| / |b| for deflection pairs (α_x, α_y)."""
    return np.hypot(a[0] - b[0], a[1] - b[1]) / np.hypot(b[0], b[1])


def _epl_cases(rng, n):
    slopes = [1.1, 1.2, 2.8, 2.9, 2.0, 1.01, 2.99]
    for i in range(n):
        gamma = slopes[i] if i < len(slopes) else rng.uniform(1.1, 2.9)
        q = rng.uniform(0.5, 1.0) if i % 3 else 0.5  # axis ratio down to 0.5 (|e| = 1/3)
        c = (1 - q) / (1 + q)
        angle = rng.uniform(-np.pi, np.pi)
        yield dict(
            theta_E=10 ** rng.uniform(-4, 0.3),
            gamma=gamma,
            e1=c * np.cos(angle),
            e2=c * np.sin(angle),
            center_x=rng.uniform(-1, 1),
            center_y=rng.uniform(-1, 1),
        )


def test_epl_within_lenstronomy_yardstick():
    from lenstronomy.LensModel.Profiles.epl import EPL
    from lenstronomy.LensModel.Profiles.epl_numba import EPL_numba

    rng = np.random.default_rng(1)
    ref, numba = EPL(), EPL_numba()
    ours_err, yardstick = [], []
    for kw in _epl_cases(rng, 60):
        x, y = _points(rng, kw["center_x"], kw["center_y"])
        a_ref = ref.derivatives(x, y, **kw)
        a_numba = numba.derivatives(x, y, **kw)
        a_ours = [v.numpy() for v in epl_deflection(*_t(x, y), *_t(*kw.values()))]
        ours_err.append(_rel(a_ours, a_ref).max())
        yardstick.append(_rel(a_numba, a_ref).max())
    ours, stick = max(ours_err), max(yardstick)
    assert stick < 1e-13  # lenstronomy's own precision: a few 1e-15
    assert ours <= 3 * stick, (ours, stick)


def test_epl_centre_and_symmetry():
    """Zero deflection exactly at the centre (lenstronomy nan_to_num); SIS limit |α| = θE for q = 1, γ = 2."""
    ax, ay = (v.numpy() for v in epl_deflection(*_t([0.3, 0.0], [0.4, 0.0]), *_t(0.7, 2.0, 0.0, 0.0, 0.0, 0.0)))
    assert np.allclose(np.hypot(ax[0], ay[0]), 0.7, rtol=1e-14)
    assert ax[1] == 0 and ay[1] == 0


def test_nfw_near_scale_radius_is_smooth():
    """Across X = 1 our F-based forms are smooth (series), so κ(X) is monotonic and continuous there."""
    x = torch.tensor(1.0 + np.linspace(-2e-3, 2e-3, 401))
    k = nfw_convergence(x, torch.zeros_like(x), *_t(1.0, 0.1))
    assert (torch.diff(k) < 0).all()


def test_epl_series_length():
    assert epl_series_length(0.0) == 6
    n = epl_series_length(0.28, 1e-16)
    assert n >= 6
    assert 0.28**n / (1 - 0.28) <= 1e-16 < 0.28 ** (n - 1) / (1 - 0.28)
    with pytest.raises(ValueError):
        epl_series_length(1.0)


def test_epl_convergence_matches_lenstronomy():
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(2)
    model = LensModel(["EPL"])
    for kw in _epl_cases(rng, 20):
        x, y = _points(rng, kw["center_x"], kw["center_y"], r_min=1e-4, r_max=5)
        ref = model.kappa(x, y, [kw])
        ours = epl_convergence(*_t(x, y), *_t(*kw.values())).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_nfw_and_tnfw_match_lenstronomy():
    """Where lenstronomy's closed forms are accurate (X = R/Rs > 0.02 and |X − 1| > 1e-3; they cancel
    catastrophically elsewhere, see the mpmath test below) the deflections and convergences agree to 1e-9."""
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(3)
    nfw, tnfw = LensModel(["NFW"]), LensModel(["TNFW"])
    for _ in range(20):
        kw = dict(
            Rs=10 ** rng.uniform(-2, 0.5),
            alpha_Rs=10 ** rng.uniform(-4, -1),
            center_x=rng.uniform(-1, 1),
            center_y=rng.uniform(-1, 1),
        )
        kwt = dict(kw, r_trunc=kw["Rs"] * 10 ** rng.uniform(-1, 1.5))
        kwt = {k: kwt[k] for k in ("Rs", "alpha_Rs", "r_trunc", "center_x", "center_y")}
        x, y = _points(rng, kw["center_x"], kw["center_y"], r_min=0.021 * kw["Rs"], r_max=100 * kw["Rs"])
        X = np.hypot(x - kw["center_x"], y - kw["center_y"]) / kw["Rs"]
        x, y = x[np.abs(X - 1) > 1e-3], y[np.abs(X - 1) > 1e-3]
        for model, deflect, kappa, params in (
            (nfw, nfw_deflection, nfw_convergence, kw),
            (tnfw, tnfw_deflection, tnfw_convergence, kwt),
        ):
            ours = [v.numpy() for v in deflect(*_t(x, y), *_t(*params.values()))]
            assert _rel(ours, model.alpha(x, y, [params])).max() < 1e-9
            ref = model.kappa(x, y, [params])
            np.testing.assert_allclose(
                kappa(*_t(x, y), *_t(*params.values())).numpy(), ref, rtol=1e-9, atol=1e-12 * ref.max()
            )


def test_nfw_and_tnfw_exact_where_closed_forms_cancel():
    """Against 40-digit mpmath at X → 0 and X → 1, where lenstronomy loses up to all digits (X = 1 − 6e-16)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40

    def big_f(x):
        return (
            mp.acosh(1 / x) / mp.sqrt(1 - x * x)
            if x < 1
            else (mp.acos(1 / x) / mp.sqrt(x * x - 1) if x > 1 else mp.mpf(1))
        )

    def g_nfw(x):
        return mp.log(x / 2) + big_f(x)

    def g_tnfw(x, tau):
        root = mp.sqrt(tau**2 + x**2)
        log_l = mp.log(x / (tau + root))
        return (
            tau**2
            / (tau**2 + 1) ** 2
            * (
                (tau**2 + 1 + 2 * (x**2 - 1)) * big_f(x)
                + tau * mp.pi
                + (tau**2 - 1) * mp.log(tau)
                + root * (-mp.pi + log_l * (tau**2 - 1) / tau)
            )
        )

    scale = 4 / (4 * (1 + np.log(0.5)))  # 4 ρ0 Rs for Rs = α_Rs = 1
    for X in (1e-5, 1e-3, 0.3, 1 - 1e-9, 1 - 6e-16, 1.0, 1 + 1e-9, 1.0005, 30.0):
        ax, _ = nfw_deflection(*_t([X], [0.0]), *_t(1.0, 1.0))
        exact = scale * float(g_nfw(mp.mpf(X))) / X
        assert abs(float(ax[0]) / exact - 1) < 1e-12, X
        for tau in (0.3, 3.0, 30.0):
            if X < 1e-3:
                continue  # TNFW floors X at 0.001 (lenstronomy convention)
            ax, _ = tnfw_deflection(*_t([X], [0.0]), *_t(1.0, 1.0, tau))
            exact = scale * float(g_tnfw(mp.mpf(X), mp.mpf(tau))) / X
            assert abs(float(ax[0]) / exact - 1) < 1e-9, (X, tau)


def test_shear_multipole_sheet_match_lenstronomy():
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(4)
    x, y = _points(rng, 0.1, -0.2, r_min=1e-3, r_max=3)
    cases = [
        ("SHEAR", dict(gamma1=0.07, gamma2=-0.04, ra_0=0.1, dec_0=0.2), shear_deflection),
        ("MULTIPOLE", dict(m=3, a_m=0.04, phi_m=1.1, center_x=0.1, center_y=-0.2), multipole_deflection),
        ("MULTIPOLE", dict(m=4, a_m=0.02, phi_m=-2.5, center_x=0.1, center_y=-0.2), multipole_deflection),
        ("CONVERGENCE", dict(kappa=-0.03, ra_0=0.0, dec_0=0.0), sheet_deflection),
    ]
    for name, kw, fn in cases:
        ref = LensModel([name]).alpha(x, y, [kw])
        ours = [v.numpy() for v in fn(*_t(x, y), *_t(*kw.values()))]
        np.testing.assert_allclose(ours[0], ref[0], rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(ours[1], ref[1], rtol=1e-13, atol=1e-16)
    with pytest.raises(ValueError):
        multipole_deflection(*_t(x, y), *_t(1, 0.01, 0.0))


def test_sersic_matches_lenstronomy():
    from lenstronomy.LightModel.light_model import LightModel

    rng = np.random.default_rng(5)
    model = LightModel(["SERSIC_ELLIPSE"])
    for _ in range(10):
        kw = dict(
            amp=10 ** rng.uniform(-1, 2),
            R_sersic=rng.uniform(0.05, 1.0),
            n_sersic=rng.uniform(0.5, 6),
            e1=rng.uniform(-0.3, 0.3),
            e2=rng.uniform(-0.3, 0.3),
            center_x=rng.uniform(-1, 1),
            center_y=rng.uniform(-1, 1),
        )
        x, y = _points(rng, kw["center_x"], kw["center_y"], r_min=1e-6, r_max=30)
        ref = model.surface_brightness(x, y, [kw])
        ours = sersic_ellipse(*_t(x, y), *_t(*kw.values())).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-300)
