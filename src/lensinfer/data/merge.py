"""Gather shards into one dataset: manifest with checksums, merged parameter table, whitening statistics, masks.

Replaces the reference's manual concatenation steps (spec §6.3). ``stats.json`` holds the γ mean and standard
deviation and the image mean and standard deviation over the *kept* pixels (inside the masks) — the reference
used the mean of unmasked images and never computed σ (it silently defaulted to 0.3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from .masks import masks_for_table
from .store import Manifest, load_manifest, read_shard_table, read_table, write_manifest, write_table

__all__ = ["merge_dataset", "compute_stats", "write_masks", "dataset_masks", "open_masks"]


def dataset_masks(params: np.ndarray, columns: Sequence[str], *, num_pix: int, pixel_scale: float,
                  radius_theta_e: float) -> np.ndarray:
    """Masks of every image of a parameter table (see :func:`lensinfer.data.masks.masks_for_table`)."""
    col = {c: i for i, c in enumerate(columns)}
    return masks_for_table(params[:, col["lens_theta_E"]], params[:, col["lens_center_x"]], params[:, col["lens_center_y"]],
                           num_pix=num_pix, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)


def compute_stats(manifest: Manifest, params: np.ndarray, columns: Sequence[str], *, pixel_scale: float,
                  radius_theta_e: float, block: int = 1024) -> dict[str, Any]:
    """γ and kept-pixel image statistics of a dataset, accumulated in float64 over blocks of images."""
    num_pix = manifest.image_shape[0]
    total = total_sq = 0.0
    count = 0
    for start, images in manifest.iter_blocks(block):
        masks = dataset_masks(params[start:start + images.shape[0]], columns, num_pix=num_pix,
                              pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)
        kept = images.astype(np.float64)[masks]
        total += kept.sum()
        total_sq += np.square(kept).sum()
        count += kept.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean**2, 0.0)))
    gamma = params[:, list(columns).index("gamma_pop")]
    finite = gamma[np.isfinite(gamma)]
    return {
        "n_images": manifest.n_images,
        "gamma_mean": float(finite.mean()) if finite.size else None,
        "gamma_std": float(finite.std()) if finite.size else None,
        "image_mean": float(mean),
        "image_std": std,
        "n_kept_pixels": int(count),
        "mask_radius_theta_E": radius_theta_e,
    }


def merge_dataset(dataset: str, shard_paths: Sequence[str | Path], out_dir: str | Path, *, pixel_scale: float,
                  radius_theta_e: float) -> dict[str, Any]:
    """Write ``manifest.json``, ``table.zarr`` and ``stats.json`` of a dataset into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables, seeds = [], []
    columns: list[str] | None = None
    for p in shard_paths:
        params, cols, seed, attrs = read_shard_table(p)
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
    write_table(out / "table.zarr", params, columns, np.concatenate(seeds), {"dataset": dataset})
    stats = compute_stats(manifest, params, columns, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)
    stats["dataset"] = dataset
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def write_masks(merged_dir: str | Path, out_path: str | Path, *, pixel_scale: float, radius_theta_e: float,
                chunk_images: int = 256) -> np.ndarray:
    """Write the boolean masks (N, H, W) of a merged dataset as a zarr array; returns the kept fraction per image."""
    merged = Path(merged_dir)
    manifest = load_manifest(merged / "manifest.json")
    params, columns = read_table(merged / "table.zarr")
    num_pix = manifest.image_shape[0]
    masks = dataset_masks(params, columns, num_pix=num_pix, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)
    arr = zarr.create_array(str(out_path), shape=masks.shape, chunks=(min(chunk_images, masks.shape[0]), num_pix, num_pix),
                            dtype=bool, overwrite=True)
    arr[...] = masks
    arr.attrs.update({"radius_theta_E": radius_theta_e, "pixel_scale": pixel_scale, "convention": "lenstronomy (N-1)/2"})
    return masks.mean(axis=(1, 2))


def open_masks(path: str | Path) -> zarr.Array:
    """The masks array of a dataset, read-only."""
    return zarr.open_array(str(path), mode="r")
