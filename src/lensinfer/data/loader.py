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
from .store import ShardIntegrityError, load_manifest, open_images, read_checked, recorded_digest

__all__ = ["Whitening", "DihedralAugmentation", "NoiseModel", "MergedDataset", "ChunkShuffleLoader", "load_whitening", "noise_model_of"]

#: images whitened per numpy call: 16 × 100×100 float32 = 640 kB stays in L2 across the three in-place passes
_SLICE = 16


def _scalar_or_tuple(v: Any) -> float | tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else float(v)


@dataclass(frozen=True)
class Whitening:
    """Image and parameter whitening constants (from the training set's ``stats.json``, spec §2).

    Images: x' = mask·(x − μ)/σ, with scalar μ, σ for one band or per-channel tuples for (C, H, W) images.
    Parameters: θ'_p = (θ_p − mean_p)/std_p for every target column (default ``("gamma_pop",)``, the NRE target,
    whitened with ``gamma_mean``/``gamma_std``; the reference only subtracted the mean). ``target_mean`` and
    ``target_std`` hold the constants of ``targets`` (None: γ alone, from ``gamma_mean``/``gamma_std``).
    """

    image_mean: float | tuple[float, ...]
    image_std: float | tuple[float, ...]
    gamma_mean: float
    gamma_std: float
    targets: tuple[str, ...] = ("gamma_pop",)
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_mean", _scalar_or_tuple(self.image_mean))
        object.__setattr__(self, "image_std", _scalar_or_tuple(self.image_std))
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.target_mean is None:
            if self.targets != ("gamma_pop",):
                raise ValueError(f"targets {self.targets} need target_mean/target_std (use load_whitening)")
            object.__setattr__(self, "target_mean", (float(self.gamma_mean),))
            object.__setattr__(self, "target_std", (float(self.gamma_std),))
        else:
            object.__setattr__(self, "target_mean", tuple(float(v) for v in self.target_mean))
            object.__setattr__(self, "target_std", tuple(float(v) for v in self.target_std))
        if not len(self.targets) == len(self.target_mean) == len(self.target_std):
            raise ValueError("targets, target_mean and target_std differ in length")

    @property
    def n_channels(self) -> int:
        """Image channels (bands) these constants are for: 1 for scalar constants."""
        return len(self.image_mean) if isinstance(self.image_mean, tuple) else 1

    @property
    def zero_level(self) -> tuple[float, ...]:
        """Whitened value of zero flux per channel, −μ/σ (the sky level of a background-subtracted image)."""
        mean = self.image_mean if isinstance(self.image_mean, tuple) else (self.image_mean,)
        std = self.image_std if isinstance(self.image_std, tuple) else (self.image_std,)
        return tuple(-float(m) / float(s) for m, s in zip(mean, std))

    def _image_constants(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(μ, 1/σ) as float32 arrays broadcasting against a slice of ``x`` ((N, H, W) or (N, C, H, W))."""
        mu = np.asarray(self.image_mean, np.float32)
        inv = (1.0 / np.asarray(self.image_std, np.float64)).astype(np.float32)
        if mu.ndim:
            if x.ndim != 4 or x.shape[1] != mu.size:
                raise ValueError(f"{mu.size}-band whitening constants for images of shape {x.shape[1:]}")
            mu, inv = mu[:, None, None], inv[:, None, None]
        elif x.ndim == 4 and x.shape[1] != 1:
            raise ValueError(f"single-band whitening constants for {x.shape[1]}-band images")
        return mu, inv

    def images(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """mask·(x − μ)/σ as a new float32 array (``x`` is left untouched)."""
        return self.images_(np.array(x, dtype=np.float32, copy=True), mask)

    def images_(self, x: np.ndarray, mask: np.ndarray, out: np.ndarray | None = None,
                rows: np.ndarray | None = None) -> np.ndarray:
        """mask·(x − μ)/σ of float32 images ``x`` (N, H, W) or (N, C, H, W), in place (``out=None``) or into
        ``out[rows]``; ``mask`` is (N, H, W) and applies to every band.

        Works on cache-sized slices of ``_SLICE`` images (three passes while the slice sits in L2); with ``rows``, each
        whitened slice is scattered to those rows of ``out`` (the shuffle buffer) — no separate gather/scatter pass.
        """
        if x.dtype != np.float32:
            raise ValueError("Whitening.images_ needs float32 images")
        mu, inv = self._image_constants(x)
        if x.ndim == 4:
            mask = mask[:, None]
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
        """Whitened population slope (γ − γ̄)/σ_γ (the NRE parameter; any shape)."""
        return (gamma - self.gamma_mean) / self.gamma_std

    def params(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Whitened targets (…, P) → (values − mean)/std per target column."""
        mean, std = self._target_constants(values)
        return (values - mean) / std

    def unparams(self, z: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Inverse of :meth:`params`: physical target values (…, P) from whitened ones."""
        mean, std = self._target_constants(z)
        return z * std + mean

    def _target_constants(self, like: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
        if isinstance(like, torch.Tensor):
            return (torch.tensor(self.target_mean, dtype=like.dtype, device=like.device),
                    torch.tensor(self.target_std, dtype=like.dtype, device=like.device))
        return np.asarray(self.target_mean), np.asarray(self.target_std)

    def log_det(self) -> float:
        """log |∂θ'/∂θ| = −Σ log std_p: converts a density of whitened targets into one of physical targets."""
        return -float(np.sum(np.log(self.target_std)))

    def with_targets(self, stats: dict[str, Any], targets: list[str] | tuple[str, ...]) -> "Whitening":
        """The same image constants with the target constants of ``targets`` taken from ``stats`` (``stats.json``)."""
        mean, std = _target_stats(stats, targets)
        return Whitening(self.image_mean, self.image_std, self.gamma_mean, self.gamma_std, tuple(targets), mean, std)

    def to_dict(self) -> dict[str, Any]:
        """Serialisable constants; single-band γ-only whitening keeps the original four keys (stable fingerprints)."""
        out: dict[str, Any] = {
            "image_mean": list(self.image_mean) if isinstance(self.image_mean, tuple) else self.image_mean,
            "image_std": list(self.image_std) if isinstance(self.image_std, tuple) else self.image_std,
            "gamma_mean": self.gamma_mean, "gamma_std": self.gamma_std}
        if self.targets != ("gamma_pop",):
            out.update(targets=list(self.targets), target_mean=list(self.target_mean), target_std=list(self.target_std))
        return out


def _target_stats(stats: dict[str, Any], targets: list[str] | tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(means, stds) of the target columns: ``gamma_pop`` from gamma_mean/std, others from ``stats['params']``."""
    mean, std = [], []
    for t in targets:
        if t == "gamma_pop":
            m, s = stats.get("gamma_mean"), stats.get("gamma_std")
        else:
            entry = stats.get("params", {}).get(t)
            if entry is None:
                raise ValueError(f"target {t!r} has no statistics in stats.json (columns: {sorted(stats.get('params', {}))}; "
                                 "re-run merge if 'params' is missing)")
            m, s = entry["mean"], entry["std"]
        if m is None or not s:
            raise ValueError(f"target {t!r}: degenerate or missing statistics (mean {m}, std {s}); is its prior fixed?")
        mean.append(float(m))
        std.append(float(s))
    return mean, std


def load_whitening(stats_path: str | Path, targets: list[str] | tuple[str, ...] | None = None) -> Whitening:
    """Whitening constants from a ``stats.json`` written by :func:`lensinfer.data.merge.merge_dataset`.

    ``targets`` (default ``["gamma_pop"]``): the parameter columns the estimator is trained on.
    """
    s = json.loads(Path(stats_path).read_text())
    targets = tuple(targets) if targets else ("gamma_pop",)
    std = s.get("image_std")
    if not std or (isinstance(std, list) and not all(std)):
        raise ValueError(f"{stats_path}: image_std must be positive")
    if "gamma_pop" in targets and s.get("gamma_std") in (None, 0):
        raise ValueError(f"{stats_path}: image_std and gamma_std must be positive (is the γ prior degenerate?)")
    gm, gs = s.get("gamma_mean"), s.get("gamma_std")
    gm, gs = (float(gm), float(gs)) if gm is not None and gs else (0.0, 1.0)
    if targets == ("gamma_pop",):
        return Whitening(s["image_mean"], s["image_std"], gm, gs)
    mean, tstd = _target_stats(s, targets)
    return Whitening(s["image_mean"], s["image_std"], gm, gs, targets, mean, tstd)


@dataclass(frozen=True)
class NoiseModel:
    """HST-like pixel noise, σ² = σ_bkg² + |x|/t_exp per pixel (x in e⁻/s; spec §1.4, lenstronomy ``SingleBand``).

    The sum of lenstronomy's Gaussian-approximated Poisson term and the Gaussian background is drawn as one
    Gaussian of the summed variance (the same distribution as :func:`lensinfer.simulate.instrument.add_noise`).
    Multi-band images (N, C, H, W) take per-band tuples ``sigma_bkg`` and ``exposure_time`` (length C).
    """

    sigma_bkg: float | tuple[float, ...]
    exposure_time: float | tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma_bkg", _scalar_or_tuple(self.sigma_bkg))
        object.__setattr__(self, "exposure_time", _scalar_or_tuple(self.exposure_time))

    def add_(self, x: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """Add one noise realisation to the float32 array ``x`` in place (torch's RNG: fast and seedable)."""
        var2 = np.square(np.asarray(self.sigma_bkg, np.float32))
        inv_t = (1.0 / np.asarray(self.exposure_time, np.float64)).astype(np.float32)
        if var2.ndim:
            if x.ndim != 4 or x.shape[1] != var2.size:
                raise ValueError(f"{var2.size}-band noise model for images of shape {x.shape[1:]}")
            var2, inv_t = var2[:, None, None], inv_t[:, None, None]
        for i in range(0, x.shape[0], _SLICE):
            s = x[i:i + _SLICE]
            sd = np.abs(s)
            np.multiply(sd, inv_t, out=sd)
            np.add(sd, var2, out=sd)
            np.sqrt(sd, out=sd)
            sd *= torch.randn(s.shape, generator=generator, dtype=torch.float32).numpy()
            s += sd
        return x


#: parameter columns left unchanged by rotations/reflections of the image about its centre
INVARIANT_COLUMNS = frozenset({
    "gamma_pop", "n_sub", "nms_kappa", "subhalo_mass_total", "global_index", "lens_theta_E", "lens_sigma_v",
    "lens_gamma", "z_lens",
    "z_source", "n_macro", "lens_light_magnitude", "lens_light_R_sersic", "lens_light_n_sersic", "lens_light_amp",
    "source_magnitude", "source_R_sersic", "source_n_sersic", "source_amp", "multipole3_a", "multipole4_a",
    "n_los", "delta_los", "los_mass_total"})
#: (x-like, y-like) position pairs and (cos 2φ, sin 2φ) ellipticity/shear pairs of the simulator's columns
POSITION_PAIRS = (("lens_center_x", "lens_center_y"), ("source_center_x", "source_center_y"))
SPIN2_PAIRS = (("lens_e1", "lens_e2"), ("shear_gamma1", "shear_gamma2"), ("lens_light_e1", "lens_light_e2"),
               ("source_e1", "source_e2"))


class DihedralAugmentation:
    """Random symmetries of the square pixel grid (the dihedral group D4: transpose × flip-x × flip-y) applied to
    training batches, with the targets transformed alike — 8 physically equivalent images per simulation.

    Valid because the priors, the PSF (Gaussian) and the noise are symmetric and the pixel grid is centred at
    (N−1)/2 with x along columns and y along rows (:func:`lensinfer.data.masks.pixel_index_of`). On the angles:
    flip-x (x → −x) negates x positions and the sin 2φ component of every ellipticity/shear (φ → π − φ); flip-y
    negates y positions and sin 2φ (φ → −φ); transpose (x ↔ y) swaps positions and negates cos 2φ (φ → π/2 − φ).
    Targets must be invariant (:data:`INVARIANT_COLUMNS`) or come with their partner column; anything else is an
    error. Works on whitened θ' through the whitening constants (θ = unparams(θ'), transform, re-whiten).
    """

    def __init__(self, whitening: Whitening) -> None:
        cols = list(whitening.targets)
        self.whitening = whitening
        index = {c: i for i, c in enumerate(cols)}
        self.swap: list[tuple[int, int]] = []
        self.neg_x: list[int] = []  # negated by flip-x
        self.neg_y: list[int] = []  # negated by flip-y
        self.neg_t: list[int] = []  # negated by transpose
        handled: set[str] = set()
        for a, b in POSITION_PAIRS:
            if a in index or b in index:
                if not (a in index and b in index):
                    raise ValueError(f"dihedral augmentation needs both {a} and {b} among the targets")
                self.swap.append((index[a], index[b]))
                self.neg_x.append(index[a])
                self.neg_y.append(index[b])
                handled |= {a, b}
        for c1, c2 in SPIN2_PAIRS:
            for c in (c1, c2):
                if c in index:
                    handled.add(c)
            if c1 in index:
                self.neg_t.append(index[c1])
            if c2 in index:
                self.neg_x.append(index[c2])
                self.neg_y.append(index[c2])
        unknown = [c for c in cols if c not in handled and c not in INVARIANT_COLUMNS]
        if unknown:
            raise ValueError(f"dihedral augmentation: unknown behaviour of targets {unknown} under rotations")

    def __call__(self, x: torch.Tensor, theta: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One random group element per image: (x, θ') → (g·x, g·θ'); x is (B, [C,] H, W), θ' (B, P) whitened."""
        elem = torch.randint(0, 8, (x.shape[0],), generator=generator)
        x = x.clone()
        phys = self.whitening.unparams(theta.double())
        for g in range(1, 8):
            idx = torch.nonzero(elem == g).squeeze(-1)
            if idx.numel() == 0:
                continue
            img, p = x[idx], phys[idx]
            if g & 4:  # transpose first
                img = img.transpose(-1, -2)
                p[:, self.neg_t] = -p[:, self.neg_t]
                for a, b in self.swap:
                    p[:, [a, b]] = p[:, [b, a]]
            if g & 1:  # flip columns: x → −x
                img = img.flip(-1)
                p[:, self.neg_x] = -p[:, self.neg_x]
            if g & 2:  # flip rows: y → −y
                img = img.flip(-2)
                p[:, self.neg_y] = -p[:, self.neg_y]
            x[idx] = img
            phys[idx] = p
        return x, self.whitening.params(phys).to(theta.dtype)


class MergedDataset:
    """Random access to a merged dataset directory (``manifest.json``, ``table.zarr``, ``masks.zarr``)."""

    def __init__(self, merged_dir: str | Path, masks_path: str | Path) -> None:
        self.dir = Path(merged_dir)
        self.manifest = load_manifest(self.dir / "manifest.json")
        table = zarr.open_group(str(self.dir / "table.zarr"), mode="r")
        self._table, self.columns = table["params"], list(table.attrs["columns"])
        self._column_cache: dict[str, np.ndarray] = {}
        self.masks = open_masks(masks_path)
        self.offsets = self.manifest.offsets
        self._paths = self.manifest.shard_paths()
        for shard, path in zip(self.manifest.shards, self._paths):
            if shard.get("sha256") is not None and recorded_digest(path) != shard["sha256"]:
                raise ShardIntegrityError(f"shard {path} was rewritten after merge (its creation digest differs from "
                                          f"{self.dir / 'manifest.json'}); re-run merge")
        self._images = [open_images(p) for p in self._paths]
        if self.masks.shape[0] != self.manifest.n_images:
            raise ValueError(f"{masks_path} has {self.masks.shape[0]} masks for {self.manifest.n_images} images")

    def __len__(self) -> int:
        return self.manifest.n_images

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W) for single-band storage, (C, H, W) for multi-band."""
        return tuple(self.manifest.image_shape)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """(H, W): one mask per image, shared by all bands."""
        return tuple(self.manifest.image_shape[-2:])

    @property
    def n_channels(self) -> int:
        """Bands per image (1 for (N, H, W) storage)."""
        return int(self.manifest.image_shape[0]) if len(self.manifest.image_shape) == 3 else 1

    def column(self, name: str) -> np.ndarray:
        """One parameter column (N,), read from the table on first use (the whole (N, K) table is never loaded)."""
        if name not in self._column_cache:
            j, rows = self.columns.index(name), self._table.chunks[0]
            out = np.empty(self._table.shape[0], self._table.dtype)
            for i in range(0, len(out), rows):  # chunk by chunk: zarr decodes all chunks of one read at once
                out[i:i + rows] = self._table[i:i + rows, j]
            self._column_cache[name] = out
        return self._column_cache[name]

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
        read_checked(self._images[shard], slice(start, stop), self._paths[shard], out=NDBuffer.from_numpy_array(out))
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
            try:
                images[sel[order]] = self._images[s].oindex[local[order]]
            except (ValueError, RuntimeError) as err:
                raise ShardIntegrityError(f"shard {self._paths[s]}: reading images failed ({err}); the shard is "
                                          "damaged: delete it and re-run simulate_shard") from err
        return images, self.masks.oindex[np.sort(indices)][np.argsort(np.argsort(indices))]


def noise_model_of(data: MergedDataset) -> NoiseModel | None:
    """The noise to draw for a dataset: None when its shards store noisy images, a :class:`NoiseModel` when every
    shard says ``noiseless: true`` (with equal ``sigma_bkg`` and ``exposure_time``: numbers, or per-band lists for
    multi-band shards); a mix is an error."""
    attrs = data.shard_attrs()
    flags = {bool(a.get("noiseless", False)) for a in attrs}
    if flags == {False}:
        return None
    if len(flags) > 1:
        raise ValueError(f"{data.dir}: some shards are stored noiseless and some noisy; re-simulate them alike")
    models = {(_scalar_or_tuple(a["sigma_bkg"]), _scalar_or_tuple(a["exposure_time"])) for a in attrs}
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

    x is (B, H, W) (one band) or (B, C, H, W); θ is (B, P), the whitened ``whitening.targets`` (P = 1 for γ alone).

    Each epoch is a deterministic function of (seed, epoch) (and of the DataLoader worker count): DataLoader
    workers take disjoint sets of chunks. With ``noise`` every image gets a fresh noise realisation drawn from
    (seed, epoch, chunk). A pool of ``threads`` threads decodes, noises and whitens the chunks of the next
    ``prefetch`` groups while the current group is batched (0 threads: everything in the calling thread).
    """

    def __init__(self, data: MergedDataset, whitening: Whitening, batch_size: int, *, seed: int,
                 buffer_blocks: int = 8, shuffle: bool = True, drop_last: bool = True,
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
        values = np.column_stack([data.column(t) for t in whitening.targets])
        self.target = np.ascontiguousarray(whitening.params(values), dtype=np.float32)  # (N, P)
        if whitening.n_channels != data.n_channels:
            raise ValueError(f"{whitening.n_channels}-band whitening for {data.n_channels}-band images")
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
        m = np.empty((size,) + self.data.mask_shape, bool)
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
        x, theta = buf[:n], np.empty((n, self.target.shape[1]), np.float32)
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
