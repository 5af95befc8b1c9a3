"""One observation from raw frame to analysis-ready arrays: lens lookup, preprocessing, mask, provenance, files.

Shared by every source of observations (mock frames of the offline demo, local FITS files, MAST downloads), so
that simulated and real data take one path. ``observations.preprocess`` selects what is done to the frame:

* ``reference`` — the published analysis' input (Zhang, Şengül & Dvorkin 2023; science.md §5): the frame's own
  e⁻/s pixels cut at the catalogue position (:func:`~lensinfer.observe.preprocess.reference_cutout`), with the
  published per-lens masks in that cutout's pixels;
* ``calibrated`` — background subtraction, recentring on the lens light, flux-conserving resampling and zero-point
  conversion (:func:`~lensinfer.observe.preprocess.preprocess_fits`).

Mock lenses get the simulation's mask rule (radius 1.5·θE of their true Einstein radius, centred on the grid);
real lenses take their mask from the lens table or the config overrides. Every ``metadata.json`` records the
preprocessing steps and the frame's provenance (:func:`~lensinfer.observe.sources.observation_record`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from .lenses import LensSpec, lens_specs_from_config, reference_lens
from .preprocess import (
    preprocess_fits,
    preprocess_fits_bands,
    reference_cutout,
    write_preprocessed,
    write_preprocessed_bands,
)
from .sources import PREPROCESS_MODES, observation_record

__all__ = ["lens_spec_for", "preprocess_observation"]


def lens_spec_for(lens_name: str, frame: str | Path, observations: Mapping[str, Any], instrument: Mapping[str, Any],
                  radius_theta_e: float | None) -> LensSpec:
    """The :class:`LensSpec` of a lens under the configured observation source (``radius_theta_e=None``: a mask
    that keeps the whole grid, as the simulations' ``mask.radius_theta_E: null``)."""
    if radius_theta_e is None:
        whole_grid = float(instrument["num_pix"]) * float(instrument["pixel_scale"])  # > half-diagonal: all pixels
        spec = lens_spec_for(lens_name, frame, observations, instrument, 1.0)
        return dataclasses.replace(spec, mask_radius_arcsec=whole_grid, mask_center_offset_arcsec=(0.0, 0.0))
    if observations["source"] == "mock":
        truth = json.loads((Path(frame).parent / "truth.json").read_text())
        theta_e = float(truth["params"]["lens_theta_E"])
        return dataclasses.replace(reference_lens(lens_name), theta_e_arcsec=theta_e,
                                   mask_radius_arcsec=radius_theta_e * theta_e, mask_center_offset_arcsec=(0.0, 0.0))
    entries = [{"name": e} if isinstance(e, str) else {k: v for k, v in e.items() if k != "file"}
               for e in observations["lenses"]]
    specs = lens_specs_from_config(entries, pixel_scale_arcsec=instrument["pixel_scale"], num_pix=instrument["num_pix"])
    # matched on the config entry's name (the folder name), which may be a MAST target or full SDSS name
    for entry, spec in zip(entries, specs):
        if lens_name in (entry["name"], spec.name):
            return spec
    raise KeyError(f"observations.lenses: no lens named {lens_name!r}")


def preprocess_observation(*, lens_name: str, frame: str | Path, observations: Mapping[str, Any],
                           instrument: Mapping[str, Any], radius_theta_e: float | None, outdir: str | Path,
                           manifest: str | Path | None = None, truth: str | Path | None = None) -> dict[str, Any]:
    """Preprocess ``frame`` as ``observations.preprocess`` says and write image/mask/metadata/diagnostic into
    ``outdir`` (all four or none); ``metadata.json`` records the steps and the provenance of the frame
    (``observations.source``, file, sha256; for MAST the product from ``manifest``; for mocks the seed from
    ``truth``, default: ``truth.json`` beside the frame).

    With ``instrument.bands`` (``calibrated`` only) the frame holds one ``SCI`` extension per band (``FILTER`` =
    band name, as the mock observations write it): every band is resampled onto the reference band's centroid and
    ``image.npy`` is (C, H, W) in band order, each band at its own zero point, with one shared mask.

    Raises:
        ValueError: an unknown ``observations.preprocess`` or ``reference`` with a multi-band instrument; the
            preprocessing errors of :func:`~lensinfer.observe.preprocess.reference_cutout` /
            :func:`~lensinfer.observe.preprocess.preprocess_fits` (each naming the file).
    """
    mode = observations.get("preprocess", "calibrated")
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"observations.preprocess: {mode!r} is not one of {PREPROCESS_MODES}")
    source = observations["source"]
    if source == "mock" and truth is None:
        truth = Path(frame).parent / "truth.json"
    record = observation_record(source, frame, manifest=manifest, truth=truth)
    lens = lens_spec_for(lens_name, frame, observations, instrument, radius_theta_e)
    if instrument.get("bands"):
        if mode == "reference":
            raise ValueError("observations.preprocess: 'reference' is the published single-band HST input; "
                             "a multi-band instrument (instrument.bands) needs 'calibrated'")
        from ..simulate.instrument import band_configs, reference_band

        bands = band_configs(instrument) or []
        multi = preprocess_fits_bands(
            frame, bands=[name for name, _ in bands], reference_band=str(reference_band(instrument)),
            ra=lens.ra_deg, dec=lens.dec_deg, pixel_scale_arcsec=float(instrument["pixel_scale"]),
            num_pix=int(instrument["num_pix"]),
            zero_points_out={name: float(cfg["magnitude_zero_point"]) for name, cfg in bands},
            zero_point_in=observations.get("zero_point"),
            background_annulus_arcsec=tuple(observations["background_annulus_arcsec"]),
        )
        paths = write_preprocessed_bands(multi, lens, outdir, record)
        return json.loads(paths["metadata"].read_text())
    grid = {"ra": lens.ra_deg, "dec": lens.dec_deg, "pixel_scale_arcsec": float(instrument["pixel_scale"]),
            "num_pix": int(instrument["num_pix"])}
    if mode == "reference":
        result = reference_cutout(frame, **grid)
    else:
        result = preprocess_fits(
            frame, **grid, zero_point_out=float(instrument["magnitude_zero_point"]),
            zero_point_in=observations.get("zero_point"),
            background_annulus_arcsec=tuple(observations["background_annulus_arcsec"]),
        )
    paths = write_preprocessed(result, lens, outdir, record)
    return json.loads(paths["metadata"].read_text())
