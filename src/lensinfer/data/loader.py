"""Training data from the merged zarr dataset: chunk-level shuffling, whitening, masks and optional fresh noise.

Reading random single images from chunked, compressed stores touches nearly every chunk per batch (spec/stack.md
§4: ~500 img/s). Instead, :class:`ChunkShuffleLoader` reads groups of whole chunks in a random order into a
shuffle buffer and draws batches from the buffer. A small thread pool decodes, (optionally) adds noise to and
whitens the chunks of the next group while the current one is batched (Blosc decoding and large numpy operations
release the GIL, so chunks decode in parallel and overlap with batching). Whitening follows the reference (spec §2) with the
statistics of ``stats.json``: x' = mask·(x − μ)/σ, θ' = (γ − γ̄)/σ_γ (the reference only subtracted γ̄); it runs
in place on float32 buffers in cache-sized slices.

**Fresh noise per epoch.** Noisy float32 images barely compress (1.07–1.14×, spec/stack.md §4) and a network can
memorise a fixed noise realisation. When shards store *noiseless* images (shard attrs ``noiseless: true`` plus
``sigma_bkg`` and ``exposure_time``), :class:`NoiseModel` draws new HST-like noise for every image in every epoch
— the same Poisson (Gaussian approximation) + background model as
:func:`lensinfer.simulate.instrument.add_noise` — as a deterministic function of (seed, epoch, chunk).
"""

from __future__ import annotations

import json
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import zarr
from torch.utils.data import IterableDataset, get_worker_info
from zarr.core.buffer.cpu import NDBuffer

from .merge import open_masks
from .store import load_manifest, open_images, read_table

__all__ = ["Whitening", "NoiseModel", "MergedDataset", "ChunkShuffleLoader", "load_whitening", "noise_model_of"]

#: images whitened per numpy call: 16 × 100×100 float32 = 640 kB stays in L2 across the three in-place passes
_SLICE = 16


