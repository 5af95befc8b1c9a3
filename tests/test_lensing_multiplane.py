"""Pieces of the torch simulator backend vs lenstronomy 1.14.0: multi-plane ray tracing, 'INTERPOL' light, the
shared sheet quadrature, and per-image points in the fused kernels' eager fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensinfer import physics
from lensinfer.lensing import kernels
from lensinfer.lensing.interpol import interpol_light
from lensinfer.lensing.multiplane import plane_schedule, ray_shoot_planes
from lensinfer.lensing.scene import scene_to_arrays
from lensinfer.lensing.sheet import mean_convergence, mean_convergence_from_deflections

pytest.importorskip("lenstronomy")


def _halos(rng: np.random.Generator, n: int) -> tuple[list[str], list[dict]]:
    models, kwargs = [], []
    for i in range(n):
        c = dict(center_x=rng.uniform(-1.5, 1.5), center_y=rng.uniform(-1.5, 1.5))
        if i % 2:
            models.append("NFW")
            kwargs.append(dict(Rs=rng.uniform(0.1, 1.0), alpha_Rs=rng.uniform(0.005, 0.05), **c))
        else:
            models.append("EPL")
            kwargs.append(dict(theta_E=rng.uniform(0.01, 0.1), gamma=rng.uniform(1.5, 2.6), e1=rng.uniform(-0.2, 0.2),
                               e2=rng.uniform(-0.2, 0.2), **c))
    return models, kwargs


def test_multiplane_matches_lenstronomy():
    """Two images with different planes, main-lens redshifts and sources, in one batch."""
    from lenstronomy.LensModel.lens_model import LensModel

    cosmo = physics.get_cosmology("planck18")
    rng = np.random.default_rng(4)
    scenes = []
    for z_lens, z_source, n_los in ((0.2, 0.6, 9), (0.23, 0.68, 4)):
        models = ["EPL", "SHEAR", "CONVERGENCE"]
        kwargs = [dict(theta_E=1.1, gamma=2.1, e1=0.1, e2=-0.05, center_x=0.05, center_y=0.0),
                  dict(gamma1=0.03, gamma2=-0.02, ra_0=0.0, dec_0=0.0), dict(kappa=-0.01, ra_0=0.0, dec_0=0.0)]
        los_models, los_kwargs = _halos(rng, n_los)
        los_z = list(rng.choice([0.055, 0.105, 0.305, 0.455], n_los))  # shared planes, some behind the lens
        scenes.append((models + los_models, kwargs + los_kwargs, [z_lens] * 3 + los_z, z_source))
    x = torch.as_tensor(rng.uniform(-2, 2, 300))
    y = torch.as_tensor(rng.uniform(-2, 2, 300))
    schedule = plane_schedule([s[2] for s in scenes], [s[3] for s in scenes], cosmo)
    planes = []
    for k in range(schedule.n_planes):
        views = []
        for (models, kwargs, _, _), members in zip(scenes, schedule.members):
            idx = members[k] if k < len(members) else []
            views.append(dict(lens_model_list=[models[i] for i in idx], kwargs_lens=[kwargs[i] for i in idx]))
        planes.append(scene_to_arrays(views).lens)
    bx, by = ray_shoot_planes(planes, schedule, x, y, compile=False)
    for b, (models, kwargs, redshifts, z_source) in enumerate(scenes):
        lm = LensModel(models, z_source=z_source, lens_redshift_list=redshifts, multi_plane=True, cosmo=cosmo)
        rx, ry = lm.ray_shooting(x.numpy(), y.numpy(), kwargs)
        single = LensModel(models).ray_shooting(x.numpy(), y.numpy(), kwargs)[0]
        assert np.abs(rx - single).max() > 1e-3  # the planes matter
        np.testing.assert_allclose(bx[b].numpy(), rx, rtol=0, atol=1e-12)
        np.testing.assert_allclose(by[b].numpy(), ry, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(72, 72), (41, 58)])
def test_interpol_matches_lenstronomy(shape):
    from lenstronomy.LightModel.light_model import LightModel

    rng = np.random.default_rng(1)
    image = rng.uniform(0, 5, shape)
    kw = dict(image=image, amp=1.7, center_x=0.05, center_y=-0.1, phi_G=2.3, scale=0.021)
    x, y = rng.uniform(-1, 1, (2, 5000))
    ref = LightModel(["INTERPOL"]).surface_brightness(x, y, [kw])
    got = interpol_light(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(image), 1.7, 0.05, -0.1, 2.3, 0.021)
    assert 0.1 < (ref > 0).mean() < 0.9  # points inside and outside the stamp
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-13 * image.max())


def test_sheet_quadrature_is_shared_with_lenstronomy_deflections():
    """The lenstronomy backend's sheet (lenstronomy deflections, shared nodes) equals the torch one to rounding."""
    from lenstronomy.LensModel.lens_model import LensModel

    models, kwargs = _halos(np.random.default_rng(2), 12)
    torch_value = mean_convergence(dict(lens_model_list=models, kwargs_lens=kwargs), num_pix=50, pixel_scale=0.08,
                                   compile=False)
    alphas = [lambda a, b, m=m, kw=kw: LensModel([m]).alpha(a, b, [kw]) for m, kw in zip(models, kwargs)]
    centres = [(kw["center_x"], kw["center_y"]) for kw in kwargs]
    assert mean_convergence_from_deflections(alphas, centres, 2.0) == pytest.approx(torch_value, rel=1e-12)


def test_eager_fallback_slices_per_chunk_points(monkeypatch):
    monkeypatch.setattr(kernels, "EAGER_PAIRS", 16)
    points = (torch.rand(5, 7, 1, dtype=torch.float64),)
    params = (torch.rand(5, 1, 3, dtype=torch.float64),)
    (out,) = kernels.summed_over_components("probe_per_chunk", lambda p, q: (p * q,), points, params, compile=False)
    torch.testing.assert_close(out, (points[0] * params[0]).sum(-1))
