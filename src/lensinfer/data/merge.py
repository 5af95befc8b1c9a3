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
from .store import (Manifest, TableWriter, load_manifest, open_images, read_checked, read_shard_table,
                    write_manifest)

__all__ = ["MergeError", "merge_dataset", "compute_stats", "write_masks", "dataset_masks", "open_masks"]


def dataset_masks(params: np.ndarray, columns: Sequence[str], *, num_pix: int, pixel_scale: float,
                  radius_theta_e: float | None) -> np.ndarray:
    """Masks of every image of a parameter table (see :func:`lensinfer.data.masks.masks_for_table`)."""
    col = {c: i for i, c in enumerate(columns)}
    return masks_for_table(params[:, col["lens_theta_E"]], params[:, col["lens_center_x"]], params[:, col["lens_center_y"]],
                           num_pix=num_pix, pixel_scale=pixel_scale, radius_theta_e=radius_theta_e)


class MergeError(ValueError):
    """Data that cannot be merged into a training set (non-finite images, degenerate statistics)."""


def _check_finite(images: np.ndarray, manifest: Manifest, global_first: int, seeds: np.ndarray | None) -> None:
    """Raise :class:`MergeError` naming the dataset, shard, image index (in its shard and global) and seed of the
    first non-finite image of a block whose first image has index ``global_first`` in the dataset."""
    bad = ~np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1)
    if not bad.any():
        return
    k = int(np.argmax(bad))
    g = global_first + k
    s = int(np.searchsorted(manifest.offsets, g, side="right") - 1)
    seed = f", image seed {int(seeds[k])}" if seeds is not None else ""
    raise MergeError(f"dataset {manifest.dataset!r}: shard {manifest.shards[s]['path']} image {g - manifest.offsets[s]} "
                     f"(global index {g}{seed}) has non-finite pixels ({int(bad.sum())} such image(s) in this block); "
                     "re-simulate that shard")


class _ShiftedMoments:
    """Mean and standard deviation of the finite values of each column, accumulated over blocks in float64.

    Sums of (x − K) and (x − K)² with K the column's first finite value (the shifted-data algorithm: stable when K
    is near the mean, and exactly zero spread for a constant column, which the whitening refuses).
    """

    def __init__(self, n_columns: int) -> None:
        self.shift = np.full(n_columns, np.nan)
        self.s1 = np.zeros(n_columns)
        self.s2 = np.zeros(n_columns)
        self.count = np.zeros(n_columns, dtype=np.int64)

    def add(self, block: np.ndarray) -> None:
        """Add rows (n, n_columns)."""
        block = np.asarray(block, np.float64)
        finite = np.isfinite(block)
        unset = np.isnan(self.shift) & finite.any(axis=0)
        if unset.any():
            first = np.argmax(finite, axis=0)
            self.shift[unset] = block[first[unset], np.nonzero(unset)[0]]
        d = np.where(finite, block - np.where(np.isnan(self.shift), 0.0, self.shift), 0.0)
        self.s1 += d.sum(axis=0)
        self.s2 += np.square(d).sum(axis=0)
        self.count += finite.sum(axis=0)

    def result(self, j: int) -> tuple[float | None, float | None]:
        """(mean, std) of column j (None, None without finite values)."""
        n = int(self.count[j])
        if n == 0:
            return None, None
        m = self.s1[j] / n
        return float(self.shift[j] + m), float(np.sqrt(max(self.s2[j] / n - m * m, 0.0)))


class _StatsAccumulator:
    """The whitening statistics of :func:`compute_stats`, accumulated block by block (memory: one block)."""

    def __init__(self, columns: Sequence[str], image_shape: tuple[int, ...], *, pixel_scale: float,
                 radius_theta_e: float | None) -> None:
        self.columns = list(columns)
        self.multi = len(image_shape) == 3
        self.n_ch = image_shape[0] if self.multi else 1
        self.num_pix = image_shape[-1]
        self.pixel_scale = pixel_scale
        self.radius_theta_e = radius_theta_e
        self.total = np.zeros(self.n_ch)
        self.total_sq = np.zeros(self.n_ch)
        self.count = 0
        self.n_images = 0
        self.params = _ShiftedMoments(len(self.columns))

    def add_params(self, params: np.ndarray) -> None:
        self.params.add(params)

    def add_images(self, params: np.ndarray, images: np.ndarray) -> None:
        """Kept-pixel sums of a block of images with their parameter rows (for the masks)."""
        masks = dataset_masks(params, self.columns, num_pix=self.num_pix, pixel_scale=self.pixel_scale,
                              radius_theta_e=self.radius_theta_e)
        img = images.astype(np.float64)
        if not self.multi:
            img = img[:, None]
        kept = img.transpose(1, 0, 2, 3)[:, masks]  # (C, kept pixels)
        self.total += kept.sum(axis=1)
        self.total_sq += np.square(kept).sum(axis=1)
        self.count += kept.shape[1]
        self.n_images += images.shape[0]

    def result(self, dataset: str = "") -> dict[str, Any]:
        if self.count == 0:
            raise MergeError(f"dataset {dataset!r}: the masks keep no pixel (mask.radius_theta_E)")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise MergeError(f"dataset {dataset!r}: image statistics mean {mean.tolist()}, std {std.tolist()} over the "
                             "kept pixels are not finite and positive (constant or overflowing images?)")
        g_mean, g_std = self.params.result(self.columns.index("gamma_pop"))
        stats: dict[str, Any] = {
            "n_images": self.n_images,
            "gamma_mean": g_mean,
            "gamma_std": g_std,
            "image_mean": [float(m) for m in mean] if self.multi else float(mean[0]),
            "image_std": [float(s) for s in std] if self.multi else float(std[0]),
            "n_kept_pixels": int(self.count),
            "mask_radius_theta_E": self.radius_theta_e,
            "params": {c: dict(zip(("mean", "std"), self.params.result(j))) for j, c in enumerate(self.columns)},
        }
        if self.multi:
            stats["n_channels"] = int(self.n_ch)
        return stats


