"""Image positions and time delays from macro-model posteriors (lensinfer.derived, lenstronomy 1.14.0).

Analytic check (singular isothermal sphere, Schneider, Ehlers & Falco 1992 §8.1.4; Witt, Mao & Keeton 2000):
for a source at radius β < θE the images sit at radii θE + β and θE − β on the line through the source and the
lens centre; the Fermat potential φ = |θ − β|²/2 − θE|θ| is −θE²/2 − θE β at the outer image and −θE²/2 + θE β at
the inner one, so the inner image lags by Δt = (D_Δt / c) · 2 θE β, with D_Δt = (1 + z_l) D_l D_s / D_ls.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lensinfer import derived as Dv

EPL_COLS = ["lens_theta_E", "lens_gamma", "lens_e1", "lens_e2", "lens_center_x", "lens_center_y",
            "shear_gamma1", "shear_gamma2", "source_center_x", "source_center_y"]
QUAD = np.array([1.1, 2.0, 0.1, -0.05, 0.02, 0.0, 0.04, 0.02, 0.03, 0.02])  # 4 images, two similar delays

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyDeprecationWarning")]


def _astropy_ddt_mpc(z_l: float, z_s: float) -> float:
    from astropy.cosmology import Planck18

    d_l = Planck18.angular_diameter_distance(z_l).value
    d_s = Planck18.angular_diameter_distance(z_s).value
    d_ls = Planck18.angular_diameter_distance(z_l, z_s).value
    return (1 + z_l) * d_l * d_s / d_ls


def test_time_delay_distance_matches_astropy_and_lenstronomy():
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo
    from astropy.cosmology import Planck18

    ddt = Dv.time_delay_distance(0.2, 0.6, "planck18")
    assert ddt == pytest.approx(_astropy_ddt_mpc(0.2, 0.6), rel=1e-10)
    assert ddt == pytest.approx(LensCosmo(0.2, 0.6, cosmo=Planck18).ddt, rel=1e-8)
    arr = Dv.time_delay_distance(np.array([0.2, 0.3]), np.array([0.6, 0.8]), "planck18")
    assert arr[1] == pytest.approx(_astropy_ddt_mpc(0.3, 0.8), rel=1e-10)


@pytest.mark.parametrize("theta_e,beta", [(1.2, (0.1, 0.05)), (0.9, (-0.2, 0.0))])
def test_sis_positions_and_delay_analytic(theta_e, beta):
    z_l, z_s = 0.2, 0.6
    samples = np.array([[theta_e, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, *beta]])
    res = Dv.derived_quantities(samples, EPL_COLS, z_lens=z_l, z_source=z_s, cosmology="planck18")
    assert res["multiplicity"]["reference"] == 2 and res["multiplicity"]["n_excluded"] == 0
    b = math.hypot(*beta)
    ux, uy = beta[0] / b, beta[1] / b
    (a, bimg) = res["images"]
    # first arrival: the outer image at θE + β along the source direction; then the inner one at −(θE − β)
    assert a["x"]["median"] == pytest.approx((theta_e + b) * ux, abs=1e-7)
    assert a["y"]["median"] == pytest.approx((theta_e + b) * uy, abs=1e-7)
    assert bimg["x"]["median"] == pytest.approx(-(theta_e - b) * ux, abs=1e-7)
    assert bimg["y"]["median"] == pytest.approx(-(theta_e - b) * uy, abs=1e-7)
    c = 299792458.0
    mpc, arcsec, day = 3.08567758e22, math.pi / 180 / 3600, 86400.0
    dt_analytic = _astropy_ddt_mpc(z_l, z_s) * mpc / c * 2 * theta_e * b * arcsec**2 / day
    assert a["dt_days"]["median"] == 0.0
    assert bimg["dt_days"]["median"] == pytest.approx(dt_analytic, rel=1e-8)
    assert bimg["dfermat_arcsec2"]["median"] == pytest.approx(2 * theta_e * b, rel=1e-8)
    # lenstronomy's own arrival_time route (LensModel with cosmology) agrees
    from lenstronomy.LensModel.lens_model import LensModel

    from lensinfer import physics

    lm = LensModel(["EPL"], z_lens=z_l, z_source=z_s, cosmo=physics.get_cosmology("planck18"))
    kw = [dict(theta_E=theta_e, gamma=2.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0)]
    t = lm.arrival_time(np.array([a["x"]["median"], bimg["x"]["median"]]),
                        np.array([a["y"]["median"], bimg["y"]["median"]]), kw, x_source=beta[0], y_source=beta[1])
    assert t[1] - t[0] == pytest.approx(dt_analytic, rel=1e-6)


def test_zero_width_posterior_equals_single_model():
    samples = np.tile(QUAD, (50, 1))
    res = Dv.derived_quantities(samples, EPL_COLS, z_lens=0.25, z_source=0.65, cosmology="planck18")
    assert res["n_unique_models"] == 1 and res["multiplicity"]["counts"] == {"4": 50}
    model = Dv.MacroModel(EPL_COLS)
    x, y, phi = Dv.solve_images(model, model.kwargs_lens(QUAD), QUAD[8], QUAD[9])
    dt = Dv.fermat_to_days(phi - phi[0], Dv.time_delay_distance(0.25, 0.65))
    assert len(res["images"]) == 4
    for i, im in enumerate(res["images"]):
        for key, ref in (("x", x[i]), ("y", y[i]), ("dt_days", dt[i])):
            assert im[key]["p16"] == im[key]["median"] == im[key]["p84"]
            assert im[key]["median"] == pytest.approx(ref, abs=1e-12)
    assert np.all(np.diff([im["dt_days"]["median"] for im in res["images"]]) >= 0)  # arrival order


def test_multiplicity_is_reported_not_mixed():
    # SIS with the source inside (2 images) for 60 % of the samples and outside θE (1 image) for 40 %
    n_in, n_out = 60, 40
    beta_x = np.concatenate([np.full(n_in, 0.3), np.full(n_out, 1.3)])
    samples = np.column_stack([np.ones(100), beta_x])
    res = Dv.derived_quantities(samples, ["lens_theta_E", "source_center_x"], z_lens=0.2, z_source=0.6,
                                fixed={"source_center_y": 0.0})
    mult = res["multiplicity"]
    assert mult["reference"] == 2 and mult["counts"] == {"1": 40, "2": 60}
    assert mult["fractions"]["1"] == pytest.approx(0.4) and mult["n_used"] == 60 and mult["n_excluded"] == 40
    assert len(res["images"]) == 2 and "1" in res["other_multiplicities"]
    assert res["images"][0]["x"]["median"] == pytest.approx(1.3, abs=1e-6)  # summaries only from 2-image samples
    assert res["other_multiplicities"]["1"][0]["x"]["median"] == pytest.approx(2.3, abs=1e-6)


def test_image_labels_consistent_across_samples():
    # two of the four delays differ by < 0.1 d, so sorting every sample by its own arrival times would swap them;
    # the labels follow the reference model's images instead
    rng = np.random.default_rng(0)
    widths = np.array([0.02, 0.05, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.02]) / 4
    samples = QUAD + rng.standard_normal((200, QUAD.size)) * widths
    res = Dv.derived_quantities(samples, EPL_COLS, z_lens=0.2, z_source=0.6, truth=QUAD, max_samples=150, seed=1)
    assert res["n_samples_used"] == 150 and res["multiplicity"]["reference"] == 4
    truth = res["truth"]
    tx, ty = np.asarray(truth["x"]), np.asarray(truth["y"])
    xs, ys = np.asarray(res["samples"]["x"]), np.asarray(res["samples"]["y"])
    nearest = np.argmin(np.hypot(xs[:, :, None] - tx, ys[:, :, None] - ty), axis=2)
    assert np.mean(nearest == np.arange(4)) > 0.98
    for i, im in enumerate(res["images"]):
        assert math.hypot(im["x"]["median"] - tx[i], im["y"]["median"] - ty[i]) < 0.05
    dts = np.asarray(res["samples"]["dt_days"])
    assert np.mean(dts[:, 3] < dts[:, 2]) > 0.05  # the arrival order of C and D does flip between samples


def test_per_sample_redshifts_and_multipoles():
    cols = EPL_COLS + ["multipole3_a", "multipole3_phi", "multipole4_a", "multipole4_phi", "z_lens", "z_source"]
    rng = np.random.default_rng(2)
    base = np.concatenate([QUAD, [0.01, 0.3, 0.01, -0.2, 0.2, 0.6]])
    samples = np.tile(base, (6, 1))
    samples[:, -2] = rng.uniform(0.18, 0.22, 6)
    res = Dv.derived_quantities(samples, cols, cosmology="planck18")
    assert res["lens_models"] == ["EPL", "SHEAR", "MULTIPOLE", "MULTIPOLE"] and res["z_lens"] == "per-sample"
    assert res["time_delay_distance_mpc"] == pytest.approx(
        float(np.median([_astropy_ddt_mpc(z, 0.6) for z in samples[:, -2]])), rel=0.02)
    model = Dv.MacroModel(cols)
    kw = model.kwargs_lens(base)
    x, y, _ = Dv.solve_images(model, kw, base[8], base[9], solver="auto")
    bx, by = model.lens_model.ray_shooting(x, y, kw)
    assert x.size == 4 and np.allclose(bx, base[8], atol=1e-6) and np.allclose(by, base[9], atol=1e-6)


def test_write_derived_json(tmp_path):
    rng = np.random.default_rng(3)
    samples = QUAD + rng.standard_normal((3, 40, QUAD.size)) * 0.005
    path = tmp_path / "post.npz"
    np.savez(path, samples=samples, truths=np.tile(QUAD, (3, 1)), columns=np.array(EPL_COLS),
             names=np.array(["A", "B", "C"]))
    out = tmp_path / "derived.json"
    Dv.write_derived(path, out, z_lens={"A": 0.2, "C": 0.3}, z_source=0.6, indices=[0, 2], max_samples=20)
    blob = json.loads(out.read_text())
    assert list(blob["lenses"]) == ["A", "C"]
    assert blob["lenses"]["C"]["z_lens"] == 0.3 and blob["lenses"]["A"]["truth"]["n_images"] == 4
    assert np.asarray(blob["lenses"]["A"]["samples"]["dt_days"]).shape[1] == 4
    with pytest.raises(ValueError, match="z_lens"):
        Dv.derived_quantities(samples[0], EPL_COLS, z_source=0.6)


def test_lens_redshifts_from_config_and_mock_truths(tmp_path):
    """Configured (spectroscopic) redshifts win over mock truths; unknown configured lenses are an error."""
    import json

    from lensinfer.derived import lens_redshifts

    for name, zl, zs in (("A", 0.2, 0.6), ("B", 0.3, 0.7), ("X", 0.1, 0.5)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "params": {"z_lens": zl, "z_source": zs}}))
    truths = sorted(tmp_path.glob("*.json"))
    z_l, z_s = lens_redshifts(["A", "B"], configured={"B": [0.35, 0.9]}, truth_paths=truths)
    assert z_l == {"A": 0.2, "B": 0.35} and z_s == {"A": 0.6, "B": 0.9}
    with pytest.raises(ValueError, match="unknown lenses"):
        lens_redshifts(["A"], configured={"Q": [0.1, 0.2]})
