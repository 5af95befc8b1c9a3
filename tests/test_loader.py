"""Chunk-shuffling loader: coverage, determinism independent of threads, whitening, fresh noise, workers."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from lensinfer.data.loader import (ChunkShuffleLoader, MergedDataset, NoiseModel, Whitening, load_whitening,
                                   noise_model_of)
from lensinfer.data.merge import merge_dataset, write_masks
from lensinfer.data.store import ShardData, write_shard


@pytest.fixture(scope="module")
def data(synthetic_dataset: Path) -> tuple[MergedDataset, Whitening]:
    ds = MergedDataset(synthetic_dataset, synthetic_dataset / "masks.zarr")
    return ds, load_whitening(synthetic_dataset / "stats.json")


def _epoch(loader: ChunkShuffleLoader) -> tuple[np.ndarray, np.ndarray]:
    xs, ts = zip(*loader)
    theta = torch.cat(ts).numpy()
    assert theta.ndim == 2 and theta.shape[1] == 1  # θ is (B, P); P = 1 for γ alone
    return torch.cat(xs).numpy(), theta[:, 0]


@pytest.mark.parametrize("batch_size,buffer_blocks", [(16, 2), (7, 3), (40, 1)])
def test_every_image_once_per_epoch_whitened_and_masked(data, batch_size, buffer_blocks):
    ds, w = data
    loader = ChunkShuffleLoader(ds, w, batch_size, seed=1, buffer_blocks=buffer_blocks, drop_last=False)
    x, theta = _epoch(loader)
    assert len(x) == len(ds)
    images, masks = ds.read(np.arange(len(ds)))
    expected = ((images.astype(np.float64) - w.image_mean) / w.image_std * masks).astype(np.float32)
    # match loader rows to dataset rows through θ (continuous, hence unique) and compare pixel by pixel
    truth = np.asarray(w.theta(ds.column("gamma_pop")), dtype=np.float32)
    order = np.argsort(truth)
    np.testing.assert_array_equal(np.sort(theta), truth[order])
    np.testing.assert_allclose(x[np.argsort(theta)], expected[order], rtol=1e-5, atol=1e-5)
    assert not np.array_equal(theta, truth)  # shuffled
    loader.drop_last = True
    assert all(len(b) == batch_size for b, _ in loader)


def test_epochs_are_deterministic_and_independent_of_threads(data):
    ds, w = data
    a = ChunkShuffleLoader(ds, w, 16, seed=5, buffer_blocks=2, threads=0)
    b = ChunkShuffleLoader(ds, w, 16, seed=5, buffer_blocks=2, threads=3, prefetch=2)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        xa, ta = _epoch(a)
        xb, tb = _epoch(b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    a.set_epoch(0)
    assert not np.array_equal(_epoch(a)[1], ta)  # another epoch, another order


def test_abandoned_iteration_stops_its_threads(data):
    ds, w = data
    loader = ChunkShuffleLoader(ds, w, 8, seed=0, buffer_blocks=1, threads=2, prefetch=2)
    it = iter(loader)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ChunkShuffleLoader")]


def test_dataloader_workers_split_chunks(data):
    ds, w = data
    loader = ChunkShuffleLoader(ds, w, 8, seed=0, buffer_blocks=2, drop_last=False, threads=1)
    dl = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=2)
    theta = torch.cat([t for _, t in dl]).numpy().ravel()
    np.testing.assert_array_equal(np.sort(theta), np.sort(np.asarray(w.theta(ds.column("gamma_pop")), np.float32)))


def _noiseless_dataset(root: Path, attrs: dict, n: int = 48, num_pix: int = 12) -> Path:
    """Two shards of smooth (noiseless) rings with the given shard attrs, merged, with masks."""
    yy, xx = np.mgrid[:num_pix, :num_pix] - (num_pix - 1) / 2
    ring = np.exp(-((np.hypot(xx, yy) - 3) ** 2) / 2.0)
    gamma = np.random.default_rng(0).uniform(1.1, 2.9, n)
    columns = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub"]
    paths = []
    for s in range(2):
        g = gamma[s * n // 2:(s + 1) * n // 2]
        m = len(g)
        data = ShardData(images=(20 * g[:, None, None] * ring).astype(np.float32),
                         params=np.column_stack([np.full(m, 0.4), np.zeros(m), np.zeros(m), g, np.zeros(m)]),
                         columns=columns, image_seed=np.arange(m, dtype=np.uint64), subhalos=np.zeros((0, 1)),
                         subhalo_columns=["mass"], subhalo_offsets=np.zeros(m + 1, np.int64))
        paths.append(root / f"shard_{s}.zarr")
        write_shard(paths[-1], data, dict(attrs, dataset="clean", shard=s), chunk_images=8)
    merge_dataset("clean", paths, root / "merged", pixel_scale=0.1, radius_theta_e=1.5)
    write_masks(root / "merged", root / "merged" / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=8)
    return root / "merged"


def test_noise_only_for_noiseless_shards(data, tmp_path):
    assert noise_model_of(data[0]) is None  # noisy storage: nothing to add
    mixed = _noiseless_dataset(tmp_path, {"noiseless": True, "sigma_bkg": 0.5, "exposure_time": 100.0})
    zarr.open_group(str(tmp_path / "shard_1.zarr"), mode="r+").attrs.update(noiseless=False)
    with pytest.raises(ValueError, match="noiseless and some noisy"):
        noise_model_of(MergedDataset(mixed, mixed / "masks.zarr"))


def test_fresh_noise_per_epoch(tmp_path):
    merged = _noiseless_dataset(tmp_path, {"noiseless": True, "sigma_bkg": 0.5, "exposure_time": 100.0})
    ds = MergedDataset(merged, merged / "masks.zarr")
    w = Whitening(0.0, 1.0, 2.0, 0.5)  # identity on images: the noise is visible as is
    noise = noise_model_of(ds)
    assert noise == NoiseModel(0.5, 100.0)
    clean = ChunkShuffleLoader(ds, w, 48, seed=0, shuffle=False)
    noisy = ChunkShuffleLoader(ds, w, 48, seed=0, shuffle=False, noise=noise)
    x0 = _epoch(clean)[0]
    e0 = _epoch(noisy)[0] - x0
    np.testing.assert_array_equal(_epoch(noisy)[0] - x0, e0)  # same (seed, epoch): same noise
    noisy.set_epoch(1)
    e1 = _epoch(noisy)[0] - x0
    assert not np.allclose(e0, e1)  # a new realisation every epoch
    masks = ds.read(np.arange(len(ds)))[1]
    raw = ds.read(np.arange(len(ds)))[0]
    sigma = np.sqrt(0.25 + np.abs(raw) / 100.0)
    z = (e1 / sigma)[masks]
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    assert np.all(e1[~masks] == 0)  # noise is added before masking
