"""Model and checkpoint files that cannot run code, and the image grid a model was trained on.

**Safe files.** ``torch.load(..., weights_only=False)`` unpickles arbitrary objects, so opening a ``model.pt``
someone shared runs whatever code its pickle holds (an object's ``__reduce__`` is called during unpickling).
Every model and training checkpoint lensinfer writes holds tensors and plain, JSON-like metadata only (dict with
string keys, list, tuple, str, int, float, bool, None), which PyTorch's restricted unpickler loads with
``weights_only=True``; :func:`save` checks this before writing (a numpy scalar or custom object is refused, so a
file that could not be read back is never written) and writes atomically. :func:`load` reads with
``weights_only=True`` only: a file needing anything else is refused with :class:`ModelFileError` before any of
its code can run.

**Training grid.** A model is only meaningful for images on the grid, bands and flux units it was trained on.
:func:`training_grid` records them from the training shards (``num_pix``, ``n_channels``, ``bands``,
``pixel_scale``, ``zero_point``, ``units``; the whitening constants are stored beside them), and
:func:`check_observations` refuses observations whose array shape or preprocessing record (``metadata.json``
of :mod:`lensinfer.observe.preprocess`) disagrees, naming the lens, the file and the config key to change.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ModelFileError", "GridMismatchError", "check_plain", "save", "load", "load_model_file",
           "training_grid", "check_observations"]

#: metadata types a model file may hold besides tensors (what ``weights_only=True`` reconstructs without code)
PLAIN = (str, int, float, bool, type(None))


class ModelFileError(ValueError):
    """A model or checkpoint file that lensinfer refuses to read (or to write)."""


class GridMismatchError(ValueError):
    """An observation that is not on the image grid, bands or flux units the model was trained on."""


def check_plain(obj: Any, where: str = "") -> None:
    """Raise :class:`ModelFileError` unless ``obj`` is tensors and plain JSON-like data (naming the offending key)."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ModelFileError(f"model file entry {where or '<root>'}: key {k!r} is not a string")
            check_plain(v, f"{where}.{k}" if where else str(k))
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise ModelFileError(f"model file entry {where or '<root>'}: {type(obj).__module__}.{type(obj).__qualname__} "
                         "is not a tensor or plain data (str, int, float, bool, None, list, dict); it could not be "
                         "loaded with weights_only=True")


def save(obj: Mapping[str, Any], path: str | Path) -> None:
    """Write ``obj`` (tensors + plain metadata, :func:`check_plain`) atomically with ``torch.save``."""
    check_plain(obj)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(obj), tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a model or checkpoint file with ``torch.load(weights_only=True)``; anything else is refused.

    Raises :class:`ModelFileError` when the file holds objects other than tensors and plain data (its pickle
    would run code: it is not unpickled) or is not a mapping.
    """
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, AttributeError, TypeError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: refused — not a lensinfer model file of tensors and plain metadata (it cannot be read with "
            f"torch.load(weights_only=True); unpickling it could run code it carries). Only open model files from "
            f"sources you trust, and retrain or re-export them with lensinfer. ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(blob, dict):
        raise ModelFileError(f"{path}: refused — a model file holds a mapping, not {type(blob).__name__}")
    return blob


def load_model_file(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """A trained model's file (:func:`load`), checked to hold weights (``model``: a mapping of tensors)."""
    blob = load(path, map_location)
    weights = blob.get("model")
    if not isinstance(weights, Mapping) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelFileError(f"{path}: refused — it holds no model weights (entry 'model' is "
                             f"{type(weights).__name__}); was the training run interrupted or failed?")
    return blob


