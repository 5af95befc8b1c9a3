"""Gather shards into one dataset: manifest with checksums, merged parameter table, whitening statistics, masks.

Replaces the reference's manual concatenation steps (spec §6.3). ``stats.json`` holds the γ mean and standard
deviation and the image mean and standard deviation over the *kept* pixels (inside the masks) — the reference
used the mean of unmasked images and never computed σ (it silently defaulted to 0.3). Multi-band images
(N, C, H, W) get per-channel statistics; ``params`` holds the mean/std of every parameter column (NPE targets).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from .masks import masks_for_table
from .store import Manifest, load_manifest, read_shard_table, read_table, write_manifest, write_table

__all__ = ["MergeError", "merge_dataset", "compute_stats", "write_masks", "dataset_masks", "open_masks"]


def dataset_masks(params: np.ndarray, columns: Sequence[str], *, num_pix: int, pixel_scale: float,
                  radius_theta_e: float | None) -> np.ndarray:
    """Masks of every image of a parameter table (see :func:`lensinfer.data.masks.masks_for_table`)."""
    col = {c: i for i, c in enumerate(columns)}
    return masks_for_table(params[:, col["lens_theta_E"]], params[:, col["lens_center_x"]], params[:, col["lens_center_y"]],
                           num_pix=num_pix, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)


def _param_stats(params: np.ndarray, columns: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Mean and standard deviation of the finite values of every parameter column (targets of the NPE, §2)."""
    out: dict[str, dict[str, float | None]] = {}
    for j, c in enumerate(columns):
        v = params[:, j]
        v = v[np.isfinite(v)]
        out[c] = {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None}
    return out


class MergeError(ValueError):
    """Data that cannot be merged into a training set (non-finite images, degenerate statistics)."""


def _check_finite_block(manifest: Manifest, start: int, images: np.ndarray, image_seed: np.ndarray | None) -> None:
    """Raise :class:`MergeError` naming the dataset, shard, image index and seed of the first non-finite image."""
    bad = ~np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1)
    if not bad.any():
        return
    k = start + int(np.argmax(bad))
    s = int(np.searchsorted(manifest.offsets, k, side="right") - 1)
    seed = f", image seed {int(image_seed[k])}" if image_seed is not None else ""
    raise MergeError(f"dataset {manifest.dataset!r}: shard {manifest.shards[s]['path']} image {k - manifest.offsets[s]} "
                     f"(global index {k}{seed}) has non-finite pixels ({int(bad.sum())} such image(s) in this block); "
                     "re-simulate that shard")


def compute_stats(manifest: Manifest, params: np.ndarray, columns: Sequence[str], *, pixel_scale: float,
                  radius_theta_e: float | None, block: int = 1024, image_seed: np.ndarray | None = None) -> dict[str, Any]:
    """γ, parameter and kept-pixel image statistics of a dataset, accumulated in float64 over blocks of images.

    Images are (N, H, W) (one band) or (N, C, H, W) (multi-band; masks stay (N, H, W) and apply to every band).
    One band: ``image_mean``/``image_std`` are scalars (as before); C bands: lists of C per-channel values, and
    ``n_channels`` gives C (:func:`merge_dataset` adds the shards' ``bands`` names). ``params`` holds {column: {mean, std}} of every parameter column (finite values), the
    whitening constants of any set of NPE targets.
    A non-finite image, no kept pixel, or a non-finite or zero image σ raises :class:`MergeError` (naming the shard,
    image and ``image_seed``).
    """
    num_pix = manifest.image_shape[-1]
    multi = len(manifest.image_shape) == 3
    n_ch = manifest.image_shape[0] if multi else 1
    total = np.zeros(n_ch)
    total_sq = np.zeros(n_ch)
    count = 0
    for start, images in manifest.iter_blocks(block):
        _check_finite_block(manifest, start, images, image_seed)
        masks = dataset_masks(params[start:start + images.shape[0]], columns, num_pix=num_pix,
                              pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)
        img = images.astype(np.float64)
        if not multi:
            img = img[:, None]
        kept = img.transpose(1, 0, 2, 3)[:, masks]  # (C, kept pixels)
        total += kept.sum(axis=1)
        total_sq += np.square(kept).sum(axis=1)
        count += kept.shape[1]
    if count == 0:
        raise MergeError(f"dataset {manifest.dataset!r}: the masks keep no pixel (mask.radius_theta_E)")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise MergeError(f"dataset {manifest.dataset!r}: image statistics mean {mean.tolist()}, std {std.tolist()} "
                         "over the kept pixels are not finite and positive (constant or overflowing images?)")
    gamma = params[:, list(columns).index("gamma_pop")]
    finite = gamma[np.isfinite(gamma)]
    stats: dict[str, Any] = {
        "n_images": manifest.n_images,
        "gamma_mean": float(finite.mean()) if finite.size else None,
        "gamma_std": float(finite.std()) if finite.size else None,
        "image_mean": [float(m) for m in mean] if multi else float(mean[0]),
        "image_std": [float(s) for s in std] if multi else float(std[0]),
        "n_kept_pixels": int(count),
        "mask_radius_theta_E": radius_theta_e,
        "params": _param_stats(params, columns),
    }
    if multi:
        stats["n_channels"] = int(n_ch)
    return stats


