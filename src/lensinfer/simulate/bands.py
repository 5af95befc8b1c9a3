"""Multi-band (ground-based survey) imaging: per-band instruments, seeing draws, colours and band scenes.

A multi-band config lists ``instrument.bands`` (see :func:`lensinfer.simulate.instrument.band_configs`). One scene is
drawn per image — subhalos are placed on the smooth image of the *reference band* — and rendered once per band with
that band's amplitudes, PSF and noise. Magnitudes in ``lens.*`` are reference-band magnitudes; each light component
may carry ``colors: {band: prior}`` with m_band = m_ref + colour_band (bands not listed: colour 0; the reference band
has colour 0). In band b a component's flux (e⁻/s) is 10^(−0.4 (m_b − ZP_b)) (lenstronomy
``data_util.magnitude2cps``), i.e. the reference-band amplitude times 10^(−0.4 (colour_b − (ZP_b − ZP_ref))).

Seeing may be drawn per image and band from a prior, ``psf: {type: gaussian, fwhm: {uniform: [0.9, 1.1]}}``
(DES wide-field seeing ≈ 0.84–1.12″ FWHM in lenstronomy's ``SimulationAPI/ObservationConfig/DES.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from .. import physics
from .instrument import Instrument, band_configs, reference_band
from .priors import draw
from .renderers import Renderer, make_renderer
from .scene import Scene

__all__ = ["LIGHT_COMPONENTS", "BandSet", "component_colors", "draw_colors", "band_scene"]

#: light components that can carry colours: (parameter-table prefix, config path under ``lens``)
LIGHT_COMPONENTS = (("lens_light", "lens_light"), ("source", "source"), ("ps", "point_source"))


def _psf_is_drawn(psf: Mapping[str, Any]) -> bool:
    return psf.get("type") == "gaussian" and isinstance(psf.get("fwhm"), Mapping)


class BandSet:
    """The bands of a multi-band config: their instruments and renderers (one per band; per image for drawn seeing)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        bands = band_configs(config["instrument"])
        if bands is None:
            raise ValueError("instrument.bands: not a multi-band config")
        self.config = config
        self.names = [name for name, _ in bands]
        self.reference = str(reference_band(config["instrument"]))
        self.band_cfg = dict(bands)
        #: per-band instrument (noise, zero point, exposure); the PSF of a drawn-seeing band is set per image
        self.instruments = {name: Instrument(cfg) for name, cfg in bands}
        self._fixed: dict[str, Renderer] = {
            name: make_renderer(config, self.instruments[name]) for name, cfg in bands if not _psf_is_drawn(cfg["psf"])
        }

    @property
    def zero_points(self) -> dict[str, float]:
        return {b: self.instruments[b].zero_point for b in self.names}

    def draw_psf(self, rng: np.random.Generator) -> dict[str, float]:
        """FWHM (arcsec) of every Gaussian-PSF band; bands with a prior draw from ``rng`` in band order."""
        out: dict[str, float] = {}
        for name in self.names:
            psf = self.band_cfg[name]["psf"]
            if psf.get("type") == "gaussian":
                out[name] = float(draw(psf["fwhm"], rng)) if _psf_is_drawn(psf) else float(psf["fwhm"])
        return out

    def renderers(self, fwhm: Mapping[str, float]) -> dict[str, Renderer]:
        """One renderer per band (via :func:`make_renderer`), with the drawn seeing where it is drawn."""
        out: dict[str, Renderer] = {}
        for name in self.names:
            if name in self._fixed:
                out[name] = self._fixed[name]
                continue
            cfg = dict(self.band_cfg[name])
            cfg["psf"] = dict(cfg["psf"], fwhm=float(fwhm[name]))
            out[name] = make_renderer(self.config, Instrument(cfg))
        return out

    def scene_in(self, scene: Scene, band: str) -> Scene:
        """The scene with its light amplitudes in ``band`` (:func:`band_scene`)."""
        return band_scene(scene, band, reference=self.reference, zero_points=self.zero_points)

    def attrs(self) -> dict[str, Any]:
        """Shard attributes of the band axis: names and per-band σ_bkg, total exposure time, zero point."""
        return {
            "bands": list(self.names),
            "reference_band": self.reference,
            "sigma_bkg": [self.instruments[b].sigma_bkg for b in self.names],
            "exposure_time": [self.instruments[b].exposure_time for b in self.names],
            "zero_point": [self.instruments[b].zero_point for b in self.names],
        }


def component_colors(config: Mapping[str, Any], component: str) -> Mapping[str, Any]:
    """The ``colors`` mapping of ``lens.<component>`` (empty when absent or the component is off)."""
    section = config["lens"].get(component) or {}
    return section.get("colors") or {}


def draw_colors(rng: np.random.Generator, scene: Scene, config: Mapping[str, Any]) -> None:
    """Draw the colours of every light component and add per-band magnitudes/colours to the parameter table.

    Order of draws: lens light, source, point source; within each, the non-reference bands in channel order.
    Columns: ``<prefix>_color_<band>`` (m_band − m_ref, non-reference bands) and, when the component has a
    reference magnitude, ``<prefix>_magnitude_<band>`` for every band.
    """
    names = [str(b["name"]) for b in config["instrument"]["bands"]]
    ref = str(reference_band(config["instrument"]))
    p = scene.params
    for prefix, component in LIGHT_COMPONENTS:
        if prefix == "lens_light" and not scene.lens_light_model_list:
            continue
        if prefix == "ps" and scene.point_source is None:
            continue
        colors = component_colors(config, component)
        for b in names:
            if b == ref:
                continue
            p[f"{prefix}_color_{b}"] = float(draw(colors[b], rng)) if b in colors else 0.0
        if f"{prefix}_magnitude" in p:
            for b in names:
                p[f"{prefix}_magnitude_{b}"] = p[f"{prefix}_magnitude"] + (0.0 if b == ref else p[f"{prefix}_color_{b}"])


def _scale_light(kwargs: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    out = []
    for kw in kwargs:
        kw = dict(kw)
        if "amp" in kw:
            kw["amp"] = kw["amp"] * factor
        elif "image" in kw:  # lenstronomy INTERPOL without 'amp' (COSMOS galaxies): scale the pixel values
            kw["image"] = np.asarray(kw["image"]) * factor
        else:
            raise ValueError(f"cannot rescale a light profile without 'amp' or 'image': keys {sorted(kw)}")
        out.append(kw)
    return out


def band_scene(scene: Scene, band: str, *, reference: str, zero_points: Mapping[str, float]) -> Scene:
    """The scene with every light amplitude converted from the reference band to ``band`` (same geometry).

    Factor 10^(−0.4 (colour_b − (ZP_b − ZP_ref))) per component; the lens model is shared (not copied).
    """
    if band == reference:
        return scene
    p = scene.params
    dzp = zero_points[band] - zero_points[reference]

    def factor(prefix: str) -> float:
        return float(physics.magnitude_to_cps(p.get(f"{prefix}_color_{band}", 0.0), dzp))

    ps = scene.point_source
    if ps is not None:
        ps = dict(ps, source_amp=ps["source_amp"] * factor("ps"))
    return dataclasses.replace(
        scene,
        kwargs_source=_scale_light(scene.kwargs_source, factor("source")),
        kwargs_lens_light=_scale_light(scene.kwargs_lens_light, factor("lens_light")),
        point_source=ps,
    )
