"""The simulation data contract: zarr shard stores and the merged manifest.

A shard is a zarr v3 group::

    shard.zarr/
      images           (N, H, W) float32 — or (N, C, H, W) for multi-band configs — chunked by blocks of whole
                       images (chunks (k, H, W) / (k, C, H, W)), e⁻/s per band
      params           (N, K) float64, one column per drawn scalar (names in attrs["columns"])
      image_seed       (N,) uint64, the seed of each image's generator (regenerates the image alone)
      subhalos         (M, S) float64, every subhalo of every image (names in attrs["subhalo_columns"])
      subhalo_offsets  (N + 1,) int64, rows of image i are subhalos[offsets[i]:offsets[i+1]]
      los, los_offsets (optional) the line-of-sight halos, stored the same way (names in attrs["los_columns"])
      attrs: dataset, shard, seed, config_hash, lensinfer_version, pixel_scale, num_pix, units,
             sigma_bkg, exposure_time, zero_point (floats; per-band lists in channel order when multi-band),
             bands + reference_band (multi-band only), noiseless: true (only when images were stored noiseless)

Multi-band shards (``instrument.bands``) differ only in the channel axis of ``images`` and in the per-band attrs
(:func:`shard_bands`); single-band shards are byte-identical to those written before multi-band support.

Shards are written to a temporary sibling and renamed into place, so a killed job never leaves a store that looks
complete. Nothing time-dependent is written: the same inputs give byte-identical stores.

**Integrity from creation to use.** Every array's chunks carry a zarr v3 ``crc32c`` checksum (codec chain
bytes → blosc → crc32c), so a damaged chunk fails on read instead of decoding to silently changed pixels; reads
through :class:`Manifest` and :class:`lensinfer.data.loader.MergedDataset` turn that failure into a
:class:`ShardIntegrityError` naming the shard. When a shard is written, ``integrity.json`` records the
:func:`directory_sha256` of everything else in the store (the *creation digest*); ``merge`` verifies each shard
against it (:func:`verify_shard`) and copies it into the manifest — it never blesses whatever happens to be on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

__all__ = [
    "ShardData",
    "write_shard",
    "read_shard_table",
    "open_images",
    "shard_bands",
    "image_channels",
    "directory_sha256",
    "ShardIntegrityError",
    "INTEGRITY_FILE",
    "recorded_digest",
    "verify_shard",
    "read_checked",
    "TableWriter",
    "Manifest",
    "write_manifest",
    "load_manifest",
    "write_table",
    "read_table",
]

_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)
#: checksum of every stored (compressed) chunk, verified by zarr on every read
_CHECKSUM = Crc32cCodec()
#: the file of a shard store holding its creation digest (not itself covered by the digest)
INTEGRITY_FILE = "integrity.json"


class ShardIntegrityError(ValueError):
    """A shard's bytes differ from what was written: a chunk fails its crc32c check or the store its creation digest."""


@dataclass
class ShardData:
    """In-memory content of one shard."""

    images: np.ndarray
    params: np.ndarray
    columns: list[str]
    image_seed: np.ndarray
    subhalos: np.ndarray
    subhalo_columns: list[str]
    subhalo_offsets: np.ndarray
    #: further ragged per-image tables, name → (rows, column names, offsets); e.g. "los" (line-of-sight halos)
    extra: dict[str, tuple[np.ndarray, list[str], np.ndarray]] = field(default_factory=dict)