def merge_dataset(dataset: str, shard_paths: Sequence[str | Path], out_dir: str | Path, *, pixel_scale: float,
                  radius_theta_e: float | None) -> dict[str, Any]:
    """Write ``manifest.json``, ``table.zarr`` and ``stats.json`` of a dataset into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables, seeds = [], []
    columns: list[str] | None = None
    bands = None
    for p in shard_paths:
        params, cols, seed, attrs = read_shard_table(p)
        bands = attrs.get("bands", bands)
        if attrs.get("dataset") != dataset:
            raise ValueError(f"shard {p} belongs to dataset {attrs.get('dataset')!r}, not {dataset!r}")
        if columns is None:
            columns = cols
        elif cols != columns:
            raise ValueError(f"shard {p} has different parameter columns than the first shard")
        tables.append(params)
        seeds.append(seed)
    manifest = write_manifest(out / "manifest.json", dataset, shard_paths)
    params = np.concatenate(tables)
    image_seed = np.concatenate(seeds)
    try:
        write_table(out / "table.zarr", params, columns, image_seed, {"dataset": dataset})
        stats = compute_stats(manifest, params, columns, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e,
                              image_seed=image_seed)
    except Exception:  # nothing half-merged is left behind
        (out / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(out / "table.zarr", ignore_errors=True)
        raise
    stats["dataset"] = dataset
    if bands is not None:
        stats["bands"] = list(bands)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def write_masks(merged_dir: str | Path, out_path: str | Path, *, pixel_scale: float, radius_theta_e: float | None,
                chunk_images: int = 256) -> np.ndarray:
    """Write the boolean masks (N, H, W) of a merged dataset as a zarr array; returns the kept fraction per image."""
    merged = Path(merged_dir)
    manifest = load_manifest(merged / "manifest.json")
    params, columns = read_table(merged / "table.zarr")
    num_pix = manifest.image_shape[-1]  # (H, W) or (C, H, W): masks are (N, H, W) either way
    masks = dataset_masks(params, columns, num_pix=num_pix, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)
    arr = zarr.create_array(str(out_path), shape=masks.shape, chunks=(min(chunk_images, masks.shape[0]), num_pix, num_pix),
                            dtype=bool, overwrite=True)
    arr[...] = masks
    arr.attrs.update({"radius_theta_E": radius_theta_e, "pixel_scale": pixel_scale, "convention": "lenstronomy (N-1)/2"})
    return masks.mean(axis=(1, 2))


def open_masks(path: str | Path) -> zarr.Array:
    """The masks array of a dataset, read-only."""
    return zarr.open_array(str(path), mode="r")
