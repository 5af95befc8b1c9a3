"""Integrity from creation to use (issue 21 item 6): per-chunk crc32c and the creation digest of every shard.

A finished shard is damaged by flipping bytes inside a compressed image chunk (what a bad disk or a partial copy on
a cluster filesystem does): ``merge`` refuses it (creation digest), every read of the chunk refuses it (crc32c), the
training/curves loader refuses it, and the error names the shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from lensinfer.data.loader import ChunkShuffleLoader, MergedDataset, load_whitening
from lensinfer.data.merge import merge_dataset, write_masks
from lensinfer.data.store import (INTEGRITY_FILE, ShardData, ShardIntegrityError, directory_sha256, load_manifest,
                                  open_images, recorded_digest, verify_shard, write_shard)

COLUMNS = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub"]


def _write(path: Path, seed: int, n: int = 16, num_pix: int = 12) -> Path:
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(1.1, 2.9, n)
    params = np.column_stack([np.full(n, 0.5), np.zeros(n), np.zeros(n), gamma, np.zeros(n)])
    data = ShardData(images=rng.normal(size=(n, num_pix, num_pix)).astype(np.float32), params=params, columns=COLUMNS,
                     image_seed=np.arange(n, dtype=np.uint64), subhalos=np.zeros((0, 2)),
                     subhalo_columns=["mass", "x"], subhalo_offsets=np.zeros(n + 1, np.int64))
    write_shard(path, data, {"dataset": "d", "shard": seed}, chunk_images=4)
    return path


def _corrupt_chunk(shard: Path, n_bytes: int = 60) -> Path:
    """Flip ``n_bytes`` bytes in the middle of the compressed payload of the first image chunk."""
    chunk = shard / "images" / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    assert len(raw) > n_bytes + 40, "chunk too small to corrupt its payload"
    mid = len(raw) // 2 - n_bytes // 2
    for i in range(mid, mid + n_bytes):
        raw[i] ^= 0x5A
    chunk.write_bytes(bytes(raw))
    return chunk


def test_creation_digest_recorded_and_deterministic(tmp_path):
    a, b = _write(tmp_path / "a.zarr", 1), _write(tmp_path / "b.zarr", 1)
    assert recorded_digest(a) == recorded_digest(b) == verify_shard(a) == directory_sha256(a)
    assert directory_sha256(a, exclude=()) == directory_sha256(b, exclude=())  # byte-identical, integrity file too
    meta = json.loads((a / INTEGRITY_FILE).read_text())
    assert meta["sha256"] == recorded_digest(a)
    codecs = json.loads((a / "images" / "zarr.json").read_text())["codecs"]
    assert [c["name"] for c in codecs][-1] == "crc32c"


def test_corrupted_chunk_is_refused_by_reads_and_merge(tmp_path):
    shard = _write(tmp_path / "sims" / "shard_0.zarr", 0)
    good = _write(tmp_path / "sims" / "shard_1.zarr", 1)
    _corrupt_chunk(shard)
    # plain zarr already refuses the chunk (the crc32c codec), instead of returning changed pixels
    with pytest.raises(ValueError, match="checksum"):
        open_images(shard)[0:4]
    with pytest.raises(ShardIntegrityError, match="shard_0.zarr"):
        verify_shard(shard)
    with pytest.raises(ShardIntegrityError, match="shard_0.zarr.*differs from what was written"):
        merge_dataset("d", [good, shard], tmp_path / "merged", pixel_scale=0.1, radius_theta_e=1.5)
    assert not (tmp_path / "merged" / "table.zarr").exists() and not (tmp_path / "merged" / "stats.json").exists()


def test_loader_refuses_shard_damaged_after_merge(tmp_path):
    paths = [_write(tmp_path / "sims" / f"shard_{i}.zarr", i) for i in range(2)]
    merged = tmp_path / "merged"
    merge_dataset("d", paths, merged, pixel_scale=0.1, radius_theta_e=1.5)
    write_masks(merged, merged / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=4)
    manifest = json.loads((merged / "manifest.json").read_text())
    assert [s["sha256"] for s in manifest["shards"]] == [recorded_digest(p) for p in paths]
    _corrupt_chunk(paths[1])
    with pytest.raises(ValueError, match="changed since merge"):
        load_manifest(merged / "manifest.json", verify=True)
    data = MergedDataset(merged, merged / "masks.zarr")
    loader = ChunkShuffleLoader(data, load_whitening(merged / "stats.json"), 4, seed=0, shuffle=False, drop_last=False)
    with pytest.raises(ShardIntegrityError, match="shard_1.zarr"):
        for _ in loader:
            pass
    with pytest.raises(ShardIntegrityError, match="shard_1.zarr"):
        data.read(np.array([17]))
    images, _ = data.read(np.array([0, 15]))  # the undamaged shard still reads
    np.testing.assert_array_equal(images, open_images(paths[0]).oindex[[0, 15]])


def test_shard_rewritten_after_merge_and_shard_without_digest_are_refused(tmp_path):
    paths = [_write(tmp_path / "sims" / f"shard_{i}.zarr", i) for i in range(2)]
    merged = tmp_path / "merged"
    merge_dataset("d", paths, merged, pixel_scale=0.1, radius_theta_e=1.5)
    write_masks(merged, merged / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=4)
    _write(paths[0], 7)  # a different, internally consistent shard in its place
    with pytest.raises(ShardIntegrityError, match="shard_0.zarr was rewritten after merge"):
        MergedDataset(merged, merged / "masks.zarr")
    (paths[1] / INTEGRITY_FILE).unlink()
    with pytest.raises(ShardIntegrityError, match="shard_1.zarr has no creation checksum"):
        merge_dataset("d", paths, tmp_path / "again", pixel_scale=0.1, radius_theta_e=1.5)


def test_raw_zarr_write_keeps_checksums_valid_but_not_the_digest(tmp_path):
    """A legitimate-looking zarr write (valid crc32c) is still caught by the creation digest."""
    shard = _write(tmp_path / "s.zarr", 3)
    zarr.open_array(str(shard / "images"), mode="r+")[0, 0, 0] = 99.0
    assert open_images(shard)[0, 0, 0] == 99.0  # chunks are consistent …
    with pytest.raises(ShardIntegrityError, match="s.zarr differs"):
        verify_shard(shard)  # … but not what was written
