"""Fused inverse of the monotonic rational-quadratic spline (Durkan et al. 2019, "Neural Spline Flows", eqs. 4–8
and appendix A.3) from the raw hyper-network output, for fast NPE posterior sampling.

zuko's :class:`~zuko.transforms.MonotonicRQSTransform` builds the spline with ~40 tensor operations (bounded
pre-activations, softmax, cumulative sums, a comparison search for the bin, gathers of the six knot values, the
quadratic solve). On a CPU each of them streams (rows × features × bins) values through memory, and for posterior
sampling — millions of (sample, feature) rows — they cost more than the hyper-network's matrix products. This
kernel does the same arithmetic in one pass over the parameters, in float64, on blocks of 512 rows laid out so that
the loops over rows vectorise (SIMD; exp as a polynomial, the bin search and the solve branch-free):

* widths w_k and heights h_k: softmax of a/(1 + |2a / log s|) (zuko's bounded pre-activation, s the minimum
  slope), knots x_k = B(2 Σ_{i<k} w_i − 1), y_k likewise (x_0 = y_0 = −B);
* bin k with y_k < y ≤ y_{k+1} (zuko's ``searchsorted``: count of knots below y, minus 1); outside [−B, B] the
  transform is the identity;
* the bin's two knot derivatives d_k = exp(u/(1 + |u / log s|)), d_0 = d_K = 1 (only those two are computed);
* x = x_k + ξ (x_{k+1} − x_k) with ξ = 2c / (−b − √(b² − 4ac)) the root in [0, 1] of the quadratic of
  Durkan et al. (appendix A.3; zuko's ``_inverse``).

The values equal zuko's inverse evaluated in float64, rounded once to float32 (``tests/test_spline.py``); zuko's
own float32 evaluation differs from both by its rounding. Parameters are laid out as zuko's ``unpack`` of shapes
``[(K,), (K,), (K − 1,)]``: widths, heights, inner derivatives.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["rqs_inverse", "available"]

try:  # numba is a dependency of lenstronomy; without it the caller falls back to zuko's tensor code
    import numba
except ImportError:  # pragma: no cover - exercised only in environments without numba
    numba = None


def available() -> bool:
    """True when the fused kernel can run (numba importable)."""
    return numba is not None


def _exp(x: float) -> float:
    """exp(x) for |x| ≤ 7 (the bounded pre-activations: |x| ≤ |log s| = 6.9) as a polynomial, so that loops over
    rows vectorise (no libm call): exp(x) = (e^{x/16})^16 with the degree-9 Taylor polynomial of e^{x/16}; relative
    error ≈ 1e-9 at |x| = 7 (16 × the polynomial's 7e-11), far below float32 rounding."""
    u = x * 0.0625
    p = 1.0 + u * (1.0 + u * (0.5 + u * (1.0 / 6 + u * (1.0 / 24 + u * (1.0 / 120 + u * (
        1.0 / 720 + u * (1.0 / 5040 + u * (1.0 / 40320 + u * (1.0 / 362880)))))))))
    p = p * p
    p = p * p
    p = p * p
    return p * p


def _knots(phi: np.ndarray, rows: int, f: int, bins: int, bound: float, log_slope: float, xs: np.ndarray,
           ys: np.ndarray, scale: np.ndarray) -> None:
    """Knots of the splines of feature ``f`` of phi[:rows] (rows, F, 3K − 1) into xs, ys (K + 1, rows):
    x_k = B(2 Σ_{i<k} softmax(w̃)_i − 1) (y_k from the heights), w̃ = a / (1 + |2a / log s|) zuko's bounded
    pre-activation. ``scale`` (2, rows) is scratch."""
    c = 2.0 / abs(log_slope)
    for k in range(bins):
        for r in range(rows):
            a = phi[r, f, k]
            xs[k + 1, r] = _exp(a / (1.0 + abs(a) * c))
            b = phi[r, f, bins + k]
            ys[k + 1, r] = _exp(b / (1.0 + abs(b) * c))
    for r in range(rows):
        xs[0, r] = 0.0
        ys[0, r] = 0.0
    for k in range(1, bins + 1):  # cumulative sums
        for r in range(rows):
            xs[k, r] += xs[k - 1, r]
            ys[k, r] += ys[k - 1, r]
    for r in range(rows):  # softmax normalisation and the map to [−B, B]
        scale[0, r] = 2.0 * bound / xs[bins, r]
        scale[1, r] = 2.0 * bound / ys[bins, r]
    for k in range(bins):
        for r in range(rows):
            xs[k, r] = xs[k, r] * scale[0, r] - bound
            ys[k, r] = ys[k, r] * scale[1, r] - bound
    for r in range(rows):
        xs[bins, r] = bound
        ys[bins, r] = bound


def _derivative(u: float, log_slope: float) -> float:
    """Inner knot derivative exp(u / (1 + |u / log s|)) (zuko's bounded pre-activation)."""
    return _exp(u / (1.0 + abs(u / log_slope)))


def _derivatives(phi: np.ndarray, rows: int, f: int, bins: int, log_slope: float, ds: np.ndarray) -> None:
    """All knot derivatives of feature ``f`` of phi[:rows] into ds (K + 1, rows): d_0 = d_K = 1."""
    for r in range(rows):
        ds[0, r] = 1.0
        ds[bins, r] = 1.0
    for k in range(bins - 1):
        for r in range(rows):
            ds[k + 1, r] = _derivative(phi[r, f, 2 * bins + k], log_slope)


def _bin(yv: float, ys: np.ndarray, r: int, bins: int) -> int:
    """Bin of yv: number of knots y_k strictly below it, minus one (zuko's searchsorted); −1 or K outside."""
    kb = -1
    for k in range(bins + 1):
        kb += ys[k, r] < yv
    return kb


def _solve(yv: float, xs: np.ndarray, ys: np.ndarray, r: int, kb: int, d0: float, d1: float) -> float:
    """RQS⁻¹(yv) in bin kb of the spline in column r of the knots, knot derivatives d0, d1 (Durkan et al. 2019,
    appendix A.3: the root in [0, 1] of their quadratic, in zuko's numerically stable form)."""
    x0 = xs[kb, r]
    x1 = xs[kb + 1, r]
    y0 = ys[kb, r]
    y1 = ys[kb + 1, r]
    sl = (y1 - y0) / (x1 - x0)
    yy = yv - y0
    t = d0 + d1 - 2.0 * sl
    qa = (y1 - y0) * (sl - d0) + yy * t
    qb = (y1 - y0) * d0 - yy * t
    qc = -sl * yy
    disc = qb * qb - 4.0 * qa * qc
    xi = 2.0 * qc / (-qb - math.sqrt(max(disc, 0.0)))
    return x0 + xi * (x1 - x0)


def _kernel(y: np.ndarray, phi: np.ndarray, cols: np.ndarray, out: np.ndarray, bins: int, bound: float,
            log_slope: float) -> None:
    """out[:, cols] = RQS⁻¹(y[:, cols]) for y, out (N, P), one spline per (row, feature): phi (N, F, 3K − 1).
    Only the bin's two knot derivatives are computed."""
    n = y.shape[0]
    f_n = cols.shape[0]
    for blk in numba.prange((n + _BLOCK - 1) // _BLOCK):
        r0 = blk * _BLOCK
        rows = min(n, r0 + _BLOCK) - r0
        xs = np.empty((bins + 1, rows))  # knot buffers of the block (bins, rows): loops over rows vectorise
        ys = np.empty((bins + 1, rows))
        scale = np.empty((2, rows))
        yb = np.empty(rows)
        kbs = np.empty(rows, np.int64)
        for f in range(f_n):
            c = cols[f]
            p = phi[r0:r0 + rows]
            _knots(p, rows, f, bins, bound, log_slope, xs, ys, scale)
            for r in range(rows):
                yb[r] = y[r0 + r, c]
                kbs[r] = -1
            for k in range(bins + 1):  # the bin: number of knots strictly below y, minus one
                for r in range(rows):
                    kbs[r] += ys[k, r] < yb[r]
            for r in range(rows):  # branch-free (clamped bin, then a select) so that it vectorises
                kb = kbs[r]
                k = min(max(kb, 0), bins - 1)
                d0 = _derivative(p[r, f, 2 * bins + max(k - 1, 0)], log_slope) if k > 0 else 1.0
                d1 = _derivative(p[r, f, 2 * bins + min(k, bins - 2)], log_slope) if k < bins - 1 else 1.0
                x = _solve(yb[r], xs, ys, r, k, d0, d1)
                out[r0 + r, c] = x if 0 <= kb < bins else yb[r]  # identity outside the domain [−B, B]


def _kernel_shared(y: np.ndarray, phi: np.ndarray, cols: np.ndarray, out: np.ndarray, bins: int, bound: float,
                   log_slope: float) -> None:
    """out[..., cols] = RQS⁻¹(y[..., cols]) for y, out (S, M, P) with one spline per (M, feature), phi (M, F, 3K − 1),
    shared by the S rows: its knots and derivatives are built once."""
    s_n, m_n = y.shape[0], y.shape[1]
    f_n = cols.shape[0]
    xs = np.empty((f_n, bins + 1, m_n))
    ys = np.empty((f_n, bins + 1, m_n))
    ds = np.empty((f_n, bins + 1, m_n))
    scale = np.empty((2, m_n))
    for f in range(f_n):
        _knots(phi, m_n, f, bins, bound, log_slope, xs[f], ys[f], scale)
        _derivatives(phi, m_n, f, bins, log_slope, ds[f])
    for s in numba.prange(s_n):
        for m in range(m_n):
            for f in range(f_n):
                c = cols[f]
                yv = float(y[s, m, c])
                kb = _bin(yv, ys[f], m, bins)
                if kb < 0 or kb >= bins:
                    out[s, m, c] = yv
                else:
                    out[s, m, c] = _solve(yv, xs[f], ys[f], m, kb, ds[f, kb, m], ds[f, kb + 1, m])


_BLOCK = 512  # rows per parallel work item (its knot buffers stay in the L1/L2 cache)
if numba is not None:
    _jit = numba.njit(cache=True, fastmath=True, inline="always")
    _exp, _knots, _derivative, _derivatives = _jit(_exp), _jit(_knots), _jit(_derivative), _jit(_derivatives)
    _bin, _solve = _jit(_bin), _jit(_solve)
    _kernel = numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)(_kernel)
    _kernel_shared = numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)(_kernel_shared)