@dataclass(frozen=True)
class Whitening:
    """Image and parameter whitening constants (from the training set's ``stats.json``)."""

    image_mean: float
    image_std: float
    gamma_mean: float
    gamma_std: float

    def images(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """mask·(x − μ)/σ as a new float32 array (``x`` is left untouched)."""
        return self.images_(np.array(x, dtype=np.float32, copy=True), mask)

    def images_(self, x: np.ndarray, mask: np.ndarray, out: np.ndarray | None = None,
                rows: np.ndarray | None = None) -> np.ndarray:
        """mask·(x − μ)/σ of float32 images ``x`` (N, H, W), in place (``out=None``) or into ``out[rows]``.

        Works on cache-sized slices of ``_SLICE`` images (three passes while the slice sits in L2); with ``rows``, each
        whitened slice is scattered to those rows of ``out`` (the shuffle buffer) — no separate gather/scatter pass.
        """
        if x.dtype != np.float32:
            raise ValueError("Whitening.images_ needs float32 images")
        mu, inv = np.float32(self.image_mean), np.float32(1.0 / self.image_std)
        tmp = np.empty((min(_SLICE, len(x)),) + x.shape[1:], np.float32) if out is not None else None
        for i in range(0, x.shape[0], _SLICE):
            src = x[i:i + _SLICE]
            s = src if tmp is None else tmp[:len(src)]
            np.subtract(src, mu, out=s)
            np.multiply(s, inv, out=s)
            np.multiply(s, mask[i:i + _SLICE], out=s)
            if out is not None:
                out[rows[i:i + _SLICE] if rows is not None else slice(i, i + len(src))] = s
        return x if out is None else out

    def theta(self, gamma: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Whitened parameter (γ − γ̄)/σ_γ."""
        return (gamma - self.gamma_mean) / self.gamma_std

    def to_dict(self) -> dict[str, float]:
        return {"image_mean": self.image_mean, "image_std": self.image_std,
                "gamma_mean": self.gamma_mean, "gamma_std": self.gamma_std}


def load_whitening(stats_path: str | Path) -> Whitening:
    """Whitening constants from a ``stats.json`` written by :func:`lensinfer.data.merge.merge_dataset`."""
    s = json.loads(Path(stats_path).read_text())
    if not s.get("image_std") or s.get("gamma_std") in (None, 0):
        raise ValueError(f"{stats_path}: image_std and gamma_std must be positive (is the γ prior degenerate?)")
    return Whitening(float(s["image_mean"]), float(s["image_std"]), float(s["gamma_mean"]), float(s["gamma_std"]))


@dataclass(frozen=True)
class NoiseModel:
    """HST-like pixel noise, σ² = σ_bkg² + |x|/t_exp per pixel (x in e⁻/s; spec §1.4, lenstronomy ``SingleBand``).

    The sum of lenstronomy's Gaussian-approximated Poisson term and the Gaussian background is drawn as one
    Gaussian of the summed variance (the same distribution as :func:`lensinfer.simulate.instrument.add_noise`).
    """

    sigma_bkg: float
    exposure_time: float

    def add_(self, x: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """Add one noise realisation to the float32 array ``x`` in place (torch's RNG: fast and seedable)."""
        var2 = np.float32(self.sigma_bkg) ** 2
        inv_t = np.float32(1.0 / self.exposure_time)
        for i in range(0, x.shape[0], _SLICE):
            s = x[i:i + _SLICE]
            sd = np.abs(s)
            np.multiply(sd, inv_t, out=sd)
            np.add(sd, var2, out=sd)
            np.sqrt(sd, out=sd)
            sd *= torch.randn(s.shape, generator=generator, dtype=torch.float32).numpy()
            s += sd
        return x


class MergedDataset:
    """Random access to a merged dataset directory (``manifest.json``, ``table.zarr``, ``masks.zarr``)."""

    def __init__(self, merged_dir: str | Path, masks_path: str | Path) -> None:
        self.dir = Path(merged_dir)
        self.manifest = load_manifest(self.dir / "manifest.json")
        self.params, self.columns = read_table(self.dir / "table.zarr")
        self.masks = open_masks(masks_path)
        self.offsets = self.manifest.offsets
        self._paths = self.manifest.shard_paths()
        self._images = [open_images(p) for p in self._paths]
        if self.masks.shape[0] != self.manifest.n_images:
            raise ValueError(f"{masks_path} has {self.masks.shape[0]} masks for {self.manifest.n_images} images")

    def __len__(self) -> int:
        return self.manifest.n_images

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.manifest.image_shape)

    def column(self, name: str) -> np.ndarray:
        return self.params[:, self.columns.index(name)]

    def shard_attrs(self) -> list[dict[str, Any]]:
        """The attributes of every shard (``sigma_bkg``, ``exposure_time``, ``noiseless``, …)."""
        return [dict(zarr.open_group(str(p), mode="r").attrs) for p in self._paths]

    def blocks(self) -> list[tuple[int, int, int]]:
        """(shard, start, stop) of every storage chunk, in order."""
        out = []
        for s, arr in enumerate(self._images):
            step = arr.chunks[0]
            out.extend((s, i, min(i + step, arr.shape[0])) for i in range(0, arr.shape[0], step))
        return out

    def read_block_into(self, out: np.ndarray, mask_out: np.ndarray, shard: int, start: int, stop: int) -> np.ndarray:
        """Decode one block straight into ``out`` / ``mask_out`` (no intermediate copy); returns its global indices."""
        g0 = int(self.offsets[shard])
        self._images[shard].get_basic_selection(slice(start, stop), out=NDBuffer.from_numpy_array(out))
        self.masks.get_basic_selection(slice(g0 + start, g0 + stop), out=NDBuffer.from_numpy_array(mask_out))
        return np.arange(g0 + start, g0 + stop)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, masks) of arbitrary global indices (sorted reads per shard)."""
        indices = np.asarray(indices)
        images = np.empty((indices.size,) + self.manifest.image_shape, dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = indices[sel] - self.offsets[s]
            order = np.argsort(local)
            images[sel[order]] = self._images[s].oindex[local[order]]
        return images, self.masks.oindex[np.sort(indices)][np.argsort(np.argsort(indices))]


def noise_model_of(data: MergedDataset) -> NoiseModel | None:
    """The noise to draw for a dataset: None when its shards store noisy images, a :class:`NoiseModel` when every
    shard says ``noiseless: true`` (with equal ``sigma_bkg`` and ``exposure_time``); a mix is an error."""
    attrs = data.shard_attrs()
    flags = {bool(a.get("noiseless", False)) for a in attrs}
    if flags == {False}:
        return None
    if len(flags) > 1:
        raise ValueError(f"{data.dir}: some shards are stored noiseless and some noisy; re-simulate them alike")
    models = {(float(a["sigma_bkg"]), float(a["exposure_time"])) for a in attrs}
    if len(models) != 1:
        raise ValueError(f"{data.dir}: noiseless shards disagree on sigma_bkg/exposure_time: {sorted(models)}")
    return NoiseModel(*models.pop())


def _reuse(retired: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """A float32 buffer of ``shape``: a retired one nothing refers to any more, else a new one.

    Each yielded batch is a view whose ``base`` is the buffer (numpy points every view at the owning array and
    ``torch.from_numpy`` keeps the view alive), so a batch still in use keeps the buffer's reference count up.
    Fresh 80 MB buffers cost a page fault per 4 kB on first write (≈ 5 µs per 100×100 image here).
    """
    for i in range(len(retired)):
        if retired[i].shape == shape and sys.getrefcount(retired[i]) == 2:  # the list and getrefcount's argument
            return retired.pop(i)
    return np.empty(shape, np.float32)


class ChunkShuffleLoader(IterableDataset):
    """Batches (x, θ) of whitened, masked images: random chunk order, then a shuffle buffer of ``buffer_blocks``.

    Each epoch is a deterministic function of (seed, epoch) (and of the DataLoader worker count): DataLoader
    workers take disjoint sets of chunks. With ``noise`` every image gets a fresh noise realisation drawn from
    (seed, epoch, chunk). A pool of ``threads`` threads decodes, noises and whitens the chunks of the next
    ``prefetch`` groups while the current group is batched (0 threads: everything in the calling thread).
    """

    def __init__(self, data: MergedDataset, whitening: Whitening, batch_size: int, *, seed: int,
                 buffer_blocks: int = 8, shuffle: bool = True, drop_last: bool = True, target: str = "gamma_pop",
                 noise: NoiseModel | None = None, threads: int = 2, prefetch: int = 1) -> None:
        self.data = data
        self.whitening = whitening
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_blocks = buffer_blocks
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.noise = noise
        self.threads = threads
        self.prefetch = prefetch
        self.target = np.asarray(whitening.theta(data.column(target)), dtype=np.float32)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _load_chunk(self, out: np.ndarray, theta_out: np.ndarray, dest: np.ndarray, block: int,
                    where: tuple[int, int, int]) -> None:
        """Decode one chunk, add noise, whiten, and scatter it to its shuffled rows ``dest`` (runs in a pool thread)."""
        size = where[2] - where[1]
        x = np.empty((size,) + self.data.image_shape, np.float32)
        m = np.empty((size,) + self.data.image_shape, bool)
        idx = self.data.read_block_into(x, m, *where)
        if self.noise is not None:
            state = np.random.SeedSequence([self.seed, self.epoch, block]).generate_state(2, np.uint32)
            self.noise.add_(x, torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1))
        self.whitening.images_(x, m, out=out, rows=dest)
        theta_out[dest] = self.target[idx]

    def _submit(self, pool: ThreadPoolExecutor | None, ids: np.ndarray, blocks: list[tuple[int, int, int]],
                rng: np.random.Generator, retired: list[np.ndarray], rows: int
                ) -> tuple[np.ndarray, np.ndarray, list[Future]]:
        """Start loading one group of chunks into a shuffled buffer; returns (images, θ, futures).

        The group's permutation is drawn here, in group order, so the result does not depend on thread timing.
        Each chunk lands directly on its shuffled rows: batches are then contiguous slices (no gather copy).
        ``images`` is a view of a ``rows``-image buffer, taken from ``retired`` when one is free (:func:`_reuse`).
        """
        sizes = [blocks[b][2] - blocks[b][1] for b in ids]
        n = sum(sizes)
        dest = rng.permutation(n) if self.shuffle else np.arange(n)
        buf = _reuse(retired, (rows,) + self.data.image_shape)
        x, theta = buf[:n], np.empty(n, np.float32)
        futures: list[Future] = []
        pos = 0
        for b, size in zip(ids, sizes):
            args = (x, theta, dest[pos:pos + size], int(b), blocks[b])
            if pool is None:
                self._load_chunk(*args)
            else:
                futures.append(pool.submit(self._load_chunk, *args))
            pos += size
        return x, theta, futures

    def _groups(self, order: np.ndarray, blocks: list[tuple[int, int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(shuffled whitened images, θ) of each group of ``buffer_blocks`` chunks, in ``order``, prefetched."""
        rng = np.random.default_rng([self.seed, self.epoch])
        starts = range(0, len(order), self.buffer_blocks)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ChunkShuffleLoader") if self.threads > 0 else None
        pending: deque = deque()
        retired: list[np.ndarray] = []  # buffers of consumed groups, reused once no batch refers to them any more
        rows = self.buffer_blocks * max(b[2] - b[1] for b in blocks)  # one buffer size for every group: reusable
        try:
            for k in range(len(starts)):
                while len(pending) <= self.prefetch and k + len(pending) < len(starts):
                    j = starts[k + len(pending)]
                    pending.append(self._submit(pool, order[j:j + self.buffer_blocks], blocks, rng, retired,
                                                rows))
                x, theta, futures = pending.popleft()
                for f in futures:
                    f.result()
                yield x, theta
                retired = retired[-2:] + [x.base]
                del x, theta
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        blocks = self.data.blocks()
        order = (np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(blocks)) if self.shuffle
                 else np.arange(len(blocks)))
        info = get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        bs = self.batch_size
        carry: tuple[np.ndarray, np.ndarray] | None = None
        for x, theta in self._groups(order, blocks):
            start = 0
            if carry is not None:  # complete the batch begun in the previous group
                start = min(bs - len(carry[0]), len(x))
                carry = (np.concatenate([carry[0], x[:start]]), np.concatenate([carry[1], theta[:start]]))
                if len(carry[0]) < bs:
                    continue
                yield torch.from_numpy(carry[0]), torch.from_numpy(carry[1])
                carry = None
            n_full = start + (len(x) - start) // bs * bs
            for j in range(start, n_full, bs):
                yield torch.from_numpy(x[j:j + bs]), torch.from_numpy(theta[j:j + bs])
            if n_full < len(x):
                carry = (x[n_full:], theta[n_full:])
        if carry is not None and not self.drop_last:
            yield torch.from_numpy(np.ascontiguousarray(carry[0])), torch.from_numpy(np.ascontiguousarray(carry[1]))