def _atomic_dir(path: Path) -> Path:
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def _commit_dir(tmp: Path, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _array(group: zarr.Group, name: str, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype,
                             compressors=[_COMPRESSOR, _CHECKSUM])
    if data.size:
        arr[...] = data


def _record_digest(store: Path) -> str:
    """Write ``integrity.json`` (the creation digest of every other file of ``store``); returns the digest."""
    digest = directory_sha256(store)
    (store / INTEGRITY_FILE).write_text(json.dumps(
        {"sha256": digest, "covers": f"every file of the store except {INTEGRITY_FILE} (lensinfer directory_sha256)"},
        indent=2) + "\n")
    return digest


def write_shard(path: str | Path, data: ShardData, attrs: Mapping[str, Any], chunk_images: int = 256) -> None:
    """Write a shard store atomically (temporary directory, then rename)."""
    path = Path(path)
    n = data.images.shape[0]
    if not (data.params.shape[0] == data.image_seed.shape[0] == n == data.subhalo_offsets.shape[0] - 1):
        raise ValueError("images, params, image_seed and subhalo_offsets disagree on the number of images")
    if data.params.shape[1] != len(data.columns):
        raise ValueError("params has a different number of columns than its column names")
    tmp = _atomic_dir(path)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    _array(group, "images", data.images.astype(np.float32, copy=False), (max(1, min(chunk_images, n)),) + data.images.shape[1:])
    _array(group, "params", data.params.astype(np.float64, copy=False), (max(1, n), data.params.shape[1]))
    _array(group, "image_seed", data.image_seed.astype(np.uint64, copy=False), (max(1, n),))
    m = data.subhalos.shape[0]
    _array(group, "subhalos", data.subhalos.astype(np.float64, copy=False), (max(1, min(m, 65536)), data.subhalos.shape[1]))
    _array(group, "subhalo_offsets", data.subhalo_offsets.astype(np.int64, copy=False), (n + 1,))
    extra_columns = {}
    for name, (rows, columns, offsets) in sorted(data.extra.items()):
        _array(group, name, rows.astype(np.float64, copy=False), (max(1, min(rows.shape[0], 65536)), rows.shape[1]))
        _array(group, f"{name}_offsets", offsets.astype(np.int64, copy=False), (n + 1,))
        extra_columns[f"{name}_columns"] = list(columns)
    group.attrs.update(dict(attrs, columns=list(data.columns), subhalo_columns=list(data.subhalo_columns), n_images=n,
                            **extra_columns))
    _record_digest(tmp)
    _commit_dir(tmp, path)


def read_shard_table(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, Any]]:
    """(params, columns, image_seed, attrs) of a shard."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    return group["params"][...], list(attrs["columns"]), group["image_seed"][...], attrs


def open_images(path: str | Path) -> zarr.Array:
    """The ``images`` array of a shard, opened read-only (lazy)."""
    return zarr.open_array(str(Path(path) / "images"), mode="r")


def shard_bands(path: str | Path) -> list[str] | None:
    """Band names of a multi-band shard (channel order), or None for a single-band shard."""
    bands = zarr.open_group(str(path), mode="r").attrs.get("bands")
    return list(bands) if bands else None


def image_channels(image_shape: Sequence[int]) -> int:
    """Number of channels of a per-image shape: (H, W) → 1, (C, H, W) → C."""
    if len(image_shape) == 2:
        return 1
    if len(image_shape) == 3:
        return int(image_shape[0])
    raise ValueError(f"an image is (H, W) or (C, H, W); got shape {tuple(image_shape)}")


#: top-level files of a store that are not its content: its creation digest, and the marker Snakemake writes into
#: every directory output after the job
NOT_CONTENT = (INTEGRITY_FILE, ".snakemake_timestamp")


def directory_sha256(path: str | Path, exclude: Sequence[str] = NOT_CONTENT) -> str:
    """sha256 over the relative names and bytes of every file below ``path`` (sorted, read in 1 MiB blocks: memory
    does not grow with the store): a content checksum. Top-level files named in ``exclude`` are skipped (by default
    :data:`NOT_CONTENT`: the shard's own ``integrity.json``, which holds this digest, and Snakemake's timestamp)."""
    root = Path(path)
    digest = hashlib.sha256()
    skip = {root / name for name in exclude}
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def recorded_digest(path: str | Path) -> str:
    """The creation digest of a shard (its ``integrity.json``); a clear error when it has none."""
    f = Path(path) / INTEGRITY_FILE
    if not f.is_file():
        raise ShardIntegrityError(f"shard {path} has no creation checksum ({INTEGRITY_FILE}): it was written by an older "
                                  "lensinfer or not by write_shard; delete it and re-run simulate_shard")
    return str(json.loads(f.read_text())["sha256"])


def verify_shard(path: str | Path) -> str:
    """Re-hash a shard and compare with its creation digest; returns the digest or raises
    :class:`ShardIntegrityError` naming the shard."""
    expected = recorded_digest(path)
    got = directory_sha256(path)
    if got != expected:
        raise ShardIntegrityError(f"shard {path} differs from what was written (sha256 {got}, recorded at creation "
                                  f"{expected}): the store was damaged or modified; delete it and re-run simulate_shard")
    return expected


def read_checked(arr: zarr.Array, selection: Any, shard: str | Path, **kwargs: Any) -> Any:
    """``arr.get_basic_selection(selection, **kwargs)`` whose decoding failures (a chunk failing its crc32c check,
    a corrupt blosc frame) raise :class:`ShardIntegrityError` naming the shard."""
    try:
        return arr.get_basic_selection(selection, **kwargs)
    except (ValueError, RuntimeError) as err:
        raise ShardIntegrityError(f"shard {shard}: reading {selection} of {Path(str(arr.store_path)).name or 'an array'} "
                                  f"failed ({err}); the shard is "
                                  "damaged: delete it and re-run simulate_shard") from err


@dataclass
class Manifest:
    """The merged view of a dataset: its shards in order, their sizes and checksums."""

    dataset: str
    shards: list[dict[str, Any]]
    n_images: int
    #: (H, W), or (C, H, W) for multi-band datasets
    image_shape: tuple[int, ...]

    @property
    def offsets(self) -> np.ndarray:
        """Global index of the first image of each shard, plus the total."""
        return np.concatenate([[0], np.cumsum([s["n_images"] for s in self.shards])]).astype(np.int64)

    def shard_paths(self, base: str | Path | None = None) -> list[Path]:
        """Paths of the shards (relative paths are taken relative to ``base``)."""
        return [Path(base) / s["path"] if base is not None and not Path(s["path"]).is_absolute() else Path(s["path"])
                for s in self.shards]

    def iter_blocks(self, block: int, base: str | Path | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(global start index, images) over the whole dataset in blocks of up to ``block`` images."""
        for start, path in zip(self.offsets[:-1], self.shard_paths(base)):
            arr = open_images(path)
            for i in range(0, arr.shape[0], block):
                yield int(start + i), read_checked(arr, slice(i, i + block), path)


