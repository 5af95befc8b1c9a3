"""Prior specifications as written in the config, and their draws.

A prior is written in YAML as one of

* a number — a fixed value;
* ``{uniform: [low, high]}``;
* ``{loguniform: [low, high]}`` (0 < low);
* ``{normal: [mean, sd]}``;
* ``{truncnormal: [mean, sd, low, high]}``;
* ``{randint: [low, high]}`` — integers in [low, high) like ``numpy.random.randint`` in the reference code.

:func:`check_prior` validates one (with the config key in the message) and :func:`draw` samples it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["PriorError", "PRIOR_KINDS", "check_prior", "draw", "prior_bounds", "draw_truncnormal"]

PRIOR_KINDS = ("uniform", "loguniform", "normal", "truncnormal", "randint")


class PriorError(ValueError):
    """An invalid prior specification; the message names the config key."""


def check_prior(spec: Any, key: str) -> None:
    """Raise :class:`PriorError` naming ``key`` unless ``spec`` is a valid prior."""
    if isinstance(spec, bool):
        raise PriorError(f"{key}: a prior cannot be a boolean")
    if isinstance(spec, (int, float)):
        if not np.isfinite(spec):
            raise PriorError(f"{key}: a fixed value must be finite, got {spec!r}")
        return
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise PriorError(f"{key}: a prior is a number or a one-key mapping with one of {list(PRIOR_KINDS)}; got {spec!r}")
    (kind, args), = spec.items()
    if kind not in PRIOR_KINDS:
        raise PriorError(f"{key}: unknown prior {kind!r}; allowed: {list(PRIOR_KINDS)}")
    need = {"uniform": 2, "loguniform": 2, "normal": 2, "truncnormal": 4, "randint": 2}[kind]
    if not isinstance(args, (list, tuple)) or len(args) != need or not all(
        isinstance(a, (int, float)) and not isinstance(a, bool) for a in args
    ):
        raise PriorError(f"{key}.{kind}: expected a list of {need} numbers, got {args!r}")
    if not all(np.isfinite(a) for a in args):
        raise PriorError(f"{key}.{kind}: the numbers must be finite, got {list(args)}")
    if kind in ("uniform", "loguniform", "randint") and not args[0] < args[1]:
        raise PriorError(f"{key}.{kind}: need low < high, got {list(args)}")
    if kind == "loguniform" and args[0] <= 0:
        raise PriorError(f"{key}.loguniform: need 0 < low, got {list(args)}")
    if kind in ("normal", "truncnormal") and args[1] < 0:
        raise PriorError(f"{key}.{kind}: the standard deviation must be >= 0, got {args[1]}")
    if kind == "truncnormal" and not args[2] < args[3]:
        raise PriorError(f"{key}.truncnormal: need low < high, got {list(args[2:])}")
    if kind == "randint" and not all(float(a).is_integer() for a in args):
        raise PriorError(f"{key}.randint: bounds must be integers, got {list(args)}")


def prior_bounds(spec: Any) -> tuple[float, float]:
    """The support [low, high] of a prior (±inf for a normal)."""
    if isinstance(spec, (int, float)):
        return float(spec), float(spec)
    (kind, args), = spec.items()
    if kind == "normal":
        return -np.inf, np.inf
    if kind == "truncnormal":
        return float(args[2]), float(args[3])
    if kind == "randint":
        return float(args[0]), float(args[1] - 1)
    return float(args[0]), float(args[1])


def draw_truncnormal(
    rng: np.random.Generator, mean: np.ndarray | float, sd: np.ndarray | float, low: float, high: float, size: Any = None
) -> np.ndarray:
    """Truncated-normal draws on [low, high] (scipy ``truncnorm``), with ``sd = 0`` meaning the mean itself."""
    mean_a = np.asarray(mean, dtype=float)
    sd_a = np.asarray(sd, dtype=float)
    if np.all(sd_a == 0):
        return np.broadcast_to(np.clip(mean_a, low, high), size if size is not None else mean_a.shape).astype(float)
    from scipy.stats import truncnorm  # imported lazily: the workflow's config checks must start fast

    a = (low - mean_a) / sd_a
    b = (high - mean_a) / sd_a
    return truncnorm.rvs(a, b, loc=mean_a, scale=sd_a, size=size, random_state=rng)


def draw(spec: Any, rng: np.random.Generator, size: Any = None) -> Any:
    """Draw from a prior specification (see module docstring); ``size=None`` returns a scalar."""
    if isinstance(spec, (int, float)):
        return float(spec) if size is None else np.full(size, float(spec))
    (kind, args), = spec.items()
    if kind == "uniform":
        return rng.uniform(args[0], args[1], size)
    if kind == "loguniform":
        return np.exp(rng.uniform(np.log(args[0]), np.log(args[1]), size))
    if kind == "normal":
        return rng.normal(args[0], args[1], size)
    if kind == "truncnormal":
        value = draw_truncnormal(rng, args[0], args[1], args[2], args[3], size=size)
        return float(value) if size is None else value
    if kind == "randint":
        value = rng.integers(int(args[0]), int(args[1]), size)
        return int(value) if size is None else value
    raise PriorError(f"unknown prior {kind!r}")
