"""Choice of the image renderer (``renderer.backend``): one interface, several implementations.

A renderer has an ``instrument`` attribute and three methods used by :mod:`lensinfer.simulate.shard`:
``smooth_image(macro)`` (subhalo-placement map), ``image(scene)`` (noiseless, PSF-convolved full scene) and
``mean_convergence(models, kwargs)`` (mean κ over the field, for the negative mass sheet).

Backends: ``lenstronomy`` (:class:`~lensinfer.simulate.lenstronomy_backend.LenstronomyRenderer`, the reference) and
``torch`` (:class:`~lensinfer.simulate.torch_backend.TorchRenderer`, batched, on ``renderer.device``). A renderer may
also offer ``smooth_images(macros)`` / ``images(scenes)`` that render many at once (the torch backend does).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np

from .instrument import Instrument

__all__ = ["Renderer", "make_renderer"]


class Renderer(Protocol):
    """What the simulator needs from an image renderer."""

    instrument: Instrument

    def smooth_image(self, macro: Any) -> np.ndarray: ...

    def image(self, scene: Any) -> np.ndarray: ...

    def mean_convergence(self, models: list[str], kwargs: list[dict[str, float]]) -> float: ...


def make_renderer(config: Mapping[str, Any], instrument: Instrument | None = None) -> Renderer:
    """The renderer selected by ``config['renderer']`` for ``instrument`` (default: the config's instrument)."""
    inst = instrument if instrument is not None else Instrument(config["instrument"])
    backend = config["renderer"].get("backend", "lenstronomy")
    if backend == "lenstronomy":
        from .lenstronomy_backend import LenstronomyRenderer

        return LenstronomyRenderer(inst, config["cosmology"])
    if backend == "torch":
        from .torch_backend import TorchRenderer

        return TorchRenderer(inst, config["cosmology"], config["renderer"].get("device", "auto"))
    raise ValueError(f"renderer.backend: unknown backend {backend!r}; allowed: lenstronomy, torch")
