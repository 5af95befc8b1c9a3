#!/usr/bin/env python3
"""Training-loader throughput: chunk-shuffling loader vs the standard PyTorch DataLoader and naive random-index reads.

Builds a synthetic merged dataset through the real store API (``lensinfer.data.store.write_shard``,
``lensinfer.data.merge.merge_dataset`` / ``write_masks``): 20 000 float32 100×100 images (noisy rings whose
amplitude carries γ, masks from 1.5 θE circles), in shards of 5 000 images stored in chunks of 256 images (the
pipeline's ``storage.chunk_images``). Then measures, on the same data and with the same whitening and masking:

* ``images_per_s``: :class:`lensinfer.data.loader.ChunkShuffleLoader` — random chunk order, a shuffle buffer of
  ``--buffer-chunks`` chunks, float32 whitening in cache-sized slices scattered straight into the shuffled buffer,
  ``--threads`` decode threads preparing the next buffer while the current one is batched; full epochs (every
  image delivered once), batches of ``--batch-size``, median of ``--epochs``. ``cpu_images_per_s`` divides by the
  process's CPU time instead (all threads): the throughput per core, independent of other load on the machine.
* ``dataloader_images_per_s``: the baseline a user writes first (issue 19) — a map-style
  ``torch.utils.data.Dataset`` whose ``__getitem__`` reads one image and its mask from the zarr store (arrays opened
  once per worker) and whitens it, fed to ``DataLoader(batch_size, shuffle=True, num_workers=--dataloader-workers
  (2))`` with the default collate; the same full epochs, the same count, median. ``speedup_vs_dataloader`` =
  ``images_per_s`` / this.
* ``naive_images_per_s``: a map-style sampler's access pattern — each batch is ``--batch-size`` uniformly random
  indices, read with ``MergedDataset.read`` (sorted orthogonal indexing per shard) and whitened; ``--naive-batches``
  batches per repeat, ``--epochs`` repeats, median.
* ``noise_images_per_s``: the loader with fresh noise per epoch (``NoiseModel``) on the same data, i.e. the cost of
  storing images noiseless and drawing noise on the fly.
* ``bytes_per_image``: stored bytes of images + masks on disk per image (Blosc-lz4, noisy float32 barely compresses).

The last line of the output is one JSON object. ``--quick`` uses 2 048 images (for the smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lensinfer.data.loader import ChunkShuffleLoader, MergedDataset, NoiseModel, load_whitening
from lensinfer.data.merge import merge_dataset, write_masks
from lensinfer.data.store import ShardData, write_shard

COLUMNS = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub"]
PIXEL_SCALE = 0.04
SIGMA_BKG = 0.0041  # e⁻/s per pixel at 0.04"/pix and 2200 s (spec §7 check 6)
EXPOSURE = 2200.0


def build_dataset(root: Path, n: int, num_pix: int, shard_size: int, chunk: int, seed: int = 0) -> Path:
    """Write ``n`` synthetic noisy lens-like images as shards, merge them and write their masks; returns the merged dir."""
    rng = np.random.default_rng(seed)
    coords = (np.arange(num_pix) - (num_pix - 1) / 2) * PIXEL_SCALE
    xx, yy = np.meshgrid(coords, coords)
    paths = []
    for s, start in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - start)
        gamma = rng.uniform(1.1, 2.9, m)
        theta_e = rng.uniform(0.9, 1.3, m)
        cx, cy = rng.uniform(-0.2, 0.2, (2, m))
        images = np.empty((m, num_pix, num_pix), np.float32)
        for i in range(m):
            r = np.hypot(xx - cx[i], yy - cy[i])
            clean = 0.5 * gamma[i] * np.exp(-0.5 * ((r - theta_e[i]) / 0.1) ** 2) + np.exp(-r / 0.5)
            images[i] = clean + rng.standard_normal(clean.shape) * np.sqrt(SIGMA_BKG**2 + clean / EXPOSURE)
        params = np.column_stack([theta_e, cx, cy, gamma, np.zeros(m)])
        data = ShardData(images=images, params=params, columns=COLUMNS,
                         image_seed=rng.integers(0, 2**63, m, dtype=np.uint64), subhalos=np.zeros((0, 1)),
                         subhalo_columns=["mass"], subhalo_offsets=np.zeros(m + 1, np.int64))
        path = root / "sims" / f"shard_{s}.zarr"
        write_shard(path, data, {"dataset": "bench", "shard": s, "sigma_bkg": SIGMA_BKG, "exposure_time": EXPOSURE},
                    chunk_images=chunk)
        paths.append(path)
    merged = root / "merged"
    merge_dataset("bench", paths, merged, pixel_scale=PIXEL_SCALE, radius_theta_e=1.5)
    write_masks(merged, merged / "masks.zarr", pixel_scale=PIXEL_SCALE, radius_theta_e=1.5, chunk_images=chunk)
    return merged


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_loader(loader: ChunkShuffleLoader, epochs: int) -> tuple[float, float, int]:
    """(median images/s over ``epochs`` epochs, median images per CPU second of the process — all threads —,
    images/epoch)."""
    rates, cpu_rates, count = [], [], 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        count = 0
        for x, theta in loader:
            count += x.shape[0]
        rates.append(count / (time.perf_counter() - t0))
        cpu_rates.append(count / (time.process_time() - c0))
    return float(np.median(rates)), float(np.median(cpu_rates)), count


class ZarrImageDataset(torch.utils.data.Dataset):
    """The map-style dataset a user writes over the store: one image + mask per ``__getitem__`` from the shards'
    zarr arrays (opened lazily, once per DataLoader worker), whitened like the training loader's output."""

    def __init__(self, merged_dir: Path, masks_path: Path, whitening) -> None:
        from lensinfer.data.store import load_manifest

        manifest = load_manifest(merged_dir / "manifest.json")
        self.paths = [str(p) for p in manifest.shard_paths()]
        self.offsets = np.asarray(manifest.offsets)
        self.masks_path = str(masks_path)
        self.gamma = MergedDataset(merged_dir, masks_path).column("gamma_pop").astype(np.float32)
        self.whitening = whitening
        self._images = self._masks = None

    def __len__(self) -> int:
        return len(self.gamma)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import zarr

        if self._images is None:  # per worker: zarr handles are opened in the process that reads
            self._images = [zarr.open_array(f"{p}/images", mode="r") for p in self.paths]
            self._masks = zarr.open_array(self.masks_path, mode="r")
        shard = int(np.searchsorted(self.offsets, i, side="right")) - 1
        image = self._images[shard][i - int(self.offsets[shard])]
        mask = self._masks[i]
        x = self.whitening.images(image[None], mask[None])[0]
        return torch.from_numpy(x), torch.tensor(self.whitening.theta(self.gamma[i]), dtype=torch.float32)


