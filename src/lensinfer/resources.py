"""Cluster resource requests derived from measured costs, not guesses (issue 21 items 2 and 7).

**simulate_shard runtime.** A shard's time is its number of images times the time per image, which grows linearly
with the number of subhalos rendered (the lensing sum over subhalos dominates at the published counts). The
per-image costs are the measurements of ``bench/simulate.py`` (README, one CPU thread, idle machine, 100×100 at
0.04″, EPL subhalos):

* torch backend: 133 ms at 1 500 subhalos, 11.2 ms for a whole demo image (few subhalos) → 11.2 ms + 81 µs per
  subhalo;
* lenstronomy backend (EPL_NUMBA): 1.79 s at 1 500 subhalos, 27.4 ms for a whole demo image → 27.4 ms + 1.18 ms per
  subhalo.

Time scales with the rendered pixels, (num_pix × supersampling)² relative to 100². The request is
``MARGIN`` × (images × (base + per-subhalo × mean N_sub)) + ``STARTUP_MIN``. The margin covers what the benchmark
does not render (line-of-sight halos, COSMOS interpolation, NFW/TNFW instead of EPL) and slower or shared nodes:
whole paper training images (config/paper.yaml with its DG19 line-of-sight halos, a Sérsic source as the COSMOS
catalogue is not on the test machine) measured 0.40 s CPU per image (8 images, after the first shard's 83 s of
imports and compile warm-up, which ``STARTUP_MIN`` covers), 3× the benchmark's 0.133 s; ``MARGIN`` = 6 leaves 2×
on top. The paper's 1 000-image training shard is then a 19-minute request (≈ 8 minutes measured), instead of the
240 minutes the rule asked for before (30× the measured cost).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .simulate.priors import prior_bounds

__all__ = ["simulate_shard_runtime_min", "PER_IMAGE_S"]

#: (seconds per image without subhalos, seconds per subhalo) at 100×100, one thread (bench/simulate.py, README)
PER_IMAGE_S = {"torch": (0.0112, (0.133 - 0.0112) / 1500), "lenstronomy": (0.0274, (1.79 - 0.0274) / 1500)}
MARGIN = 6.0
STARTUP_MIN = 5.0


def _mean_n_sub(spec: Any) -> float:
    """Mean of the N_sub prior (the midpoint of its support; randint [lo, hi) → (lo + hi − 1)/2)."""
    low, high = prior_bounds(spec)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"n_sub prior {spec!r} has an unbounded support")
    return 0.5 * (low + high)


def simulate_shard_runtime_min(config: Mapping[str, Any], dataset: str) -> int:
    """Minutes to request for one ``simulate_shard`` job of ``dataset`` (module docstring)."""
    ds = config["datasets"][dataset]
    backend = (config.get("renderer") or {}).get("backend", "lenstronomy")
    base, per_sub = PER_IMAGE_S[backend]
    inst = config["instrument"]
    pixels = (int(inst["num_pix"]) * int(inst.get("supersampling", 1)) / 100.0) ** 2
    seconds = int(ds["shard_size"]) * (base + per_sub * _mean_n_sub(ds["population"]["n_sub"])) * pixels
    return int(math.ceil(MARGIN * seconds / 60.0 + STARTUP_MIN))