def rqs_inverse(y: Tensor, phi: Tensor, bins: int, bound: float = 5.0, slope: float = 1e-3,
                columns: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """Inverse of the rational-quadratic splines with raw parameters ``phi`` at the ``columns`` of ``y``.

    ``y``: (S, M, P); ``columns``: the F feature indices to invert (default all P); ``phi``: (S, M, F, 3K − 1), one
    spline per element, or (1, M, F, 3K − 1), one spline per (M, feature) shared by the S rows (e.g. the
    context-only features of a coupling layer: its knots are built once). Writes the inverted columns into ``out``
    (S, M, P; default a copy of ``y``) and returns it. CPU float32 tensors; ``out`` must be contiguous. Runs on
    ``torch.get_num_threads()`` numba threads.
    """
    if numba is None:
        raise RuntimeError("rqs_inverse needs numba")
    cols = np.arange(y.shape[-1]) if columns is None else columns.detach().cpu().numpy().astype(np.int64)
    if y.dim() != 3 or phi.dim() != 4 or phi.shape[1] != y.shape[1] or phi.shape[2] != len(cols) \
            or phi.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"rqs_inverse: y (S, M, P) and phi (S|1, M, F, 3K-1) with F = {len(cols)} columns expected, "
                         f"got {tuple(y.shape)} and {tuple(phi.shape)}")
    if bins < 2:
        raise ValueError(f"rqs_inverse: at least 2 bins, got {bins}")
    if phi.shape[-1] != 3 * bins - 1:
        raise ValueError(f"rqs_inverse: {bins} bins need 3K-1 = {3 * bins - 1} parameters, got {phi.shape[-1]}")
    if len(cols) and (cols.min() < 0 or cols.max() >= y.shape[-1]):
        raise ValueError(f"rqs_inverse: columns {cols.tolist()} outside the {y.shape[-1]} features")
    if out is None:
        out = y.detach().to("cpu", torch.float32, copy=True).contiguous()
    elif out.shape != y.shape or out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous():
        raise ValueError("rqs_inverse: out must be a contiguous CPU float32 tensor shaped like y")
    y_np = y.detach().to("cpu", torch.float32).contiguous().numpy()
    phi_np = phi.detach().to("cpu", torch.float32).contiguous().numpy()
    out_np = out.detach().numpy()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    args = (int(bins), float(bound), float(math.log(slope)))
    if phi_np.shape[0] == 1 and y_np.shape[0] > 1:
        _kernel_shared(y_np, phi_np[0], cols, out_np, *args)
    else:
        p = y_np.shape[-1]
        _kernel(y_np.reshape(-1, p), phi_np.reshape(-1, len(cols), phi_np.shape[-1]), cols, out_np.reshape(-1, p),
                *args)
    return out
