"""Training data from the merged zarr dataset: chunk-level shuffling, whitening and masks.

Reading random single images from chunked, compressed stores touches nearly every chunk per batch (spec/stack.md
§4: ~500 img/s). Instead, blocks of whole chunks are read in a random order into a shuffle buffer and batches are
drawn from the buffer (12–23 k img/s). Whitening follows the reference (spec §2) with the statistics of
``stats.json``: x' = mask·(x − μ)/σ over kept pixels, θ' = (γ − γ̄)/σ_γ (the reference only subtracted γ̄).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .merge import open_masks
from .store import load_manifest, open_images, read_table

__all__ = ["Whitening", "MergedDataset", "ChunkShuffleLoader", "load_whitening"]


@dataclass(frozen=True)
class Whitening:
    """Image and parameter whitening constants (from the training set's ``stats.json``)."""

    image_mean: float
    image_std: float
    gamma_mean: float
    gamma_std: float

    def images(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """mask·(x − μ)/σ as float32."""
        return (((x - self.image_mean) / self.image_std) * mask).astype(np.float32)

    def theta(self, gamma: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
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


class MergedDataset:
    """Random access to a merged dataset directory (``manifest.json``, ``table.zarr``, ``masks.zarr``)."""

    def __init__(self, merged_dir: str | Path, masks_path: str | Path) -> None:
        self.dir = Path(merged_dir)
        self.manifest = load_manifest(self.dir / "manifest.json")
        self.params, self.columns = read_table(self.dir / "table.zarr")
        self.masks = open_masks(masks_path)
        self.offsets = self.manifest.offsets
        self._images = [open_images(p) for p in self.manifest.shard_paths()]
        if self.masks.shape[0] != self.manifest.n_images:
            raise ValueError(f"{masks_path} has {self.masks.shape[0]} masks for {self.manifest.n_images} images")

    def __len__(self) -> int:
        return self.manifest.n_images

    def column(self, name: str) -> np.ndarray:
        return self.params[:, self.columns.index(name)]

    def blocks(self) -> list[tuple[int, int, int]]:
        """(shard, start, stop) of every storage chunk, in order."""
        out = []
        for s, arr in enumerate(self._images):
            step = arr.chunks[0]
            out.extend((s, i, min(i + step, arr.shape[0])) for i in range(0, arr.shape[0], step))
        return out

    def read_block(self, shard: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, masks, global indices) of one block."""
        g0 = int(self.offsets[shard])
        return (self._images[shard][start:stop], self.masks[g0 + start:g0 + stop],
                np.arange(g0 + start, g0 + stop))

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


class ChunkShuffleLoader(IterableDataset):
    """Batches (x, θ) of whitened, masked images: random chunk order, then a shuffle buffer of ``buffer_blocks``.

    Each epoch is a deterministic function of (seed, epoch); DataLoader workers take disjoint sets of chunks.
    """

    def __init__(self, data: MergedDataset, whitening: Whitening, batch_size: int, *, seed: int,
                 buffer_blocks: int = 8, shuffle: bool = True, drop_last: bool = True, target: str = "gamma_pop") -> None:
        self.data = data
        self.whitening = whitening
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_blocks = buffer_blocks
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.target = data.column(target)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = self.data.blocks()
        order = rng.permutation(len(blocks)) if self.shuffle else np.arange(len(blocks))
        info = get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        pending_x: list[np.ndarray] = []
        pending_t: list[np.ndarray] = []
        for i in range(0, len(order), self.buffer_blocks):
            xs, ts = list(pending_x), list(pending_t)
            for b in order[i:i + self.buffer_blocks]:
                images, masks, idx = self.data.read_block(*blocks[b])
                xs.append(self.whitening.images(images, masks))
                ts.append(self.target[idx])
            x = np.concatenate(xs)
            t = np.concatenate(ts)
            perm = rng.permutation(len(x)) if self.shuffle else np.arange(len(x))
            n_full = len(x) // self.batch_size * self.batch_size
            for j in range(0, n_full, self.batch_size):
                sel = perm[j:j + self.batch_size]
                yield torch.from_numpy(x[sel]), torch.from_numpy(self.whitening.theta(t[sel]).astype(np.float32))
            pending_x, pending_t = [x[perm[n_full:]]], [t[perm[n_full:]]]
        rest = sum(len(p) for p in pending_x)
        if rest and not self.drop_last:
            yield (torch.from_numpy(np.concatenate(pending_x)),
                   torch.from_numpy(self.whitening.theta(np.concatenate(pending_t)).astype(np.float32)))
