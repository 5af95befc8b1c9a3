"""The fused rational-quadratic-spline inverse (lensinfer.models.spline) against zuko's spline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zuko.transforms import MonotonicRQSTransform
from zuko.utils import unpack

from lensinfer.models import spline

pytestmark = pytest.mark.skipif(not spline.available(), reason="numba not installed")
K = 8


def _zuko_inverse(phi: torch.Tensor, y: torch.Tensor, bins: int = K) -> torch.Tensor:
    """zuko's inverse in float64 (the reference: the kernel computes in float64 and rounds once)."""
    w, h, d = unpack(phi.double(), [(bins,), (bins,), (bins - 1,)])
    return MonotonicRQSTransform(w, h, d, bound=5.0, slope=1e-3).inv(y.double())


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("bins", [2, 8, 10])
def test_kernel_equals_zuko_inverse(shared, bins):
    gen = torch.Generator().manual_seed(bins)
    s, m, p = 700, 3, 4  # 2 100 rows: more than one parallel block
    y = torch.randn(s, m, p, generator=gen) * 3  # |y| > 5 included: identity outside the spline
    phi = torch.randn(1 if shared else s, m, p, 3 * bins - 1, generator=gen) * 4  # wide bins and steep slopes
    phi[..., 0, 0] = 80.0  # saturated pre-activations (bounded by |log slope| / 2)
    x = spline.rqs_inverse(y, phi, bins)
    assert x.dtype == torch.float32 and x.shape == y.shape
    ref = _zuko_inverse(phi, y, bins)
    np.testing.assert_allclose(x.numpy(), ref.numpy(), rtol=2e-6, atol=2e-6)
    outside = y.abs() > 5
    assert outside.any() and torch.equal(x[outside], y[outside])
    # and it is the inverse: zuko's forward spline maps x back to y
    w, h, d = unpack(phi.double(), [(bins,), (bins,), (bins - 1,)])
    back = MonotonicRQSTransform(w, h, d, bound=5.0, slope=1e-3)(x.double())
    np.testing.assert_allclose(back.numpy(), y.numpy(), rtol=1e-4, atol=1e-4)


def test_columns_are_written_in_place_and_others_kept():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(50, 2, 6, generator=gen)
    cols = torch.tensor([4, 1, 3])
    phi = torch.randn(50, 2, 3, 3 * K - 1, generator=gen)
    out = torch.full_like(y, 7.0)
    ret = spline.rqs_inverse(y, phi, K, columns=cols, out=out)
    assert ret is out
    ref = _zuko_inverse(phi, y[..., cols])
    np.testing.assert_allclose(out[..., cols].numpy(), ref.numpy(), rtol=2e-6, atol=2e-6)
    untouched = [c for c in range(6) if c not in cols.tolist()]
    assert (out[..., untouched] == 7.0).all()
    same = spline.rqs_inverse(y, phi, K, columns=cols)  # default out: a copy of y, other columns = y
    torch.testing.assert_close(same[..., untouched], y[..., untouched])
    torch.testing.assert_close(same[..., cols], out[..., cols])


def test_bad_shapes_are_rejected():
    y = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match="at least 2 bins"):
        spline.rqs_inverse(y, torch.zeros(4, 2, 3, 2), 1)
    with pytest.raises(ValueError, match="3K-1"):
        spline.rqs_inverse(y, torch.zeros(4, 2, 3, 10), K)
    with pytest.raises(ValueError, match="expected"):
        spline.rqs_inverse(y, torch.zeros(3, 2, 3, 3 * K - 1), K)
    with pytest.raises(ValueError, match="outside"):
        spline.rqs_inverse(y, torch.zeros(4, 2, 1, 3 * K - 1), K, columns=torch.tensor([3]))
    with pytest.raises(ValueError, match="contiguous"):
        spline.rqs_inverse(y, torch.zeros(4, 2, 3, 3 * K - 1), K, out=torch.zeros(4, 2, 3, dtype=torch.float64))


def test_polynomial_exp_covers_the_bounded_pre_activations():
    x = np.linspace(-7.0, 7.0, 2001)  # |pre-activation| ≤ |log 1e-3| = 6.9
    approx = np.array([spline._exp(v) for v in x])
    assert np.max(np.abs(approx / np.exp(x) - 1)) < 2e-9