def write_manifest(path: str | Path, dataset: str, shard_paths: Sequence[str | Path], verify: bool = True) -> Manifest:
    """Write ``manifest.json`` over the given shards (sizes and creation digests).

    With ``verify`` every shard is re-hashed and must match the digest recorded when it was written
    (:func:`verify_shard`, :class:`ShardIntegrityError` otherwise); without, the recorded digest is copied unchecked.
    """
    shards = []
    shape: tuple[int, ...] | None = None
    for p in shard_paths:
        p = Path(p)
        arr = open_images(p)
        if shape is None:
            shape = tuple(arr.shape[1:])
        elif tuple(arr.shape[1:]) != shape:
            raise ValueError(f"shard {p} has image shape {arr.shape[1:]}, expected {shape}")
        shards.append({"path": str(p), "n_images": int(arr.shape[0]),
                       "sha256": verify_shard(p) if verify else recorded_digest(p)})
    if shape is None:
        raise ValueError(f"dataset {dataset!r} has no shards")
    manifest = Manifest(dataset=dataset, shards=shards, n_images=sum(s["n_images"] for s in shards), image_shape=shape)
    Path(path).write_text(json.dumps(
        {"dataset": dataset, "n_images": manifest.n_images, "image_shape": list(shape), "shards": shards}, indent=2) + "\n")
    return manifest


def load_manifest(path: str | Path, verify: bool = False) -> Manifest:
    """Read ``manifest.json``; with ``verify`` recompute every shard checksum and fail on a mismatch."""
    raw = json.loads(Path(path).read_text())
    manifest = Manifest(dataset=raw["dataset"], shards=raw["shards"], n_images=int(raw["n_images"]),
                        image_shape=tuple(raw["image_shape"]))
    if verify:
        for s in manifest.shards:
            got = directory_sha256(s["path"])
            if got != s["sha256"]:
                raise ValueError(f"shard {s['path']} changed since merge (sha256 {got} != {s['sha256']}); rerun merge")
    return manifest


class TableWriter:
    """A merged parameter table (zarr group with ``params`` (N, K) float64 and ``image_seed`` (N,) uint64) written
    block by block — memory holds one block, not the table — into a temporary directory renamed into place when
    the ``with`` block succeeds (removed when it fails)::

        with TableWriter(path, n, columns, attrs) as table:
            table.write(start, params_block, seed_block)
    """

    #: rows per stored chunk
    CHUNK = 4096

    def __init__(self, path: str | Path, n: int, columns: Sequence[str], attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.n = int(n)
        self.columns = list(columns)
        self._tmp = _atomic_dir(self.path)
        group = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
        rows = max(1, min(self.n, self.CHUNK))
        self._params = group.create_array("params", shape=(self.n, len(self.columns)), chunks=(rows, len(self.columns)),
                                          dtype=np.float64, compressors=[_COMPRESSOR, _CHECKSUM])
        self._seed = group.create_array("image_seed", shape=(self.n,), chunks=(rows,), dtype=np.uint64,
                                        compressors=[_COMPRESSOR, _CHECKSUM])
        group.attrs.update(dict(attrs or {}, columns=self.columns, n_images=self.n))
        self._written = 0

    def write(self, start: int, params: np.ndarray, image_seed: np.ndarray) -> None:
        """Rows ``start … start + len(params)`` (blocks are best written in order, aligned with ``CHUNK``)."""
        if params.shape[1] != len(self.columns):
            raise ValueError(f"a block of {params.shape[1]} columns for a table of {len(self.columns)}")
        stop = start + params.shape[0]
        if stop > start:
            self._params[start:stop] = params.astype(np.float64, copy=False)
            self._seed[start:stop] = image_seed.astype(np.uint64, copy=False)
        self._written += stop - start

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if self._written != self.n:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ValueError(f"{self.path}: {self._written} rows written for a table of {self.n}")
        _commit_dir(self._tmp, self.path)


def write_table(path: str | Path, params: np.ndarray, columns: Sequence[str], image_seed: np.ndarray,
                attrs: Mapping[str, Any] | None = None) -> None:
    """Write a merged parameter table (zarr group with ``params`` and ``image_seed``) atomically."""
    with TableWriter(path, params.shape[0], columns, attrs) as table:
        table.write(0, params, image_seed)


def read_table(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(params, columns) of a merged table or of a shard."""
    group = zarr.open_group(str(path), mode="r")
    return group["params"][...], list(group.attrs["columns"])
