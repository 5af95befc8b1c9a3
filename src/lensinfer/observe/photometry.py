"""Photometric units and zero points of HST images.

* AB zero point from the header keywords (observations.md §3, "Photometry"):
  ZP = −2.5 log10(PHOTFLAM) − 5 log10(PHOTPLAM) − 2.408 (≈ 25.95 for ACS/WFC F814W).
* Converting count rates between zero points: the reference simulations use ZP 25.127 (paltas'
  WFC3/UVIS value), so real ACS e-/s must be scaled by 10^(−0.4 (25.95 − 25.127)) ≈ 0.47 to
  share the simulator's flux units.
* BUNIT: drizzled HST products are in ELECTRONS/S (HAP: "cps"); totals (ELECTRONS, COUNTS)
  are divided by EXPTIME. For ACS and WFC3 "counts" are gain-corrected electrons.
"""

from __future__ import annotations

import math

from .errors import FitsUnitError

__all__ = ["ab_zero_point", "photflam_for_zero_point", "zero_point_scale", "count_rate_factor"]

_RATE_UNITS = frozenset(
    "electrons/s electrons/sec electrons/second electron/s electron/sec electron/second "
    "e-/s e/s e-/sec cps counts/s count/s counts/sec".split()
)
_TOTAL_UNITS = frozenset({"electrons", "electron", "e-", "counts", "count"})


def ab_zero_point(photflam: float, photplam: float) -> float:
    """AB magnitude of a source giving 1 e-/s, from PHOTFLAM (erg cm⁻² Å⁻¹ per e-/s) and the
    pivot wavelength PHOTPLAM (Å)."""
    if not (photflam > 0 and photplam > 0):
        raise FitsUnitError(f"PHOTFLAM and PHOTPLAM must be positive, got {photflam!r}, {photplam!r}")
    return -2.5 * math.log10(photflam) - 5.0 * math.log10(photplam) - 2.408


def photflam_for_zero_point(zero_point: float, photplam: float) -> float:
    """Inverse of :func:`ab_zero_point`: the PHOTFLAM giving ``zero_point`` at ``photplam``."""
    return 10.0 ** (-0.4 * (zero_point + 2.408 + 5.0 * math.log10(photplam)))


def zero_point_scale(zero_point_in: float, zero_point_out: float) -> float:
    """Factor converting count rates at ``zero_point_in`` into count rates at ``zero_point_out``
    (same magnitudes): 10^(−0.4 (ZP_in − ZP_out))."""
    return 10.0 ** (-0.4 * (zero_point_in - zero_point_out))


def count_rate_factor(bunit: str, exptime: float | None) -> float:
    """Factor turning data in ``bunit`` into electrons per second.

    Accepts the e-/s spellings found in HST products (``ELECTRONS/S``, ``electron / s``,
    ``cps`` …) → 1, and totals (``ELECTRONS``, ``COUNTS``) → 1/EXPTIME.

    Raises:
        FitsUnitError: unknown unit, or a total without a positive EXPTIME.
    """
    key = "".join(bunit.split()).lower()
    if key in _RATE_UNITS:
        return 1.0
    if key in _TOTAL_UNITS:
        if exptime is None or not exptime > 0:
            raise FitsUnitError(f"BUNIT {bunit!r} is a total; a positive EXPTIME is needed, got {exptime!r}")
        return 1.0 / exptime
    raise FitsUnitError(
        f"unsupported BUNIT {bunit!r}: expected electrons per second (e.g. 'ELECTRONS/S', 'cps') "
        "or electron/count totals ('ELECTRONS', 'COUNTS') with EXPTIME"
    )
