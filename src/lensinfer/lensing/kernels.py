"""Fused "evaluate a profile over (component, point) pairs and sum over components" kernels.

``torch.compile`` (Inductor) turns an element-wise profile function followed by a sum over the last axis into one
loop nest: every pair is computed in registers and accumulated, so no (component × point) array is stored and the
cost is arithmetic only. Inductor's default fusion heuristics are kept (relaxing its realisation thresholds made
the 32-term EPL series take over 15 minutes to compile). Shapes are dynamic: one compilation serves any number of
chunks, components and points (the EPL series length is the only specialised quantity). If compilation is impossible (no C++ compiler, no Triton) the same arithmetic runs
eagerly in slices of at most :data:`EAGER_PAIRS` pairs.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

__all__ = ["EAGER_PAIRS", "summed_over_components"]

#: Pairs per eager slice; bounds every temporary to ~8 MB in float64.
EAGER_PAIRS = 1 << 20

Elementwise = Callable[..., tuple[Tensor, ...]]

_COMPILED: dict[str, Callable[..., tuple[Tensor, ...]]] = {}
_FAILED: set[str] = set()


#: Compiled variants allowed per kernel. All kernels share one Python function (``_summed``'s ``kernel``), and
#: dynamo's recompile limit (default 8) counts variants per function: EPL series lengths × shared/per-image points
#: (multi-plane) × profiles × sheet fluxes exceed 8 in a line-of-sight run, and every further variant would
#: silently run eagerly (~20× slower at 1500 subhalos).
RECOMPILE_LIMIT = 128


def _allow_variants() -> None:
    """Raise dynamo's per-function recompile limit to :data:`RECOMPILE_LIMIT` (never lower it)."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the latter is the pre-2.6 name
        if isinstance(getattr(config, name, None), int) and getattr(config, name) < RECOMPILE_LIMIT:
            setattr(config, name, RECOMPILE_LIMIT)
    if getattr(config, "accumulated_recompile_limit", RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
        config.accumulated_recompile_limit = RECOMPILE_LIMIT


def _summed(fn: Elementwise) -> Callable[..., tuple[Tensor, ...]]:
    def kernel(*args: Tensor) -> tuple[Tensor, ...]:
        return tuple(out.sum(dim=-1) for out in fn(*args))

    return kernel


def summed_over_components(
    key: str, fn: Elementwise, points: tuple[Tensor, ...], params: tuple[Tensor, ...], *, compile: bool = True
) -> tuple[Tensor, ...]:
    """Σ over the last axis of ``fn(*points, *params)`` for each of its outputs.

    ``points`` broadcast as (1, P, 1) and ``params`` end in (C, 1, K) (leading axes allowed, e.g. series terms):
    the result has shape (C, P). Points that differ per chunk are passed with shape (C, P, 1) (multi-plane ray
    tracing, where each image has its own positions on a plane) or as params of shape (C, 1, K). ``key`` names
    the compiled kernel (one per function).
    """
    kernel = _summed(fn)
    if compile and key not in _FAILED:
        if key not in _COMPILED:
            _allow_variants()
            _COMPILED[key] = torch.compile(kernel, dynamic=True)
        try:
            return _COMPILED[key](*points, *params)
        except Exception as err:  # no C++ compiler / Triton: same arithmetic, eagerly
            warnings.warn(
                f"torch.compile failed for {key} ({type(err).__name__}: {err}); using eager mode", stacklevel=2
            )
            _FAILED.add(key)
    n_chunks, width = params[0].shape[-3], params[0].shape[-1]
    per_chunk = [p.dim() >= 3 and p.shape[-3] == n_chunks > 1 for p in points]  # (C, P, 1): points of each chunk
    n_points = max((p.numel() // (n_chunks if c else 1) for p, c in zip(points, per_chunk)), default=1)
    step = max(1, EAGER_PAIRS // (n_points * width))
    parts = []
    for start in range(0, n_chunks, step):
        size = min(step, n_chunks - start)
        sliced = [p.narrow(p.dim() - 3, start, size) if c else p for p, c in zip(points, per_chunk)]
        parts.append(kernel(*sliced, *(p.narrow(p.dim() - 3, start, size) for p in params)))
    return tuple(torch.cat(outs) for outs in zip(*parts))