def compute_stats(manifest: Manifest, params: Any, columns: Sequence[str], *, pixel_scale: float,
                  radius_theta_e: float | None, block: int = 1024) -> dict[str, Any]:
    """γ, parameter and kept-pixel image statistics of a dataset, accumulated in float64 over blocks of images.

    Images are (N, H, W) (one band) or (N, C, H, W) (multi-band; masks stay (N, H, W) and apply to every band).
    One band: ``image_mean``/``image_std`` are scalars (as before); C bands: lists of C per-channel values, and
    ``n_channels`` gives C (:func:`merge_dataset` adds the shards' ``bands`` names). ``params`` holds {column: {mean, std}} of every parameter column (finite values), the
    whitening constants of any set of NPE targets. ``params`` may be an array or a lazy zarr array: it is read one
    block at a time, so memory does not grow with the dataset.
    """
    acc = _StatsAccumulator(columns, tuple(manifest.image_shape), pixel_scale=pixel_scale,
                            radius_theta_e=radius_theta_e)
    for start, images in manifest.iter_blocks(block):
        _check_finite(images, manifest, int(start), None)
        rows = np.asarray(params[start:start + images.shape[0]])
        acc.add_params(rows)
        acc.add_images(rows, images)
    return acc.result(manifest.dataset)


def merge_dataset(dataset: str, shard_paths: Sequence[str | Path], out_dir: str | Path, *, pixel_scale: float,
                  radius_theta_e: float | None, block: int = 256) -> dict[str, Any]:
    """Write ``manifest.json``, ``table.zarr`` and ``stats.json`` of a dataset into ``out_dir``.

    Every shard is first verified against the digest recorded when it was written
    (:func:`lensinfer.data.store.verify_shard`). Then one streaming pass over the shards appends each shard's
    parameter rows to the table and adds its rows and images (``block`` at a time) to the statistics: memory holds
    one shard's parameter table and one block of images, whatever the number of shards.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns: list[str] | None = None
    bands = None
    for p in shard_paths:  # attributes only: the cheap consistency checks before any hashing
        attrs = dict(zarr.open_group(str(p), mode="r").attrs)
        bands = attrs.get("bands", bands)
        if attrs.get("dataset") != dataset:
            raise ValueError(f"shard {p} belongs to dataset {attrs.get('dataset')!r}, not {dataset!r}")
        if columns is None:
            columns = list(attrs["columns"])
        elif list(attrs["columns"]) != columns:
            raise ValueError(f"shard {p} has different parameter columns than the first shard")
    manifest = write_manifest(out / "manifest.json", dataset, shard_paths)
    acc = _StatsAccumulator(columns, tuple(manifest.image_shape), pixel_scale=pixel_scale,
                            radius_theta_e=radius_theta_e)
    try:
        with TableWriter(out / "table.zarr", manifest.n_images, columns, {"dataset": dataset}) as table:
            for start, path in zip(manifest.offsets[:-1], manifest.shard_paths()):
                params, _, seed, _ = read_shard_table(path)
                table.write(int(start), params, seed)
                acc.add_params(params)
                images = open_images(path)
                for i in range(0, images.shape[0], block):
                    chunk = read_checked(images, slice(i, i + block), path)
                    _check_finite(chunk, manifest, int(start) + i, seed[i:i + block])
                    acc.add_images(params[i:i + block], chunk)
        stats = acc.result(dataset)
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
                chunk_images: int = 256) -> dict[str, float]:
    """Write the boolean masks (N, H, W) of a merged dataset as a zarr array, ``chunk_images`` masks at a time
    (memory holds one chunk of masks and of the parameter table, whatever N); returns the mean and minimum kept
    pixel fraction per image."""
    merged = Path(merged_dir)
    manifest = load_manifest(merged / "manifest.json")
    table = zarr.open_group(str(merged / "table.zarr"), mode="r")
    params, columns = table["params"], list(table.attrs["columns"])
    n, num_pix = manifest.n_images, manifest.image_shape[-1]  # (H, W) or (C, H, W): masks are (N, H, W) either way
    chunk = max(1, min(chunk_images, n))
    arr = zarr.create_array(str(out_path), shape=(n, num_pix, num_pix), chunks=(chunk, num_pix, num_pix),
                            dtype=bool, overwrite=True)
    kept_sum, kept_min = 0.0, np.inf
    for start in range(0, n, chunk):
        masks = dataset_masks(params[start:start + chunk], columns, num_pix=num_pix, pixel_scale=pixel_scale,
                              radius_theta_e=radius_theta_e)
        arr[start:start + masks.shape[0]] = masks
        kept = masks.mean(axis=(1, 2))
        kept_sum += float(kept.sum())
        kept_min = min(kept_min, float(kept.min()))
    arr.attrs.update({"radius_theta_E": radius_theta_e, "pixel_scale": pixel_scale, "convention": "lenstronomy (N-1)/2"})
    return {"mean": kept_sum / n if n else float("nan"), "min": kept_min}


def open_masks(path: str | Path) -> zarr.Array:
    """The masks array of a dataset, read-only."""
    return zarr.open_array(str(path), mode="r")
