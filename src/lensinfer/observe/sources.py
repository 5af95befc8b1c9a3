"""Where each observation comes from: file layout, per-lens rule parameters and provenance records.

The three ``observations.source`` values have disjoint raw-frame paths, so no rule can stand in for another
(issue 15: with one shared path a ``ruleorder`` had the mock simulation silently replace the MAST download):

* ``mock``  — ``results/observations/mock/{lens}/science.fits`` + ``truth.json`` (rule ``observe_mock``);
* ``mast``  — ``results/observations/mast/{lens}/science.fits`` + ``manifest.json`` (rule ``fetch_hst``);
* ``local`` — ``{observations.local_dir}/{file}`` (no rule: the user's file).

The per-lens parameters hold only what determines that lens's data, so adding a lens or editing an unrelated
setting (e.g. ``instrument.exposure_time``) neither re-downloads nor re-preprocesses the others (issue 21, item 5).
:func:`observation_record` is the provenance written into every ``metadata.json`` and collected into the inference
``summary.json`` by :func:`summary_observations`.

Light on purpose (no astropy): the workflow imports it while building a DAG of thousands of jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .lenses import REFERENCE_NUM_PIX, REFERENCE_PIXEL_SCALE_ARCSEC, lens_specs_from_config

__all__ = [
    "SOURCES",
    "PREPROCESS_MODES",
    "MOCK_DIR",
    "MAST_DIR",
    "lens_entry",
    "frame_path",
    "observation_inputs",
    "fetch_params",
    "preprocess_params",
    "file_sha256",
    "observation_record",
    "summary_observations",
    "record_in_summary",
]

SOURCES = ("mock", "local", "mast")
PREPROCESS_MODES = ("reference", "calibrated")
MOCK_DIR = "results/observations/mock"
MAST_DIR = "results/observations/mast"


def lens_entry(config: Mapping[str, Any], lens: str) -> dict[str, Any]:
    """The ``observations.lenses`` entry named ``lens`` as a mapping (a bare name becomes ``{"name": lens}``).

    Raises:
        KeyError: no entry has that name.
    """
    for entry in config["observations"].get("lenses") or []:
        mapping = {"name": entry} if isinstance(entry, str) else dict(entry)
        if mapping["name"] == lens:
            return mapping
    raise KeyError(f"observations.lenses: no lens named {lens!r}")


def frame_path(config: Mapping[str, Any], lens: str) -> str:
    """The raw frame of ``lens`` under the configured source (relative to the working directory)."""
    source = config["observations"]["source"]
    if source == "mock":
        return f"{MOCK_DIR}/{lens}/science.fits"
    if source == "mast":
        return f"{MAST_DIR}/{lens}/science.fits"
    if source == "local":
        return str(Path(config["observations"]["local_dir"]) / lens_entry(config, lens)["file"])
    raise ValueError(f"observations.source: unknown source {source!r}; one of {SOURCES}")


def observation_inputs(config: Mapping[str, Any], lens: str) -> dict[str, str]:
    """Every file ``preprocess`` reads for ``lens``: the frame, plus the mock's truth (its mask radius) or the
    download manifest (the MAST product and checksum recorded as provenance)."""
    frame = frame_path(config, lens)
    source = config["observations"]["source"]
    extra = {"mock": {"truth": f"{MOCK_DIR}/{lens}/truth.json"},
             "mast": {"manifest": f"{MAST_DIR}/{lens}/manifest.json"}}
    return {"frame": frame, **extra.get(source, {})}


def _resolved(entry: Mapping[str, Any]) -> Any:
    """The :class:`~lensinfer.observe.lenses.LensSpec` of one config entry (its mask geometry is not used here)."""
    fields = {k: v for k, v in entry.items() if k != "file"}
    return lens_specs_from_config([fields], pixel_scale_arcsec=REFERENCE_PIXEL_SCALE_ARCSEC,
                                  num_pix=REFERENCE_NUM_PIX)[0]


def fetch_params(config: Mapping[str, Any], lens: str) -> dict[str, Any]:
    """What a MAST download of ``lens`` depends on: its position and the product request (method, instrument,
    filter, cutout size) — not the retry count, not the other lenses, not the simulation settings."""
    spec = _resolved(lens_entry(config, lens))
    mast = config["observations"]["mast"]
    request: dict[str, Any] = {
        "lens": {"name": lens, "ra_deg": spec.ra_deg, "dec_deg": spec.dec_deg},
        "method": mast["method"],
        "instrument": mast["instrument"],
        "filter": mast["filter"],
    }
    if mast["method"] == "hapcut":
        request["size_arcsec"] = mast["size_arcsec"]
    return request


def _grid(instrument: Mapping[str, Any]) -> dict[str, Any]:
    """The instrument settings preprocessing uses: the output grid and the zero point(s) — not exposure time, sky,
    noise or PSF, which only the simulations (and so the mock frames, an input of preprocess) depend on."""
    grid = {k: instrument[k] for k in ("pixel_scale", "num_pix", "magnitude_zero_point") if k in instrument}
    if instrument.get("bands"):
        grid["bands"] = [{k: b[k] for k in ("name", "magnitude_zero_point") if k in b} for b in instrument["bands"]]
        if "reference_band" in instrument:
            grid["reference_band"] = instrument["reference_band"]
    return grid


def preprocess_params(config: Mapping[str, Any], lens: str) -> dict[str, Any]:
    """What preprocessing ``lens`` depends on besides its input files: the ``observations`` settings of this
    lens only (source, preprocess mode, its own ``lenses`` entry, the zero point and, for ``calibrated``, the
    background annulus), the output grid and the simulations' mask rule. The result is what
    :func:`lensinfer.observe.pipeline.preprocess_observation` takes as ``observations``/``instrument``/``mask``."""
    obs = config["observations"]
    mode = obs.get("preprocess", "calibrated")
    own: dict[str, Any] = {"source": obs["source"], "preprocess": mode}
    if obs["source"] != "mock":
        own["lenses"] = [lens_entry(config, lens)]
    if obs.get("zero_point") is not None and mode == "calibrated":
        own["zero_point"] = obs["zero_point"]
    if mode == "calibrated":
        own["background_annulus_arcsec"] = list(obs["background_annulus_arcsec"])
    return {
        "observations": own,
        "instrument": _grid(config["instrument"]),
        "mask": {"radius_theta_E": config["mask"].get("radius_theta_E")},
    }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observation_record(source: str, frame: str | os.PathLike[str], *, manifest: str | os.PathLike[str] | None = None,
                       truth: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Provenance of one raw frame: the source, the file and its sha256, and

    * ``mast``: the product (HAPCut layer or DRC/DRZ file name), the MAST service and data URI, and the manifest's
      checksum — which must equal the frame's (a frame edited after its download is refused);
    * ``mock``: the image seed and subhalo population of the simulated frame (from ``truth.json``).

    Raises:
        ValueError: a MAST frame whose sha256 differs from its manifest's, or a source without its record.
    """
    if source not in SOURCES:
        raise ValueError(f"observations.source: unknown source {source!r}; one of {SOURCES}")
    record: dict[str, Any] = {"source": source, "file": str(frame), "sha256": file_sha256(frame)}
    if source == "mast":
        if manifest is None:
            raise ValueError(f"{frame}: a MAST frame needs its download manifest")
        entry = json.loads(Path(manifest).read_text(encoding="utf-8"))["file"]
        if entry["sha256"] != record["sha256"]:
            raise ValueError(f"{frame}: sha256 {record['sha256']} differs from the download manifest's "
                             f"{entry['sha256']} ({manifest}); the file changed after it was fetched — delete it to "
                             "fetch it again")
        origin = dict(entry.get("source") or {})
        record["product"] = origin.get("member") or origin.get("product")
        record["mast"] = origin
    elif source == "mock":
        if truth is None:
            raise ValueError(f"{frame}: a mock frame needs its truth.json")
        blob = json.loads(Path(truth).read_text(encoding="utf-8"))
        record["image_seed"] = blob.get("image_seed")
        record["population"] = blob.get("population")
    return record


def summary_observations(names: Sequence[str], metadata_paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The ``observations`` block of an inference ``summary.json``: the source and preprocessing of the run and,
    per lens, the provenance recorded in its ``metadata.json`` (source, file, sha256, MAST product)."""
    per_lens: dict[str, Any] = {}
    for name, path in zip(names, metadata_paths, strict=True):
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
        per_lens[name] = {**meta.get("observation", {}), "preprocess": meta.get("preprocess")}
    sources = sorted({str(v.get("source")) for v in per_lens.values()})
    modes = sorted({str(v.get("preprocess")) for v in per_lens.values()})
    return {
        "source": sources[0] if len(sources) == 1 else sources,
        "preprocess": modes[0] if len(modes) == 1 else modes,
        "per_lens": per_lens,
    }


def record_in_summary(summary_path: str | os.PathLike[str], names: Sequence[str],
                      metadata_paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Add :func:`summary_observations` to an inference ``summary.json`` as its ``observations`` key (rewritten
    atomically) and return the updated summary."""
    path = Path(summary_path)
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["observations"] = summary_observations(names, metadata_paths)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return summary
