"""The streaming versions of the whole-dataset stages give what the whole-array computations give (issue 21
item 2); bench/memory.py shows that their memory does not grow with the dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from lensinfer.calibrate import fit_kde_calibration, run_calibration
from lensinfer.data.masks import masks_for_table
from lensinfer.data.merge import merge_dataset, write_masks
from lensinfer.data.npz import NpzWriter, load_npz_lazy
from lensinfer.data.store import ShardData, read_table, write_shard
from lensinfer.infer import normalise

COLUMNS = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub", "const"]


def test_npz_writer_matches_savez_and_maps_lazily(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.normal(size=(50, 7)).astype(np.float32)
    with NpzWriter(tmp_path / "a.npz") as npz:
        npz.add("grid", np.linspace(0, 1, 7))
        with npz.stream("curves", big.shape, np.float32) as rows:
            for i in range(0, 50, 16):
                rows.write(big[i:i + 16])
        npz.add("names", np.array(["x", "yy"]))
    np.savez(tmp_path / "b.npz", grid=np.linspace(0, 1, 7), curves=big, names=np.array(["x", "yy"]))
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    lazy = load_npz_lazy(tmp_path / "a.npz")
    assert isinstance(lazy["curves"], np.memmap) and np.array_equal(lazy["curves"], big)
    np.testing.assert_array_equal(load_npz_lazy(tmp_path / "b.npz")["curves"], big)  # np.savez files too


def test_npz_writer_leaves_nothing_on_failure_or_missing_rows(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with NpzWriter(tmp_path / "c.npz") as npz:
            with npz.stream("curves", (4, 2), np.float32) as rows:
                rows.write(np.zeros((2, 2)))
                raise RuntimeError("boom")
    with pytest.raises(ValueError, match="got 2 of its 4 rows"):
        with NpzWriter(tmp_path / "d.npz") as npz:
            with npz.stream("curves", (4, 2), np.float32) as rows:
                rows.write(np.zeros((2, 2)))
    assert not list(tmp_path.iterdir())


def _shards(tmp_path, n_shards=3, per=37, num_pix=10):
    rng = np.random.default_rng(1)
    paths, all_params, all_images = [], [], []
    for s in range(n_shards):
        params = np.column_stack([rng.uniform(0.3, 0.5, per), rng.uniform(-0.1, 0.1, (per, 2)),
                                  rng.uniform(1.1, 2.9, per), rng.integers(0, 9, per), np.full(per, 0.6)])
        params[3, 3] = np.nan  # a missing γ: statistics over finite values
        images = rng.normal(5.0, 2.0, (per, num_pix, num_pix)).astype(np.float32)
        write_shard(tmp_path / f"s{s}.zarr", ShardData(images=images, params=params, columns=COLUMNS,
                                                       image_seed=np.arange(per, dtype=np.uint64),
                                                       subhalos=np.zeros((0, 1)), subhalo_columns=["m"],
                                                       subhalo_offsets=np.zeros(per + 1, np.int64)),
                    {"dataset": "d"}, chunk_images=8)
        paths.append(tmp_path / f"s{s}.zarr")
        all_params.append(params)
        all_images.append(images)
    return paths, np.concatenate(all_params), np.concatenate(all_images)


def test_streaming_merge_and_masks_equal_the_whole_array_results(tmp_path):
    paths, params, images = _shards(tmp_path)
    merged = tmp_path / "merged"
    stats = merge_dataset("d", paths, merged, pixel_scale=0.1, radius_theta_e=1.5, block=5)
    got, columns = read_table(merged / "table.zarr")
    np.testing.assert_array_equal(got, params)
    masks = masks_for_table(params[:, 0], params[:, 1], params[:, 2], num_pix=10, pixel_scale=0.1, radius_theta_e=1.5)
    kept = images.astype(np.float64)[masks]
    assert stats["image_mean"] == pytest.approx(kept.mean(), rel=1e-12)
    assert stats["image_std"] == pytest.approx(kept.std(), rel=1e-10)
    assert stats["n_kept_pixels"] == masks.sum() and stats["n_images"] == len(params)
    gamma = params[:, 3][np.isfinite(params[:, 3])]
    assert stats["gamma_mean"] == pytest.approx(gamma.mean(), rel=1e-12)
    assert stats["gamma_std"] == pytest.approx(gamma.std(), rel=1e-10)
    assert stats["params"]["const"] == {"mean": 0.6, "std": 0.0}  # exactly: a fixed prior is refused as a target
    summary = write_masks(merged, merged / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=7)
    np.testing.assert_array_equal(zarr.open_array(str(merged / "masks.zarr"), mode="r")[...], masks)
    assert summary["mean"] == pytest.approx(masks.mean(axis=(1, 2)).mean()) and summary["min"] == masks.mean(
        axis=(1, 2)).min()
    assert json.loads((merged / "stats.json").read_text())["n_images"] == len(params)


def test_calibration_from_memory_maps_equals_the_in_memory_formula(tmp_path):
    rng = np.random.default_rng(2)
    grid = np.linspace(1.2, 2.8, 20)
    gamma = rng.choice(grid[::4], 400)
    curves = (-(grid[None, :] - gamma[:, None]) ** 2 / 0.1 + rng.normal(0, 0.3, (400, 20))).astype(np.float32)
    np.savez(tmp_path / "c.npz", grid=grid, curves=curves, gamma=gamma, n_sub=np.zeros(400))
    bw = np.array([0.05, 0.1, 0.2])
    lazy = fit_kde_calibration(grid, load_npz_lazy(tmp_path / "c.npz")["curves"], gamma, bw, max_per_bin=30)
    # the formula before streaming: s of every image, selected rows per bin, reference rows in permutation order
    s = np.exp(normalise(curves.astype(np.float64)))
    edges = np.concatenate([[grid[0] - (grid[1] - grid[0]) / 2], 0.5 * (grid[1:] + grid[:-1]),
                            [grid[-1] + (grid[1] - grid[0]) / 2]])
    which = np.clip(np.searchsorted(edges, gamma) - 1, 0, len(grid) - 1)
    calib = np.concatenate([s[np.nonzero(which == i)[0][:30], i] for i in range(len(grid))])
    ref = s[np.random.default_rng(0).permutation(400)[:30]].T
    np.testing.assert_allclose(lazy["calib_values"], calib, rtol=1e-12)
    np.testing.assert_allclose(lazy["ref_values"], ref, rtol=1e-12)
    out = run_calibration(kde_curves=tmp_path / "c.npz", coverage_curves=tmp_path / "c.npz",
                          calibrate_cfg={"bandwidths": list(bw), "set_sizes": [1, 5], "n_sets": 4, "n_nominal": 5},
                          levels=[0.68], seed=0, out_kde=tmp_path / "k.npz", out_thresholds=tmp_path / "t.json",
                          out_coverage=tmp_path / "c.csv")
    assert out["set_sizes"]["1"]["n_sets"] == 400 and np.isfinite(out["set_sizes"]["5"]["thresholds"]["0.68"])