def _plain_number(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain_number(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def training_grid(shard_attrs: Sequence[Mapping[str, Any]], image_shape: Sequence[int]) -> dict[str, Any]:
    """The image grid of a training set: num_pix, n_channels, bands, pixel_scale, zero_point, units.

    ``image_shape`` is the stored (H, W) or (C, H, W); values the shards do not record are None (not checked)."""
    attrs = dict(shard_attrs[0]) if shard_attrs else {}
    n_ch = int(image_shape[0]) if len(image_shape) == 3 else 1
    bands = attrs.get("bands")
    return {
        "num_pix": int(image_shape[-1]),
        "n_channels": n_ch,
        "bands": [str(b) for b in bands] if bands else None,
        "pixel_scale": None if attrs.get("pixel_scale") is None else float(attrs["pixel_scale"]),
        "zero_point": _plain_number(attrs.get("zero_point")),
        "units": attrs.get("units"),
    }


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-9)


def check_observations(model_path: str | Path, grid: Mapping[str, Any] | None, n_channels: int,
                       names: Sequence[str], images: np.ndarray,
                       metadata: Sequence[str | Path] | None = None) -> list[str]:
    """Refuse observations not on the model's training grid (:class:`GridMismatchError`, naming lens and file).

    Returns the notes on what was let through: a zero point that differs from the training one is refused, except
    for frames preprocessed in ``reference`` mode (the published run's raw e⁻/s, see docs/paper_fidelity.md),
    where it is warned about and listed.

    ``images``: the stacked observations (N, [C,] H, W); ``n_channels``: the channels of the model's whitening;
    ``metadata``: the ``metadata.json`` of each observation (pixel scale, bands, zero point), optional.
    Also refuses non-finite pixels. Models written before the grid was recorded (``grid`` None) are checked
    against their whitening's channel count and the array shape only."""
    images = np.asarray(images)
    fix = ("preprocess the observations onto the training grid (config instrument.pixel_scale, instrument.num_pix, "
           "instrument.bands, instrument.magnitude_zero_point) or train a model on theirs")
    per_image = images.shape[1:]
    channels = per_image[0] if len(per_image) == 3 else 1
    for i, name in enumerate(names):
        bad = ~np.isfinite(images[i])
        if bad.any():
            raise GridMismatchError(f"observation {name}: {int(bad.sum())} non-finite pixel(s) in the preprocessed "
                                    "image; check its FITS file and the preprocessing log")
    if channels != n_channels:
        raise GridMismatchError(f"observations {list(names)}: {channels}-band images, but the model {model_path} was "
                                f"trained on {n_channels}-band images; {fix}")
    notes: list[str] = []
    if grid is None:
        return notes
    if per_image[-1] != grid["num_pix"] or per_image[-2] != grid["num_pix"]:
        raise GridMismatchError(f"observations {list(names)}: images of {per_image[-2]}×{per_image[-1]} pixels, but the "
                                f"model {model_path} was trained on {grid['num_pix']}×{grid['num_pix']}; {fix}")
    for name, path in zip(names, metadata or []):
        meta = json.loads(Path(path).read_text())
        where = f"observation {name} ({path})"
        scale = meta.get("pixel_scale_arcsec")
        if grid.get("pixel_scale") is not None and scale is not None and not _close(scale, grid["pixel_scale"]):
            raise GridMismatchError(f"{where}: pixel scale {scale}″, but the model {model_path} was trained at "
                                    f"{grid['pixel_scale']}″; {fix}")
        bands = meta.get("bands")
        if grid.get("bands") is not None and bands is not None and [str(b) for b in bands] != grid["bands"]:
            raise GridMismatchError(f"{where}: bands {bands}, but the model {model_path} was trained on bands "
                                    f"{grid['bands']} (in this order); {fix}")
        zp_model = grid.get("zero_point")
        zp_obs = meta.get("zero_point_out")
        if bands is not None and isinstance(meta.get("per_band"), Mapping):  # multi-band: one zero point per band
            zp_obs = [meta["per_band"][b].get("zero_point_out") for b in bands]
            zp_obs = None if any(z is None for z in zp_obs) else zp_obs
        if zp_model is not None and zp_obs is not None:
            a, b = np.atleast_1d(np.asarray(zp_obs, float)), np.atleast_1d(np.asarray(zp_model, float))
            same = a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6)
            if not same and meta.get("preprocess") == "reference":
                # paper-faithful mode feeds the frames as the published run did: raw e⁻/s at the frame's own zero
                # point (ACS/WFC F814W ≈ 25.94) into a network trained at 25.127 — the reference's known mixed
                # convention (docs/paper_fidelity.md). Allowed, but said: the summary records both zero points.
                note = (f"{where}: raw e⁻/s at AB zero point {zp_obs}, the model {model_path} was trained at "
                        f"{zp_model}; kept as the published run fed them (observations.preprocess: reference; "
                        "'calibrated' converts the flux)")
                warnings.warn(note, stacklevel=2)
                notes.append(note)
            elif not same:
                raise GridMismatchError(f"{where}: flux units at AB zero point {zp_obs}, but the model {model_path} "
                                        f"was trained on images at zero point {zp_model} (its whitening assumes "
                                        f"them); {fix}")
    return notes
