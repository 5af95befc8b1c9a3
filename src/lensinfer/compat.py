"""Compatibility shims for the pinned stack (spec/stack.md §2).

* numpy ≥ 2.4 removed ``np.in1d``, which paltas 0.2.0's COSMOS catalog cuts still call.
* colossus ``Cosmology.toAstropy`` builds a new astropy cosmology (~20 ms on astropy ≥ 7) on every call;
  paltas calls it once per halo redshift slice. Memoising it makes paltas' DG19 code 2.5–3× faster.
* ``import paltas`` prints a line on stdout; it is swallowed here so stdout stays machine-readable.

Always import paltas through :func:`import_paltas`.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

import numpy as np

__all__ = ["apply_numpy_shims", "patch_colossus_to_astropy", "import_paltas"]


def apply_numpy_shims() -> None:
    """Restore ``np.in1d`` as ``np.isin`` when the running numpy no longer has it."""
    if not hasattr(np, "in1d"):
        np.in1d = np.isin  # type: ignore[attr-defined]


def patch_colossus_to_astropy() -> None:
    """Memoise colossus ``Cosmology.toAstropy`` per cosmology object (idempotent)."""
    from colossus.cosmology import cosmology as cc

    if getattr(cc.Cosmology.toAstropy, "_lensinfer_cached", False):
        return
    original = cc.Cosmology.toAstropy

    def cached(self):  # type: ignore[no-untyped-def]
        value = self.__dict__.get("_lensinfer_astropy")
        if value is None:
            value = self.__dict__["_lensinfer_astropy"] = original(self)
        return value

    cached._lensinfer_cached = True  # type: ignore[attr-defined]
    cc.Cosmology.toAstropy = cached


def import_paltas() -> ModuleType:
    """Import paltas with the shims applied and its import-time stdout message swallowed."""
    apply_numpy_shims()
    with contextlib.redirect_stdout(io.StringIO()):
        import paltas
    patch_colossus_to_astropy()
    return paltas