def time_dataloader(dataset: ZarrImageDataset, batch_size: int, workers: int, epochs: int) -> tuple[float, int]:
    """(median images/s over ``epochs`` full epochs of ``DataLoader(shuffle=True, num_workers=workers)``, images)."""
    rates, count = [], 0
    for epoch in range(epochs):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(epoch))
        t0, count = time.perf_counter(), 0
        for x, theta in loader:  # worker start-up is part of what a user pays every epoch (non-persistent workers)
            count += x.shape[0]
        rates.append(count / (time.perf_counter() - t0))
    return float(np.median(rates)), count


def time_naive(data: MergedDataset, whitening, batch_size: int, n_batches: int, seed: int = 0,
               repeats: int = 1) -> float:
    """Median images/s of ``repeats`` runs of ``n_batches`` random-index batches (``MergedDataset.read``) with the
    same whitening and masking."""
    rng = np.random.default_rng(seed)
    target = data.column("gamma_pop")
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_batches):
            idx = rng.choice(len(data), batch_size, replace=False)
            images, masks = data.read(idx)
            x = torch.from_numpy(whitening.images(images, masks))
            theta = torch.from_numpy(np.asarray(whitening.theta(target[idx]), dtype=np.float32))
            assert x.shape[0] == theta.shape[0]
        rates.append(n_batches * batch_size / (time.perf_counter() - t0))
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 048 images, one epoch each (smoke test)")
    ap.add_argument("--n-images", type=int, default=20_000)
    ap.add_argument("--num-pix", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--buffer-chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="loader decode threads")
    ap.add_argument("--epochs", type=int, default=3, help="repeats (epochs) of every method, median reported")
    ap.add_argument("--dataloader-workers", type=int, default=2, help="num_workers of the DataLoader baseline")
    ap.add_argument("--naive-batches", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None, help="keep/reuse the synthetic dataset here")
    args = ap.parse_args()
    if args.quick:
        args.n_images, args.epochs, args.naive_batches = 2048, 1, 3
    torch.set_num_threads(1)

    tmp = None
    root = args.workdir
    if root is None:
        tmp = tempfile.mkdtemp(prefix="bench_loader_")
        root = Path(tmp)
    try:
        merged = root / "merged"
        if not (merged / "masks.zarr").exists():
            t0 = time.perf_counter()
            build_dataset(root, args.n_images, args.num_pix, shard_size=5000, chunk=256)
            print(f"built {args.n_images} images in {time.perf_counter() - t0:.1f} s under {root}")
        data = MergedDataset(merged, merged / "masks.zarr")
        whitening = load_whitening(merged / "stats.json")
        stored = _dir_bytes(root / "sims") - sum(_dir_bytes(p) for p in (root / "sims").glob("*/params")) \
            + _dir_bytes(merged / "masks.zarr")
        bytes_per_image = stored / len(data)

        loader = ChunkShuffleLoader(data, whitening, args.batch_size, seed=0, buffer_blocks=args.buffer_chunks,
                                    threads=args.threads)
        ips, cpu_ips, count = time_loader(loader, args.epochs)
        print(f"chunk-shuffle loader: {ips:,.0f} images/s, {cpu_ips:,.0f} images per CPU second ({count} images "
              f"per epoch, batch {args.batch_size}, buffer {args.buffer_chunks} chunks, {args.threads} decode threads)")
        noisy = ChunkShuffleLoader(data, whitening, args.batch_size, seed=0, buffer_blocks=args.buffer_chunks,
                                   threads=args.threads, noise=NoiseModel(sigma_bkg=SIGMA_BKG, exposure_time=EXPOSURE))
        nips, _, _ = time_loader(noisy, args.epochs)
        print(f"with fresh noise per epoch: {nips:,.0f} images/s")
        naive = time_naive(data, whitening, args.batch_size, args.naive_batches, repeats=args.epochs)
        print(f"naive random-index reads: {naive:,.0f} images/s ({args.naive_batches} batches of {args.batch_size})")
        dl, dl_count = time_dataloader(ZarrImageDataset(merged, merged / "masks.zarr", whitening), args.batch_size,
                                       args.dataloader_workers, args.epochs)
        print(f"standard DataLoader (map-style zarr Dataset, shuffle=True, num_workers={args.dataloader_workers}): "
              f"{dl:,.0f} images/s ({dl_count} images per epoch); the loader is {ips / dl:.1f}× faster")
        print(f"stored bytes per image (images + masks): {bytes_per_image:,.0f} (raw float32: {4 * args.num_pix**2})")
        print(json.dumps({
            "images_per_s": round(ips, 1), "naive_images_per_s": round(naive, 1),
            "bytes_per_image": round(bytes_per_image, 1), "noise_images_per_s": round(nips, 1),
            "cpu_images_per_s": round(cpu_ips, 1), "speedup": round(ips / naive, 1), "threads": args.threads,
            "dataloader_images_per_s": round(dl, 1), "speedup_vs_dataloader": round(ips / dl, 2),
            "dataloader_workers": args.dataloader_workers, "repeats": args.epochs, "statistic": "median",
            "n_images": len(data), "num_pix": args.num_pix,
            "batch_size": args.batch_size, "buffer_chunks": args.buffer_chunks, "chunk_images": 256,
            "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2), "machine": platform.machine(),
        }))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
