"""Guards with clear errors and nothing left behind (issue 17, items 2 and 6): non-finite simulations, merges and
losses; model files that cannot run code; observations off the model's training grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lensinfer import checkpoint
from lensinfer import train as train_module
from lensinfer.checkpoint import GridMismatchError, ModelFileError
from lensinfer.data.loader import Whitening, load_whitening
from lensinfer.data.merge import MergeError, merge_dataset
from lensinfer.data.store import ShardData, write_shard
from lensinfer.infer import infer_observations
from lensinfer.train import TrainingError, load_estimator, train_flow_posterior, train_ratio_estimator

MODEL = {"depth": "small", "width": 4, "head_hidden": 8, "dropout": 0.0}
FLOW = {"type": "nsf", "transforms": 1, "hidden_features": [8], "bins": 4, "passes": 2, "context_features": 4,
        "embedding": {"depth": "small", "width": 4, "dropout": 0.0}}
TRAIN = {"lr": 3e-3, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 1, "shuffle_buffer_chunks": 2,
         "scheduler": {"factor": 0.1, "patience": 3, "threshold": 0.01, "cooldown": 2},
         "early_stopping": {"patience": 10, "min_delta": 0.001}, "num_workers": 0, "device": "cpu"}
INFERENCE = {"grid": {"low": 1.1, "high": 2.9, "n": 30}, "levels": [0.68], "combine_size": 2}


def _train_nre(out: Path, data: Path, whitening: Whitening | None = None, ckpt: Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return train_ratio_estimator(
        train_dir=data, train_masks=data / "masks.zarr", val_dir=data, val_masks=data / "masks.zarr",
        whitening=whitening or load_whitening(data / "stats.json"), model_cfg=MODEL, train_cfg=TRAIN, seed=3,
        out_model=out / "model.pt", out_history=out / "history.csv", checkpoint_dir=ckpt or out / "ckpt", threads=1)


@pytest.fixture(scope="module")
def nre_model(synthetic_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nre_guard")
    _train_nre(out, synthetic_dataset)
    return out / "model.pt"


# --- training: non-finite loss, weightless models ------------------------------------------------------------------

def test_non_finite_training_loss_stops_the_run_without_a_model(tmp_path, synthetic_dataset):
    w = load_whitening(synthetic_dataset / "stats.json")
    zero_std = Whitening(w.image_mean, 0.0, w.gamma_mean, w.gamma_std)  # constant-image stats: x' = ±inf
    with pytest.raises(TrainingError, match=r"nre training: non-finite training loss .* at epoch 0"):
        _train_nre(tmp_path, synthetic_dataset, whitening=zero_std)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "history.csv").exists()


def test_always_nan_validation_loss_writes_no_weightless_model(tmp_path, synthetic_dataset, monkeypatch):
    monkeypatch.setattr(train_module, "evaluate_loss", lambda *a, **k: float("nan"))
    with pytest.raises(TrainingError, match="non-finite validation loss"):
        _train_nre(tmp_path, synthetic_dataset)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "history.csv").exists()


def test_model_file_without_weights_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"kind": "nre", "model": None, "model_cfg": MODEL, "whitening": {}}, path)  # the old failure mode
    with pytest.raises(ModelFileError, match="holds no model weights"):
        load_estimator(path)


# --- model files that cannot run code ------------------------------------------------------------------------------

class _Payload:
    """Unpickling this object would create ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_written_model_files_load_with_weights_only(nre_model):
    blob = torch.load(nre_model, weights_only=True)
    assert blob["kind"] == "nre" and all(isinstance(v, torch.Tensor) for v in blob["model"].values())
    assert blob["grid"]["num_pix"] == 16 and blob["grid"]["n_channels"] == 1
    ckpt = torch.load(nre_model.parent / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["best"]["state"] is not None


def test_pickle_payload_model_is_refused_and_its_code_never_runs(tmp_path, nre_model):
    marker = tmp_path / "pwned"
    blob = torch.load(nre_model, weights_only=True)
    blob["model_cfg"] = dict(blob["model_cfg"], evil=_Payload(marker))
    evil = tmp_path / "model.pt"
    torch.save(blob, evil)
    with pytest.raises(ModelFileError, match=r"refused — .*weights_only=True.*could run code"):
        load_estimator(evil)
    from lensinfer.npe import load_flow

    with pytest.raises(ModelFileError, match="refused"):
        load_flow(evil)
    assert not marker.exists()
    # and writing such an object is refused too, naming the entry
    with pytest.raises(ModelFileError, match=r"model_cfg\.evil: .*_Payload is not a tensor or plain data"):
        checkpoint.save(blob, tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists() and not marker.exists()


def test_pickle_payload_checkpoint_is_refused_on_resume(tmp_path, synthetic_dataset):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"fingerprint": _Payload(marker), "epoch": 0}, ckpt / "last.pt")
    with pytest.raises(ModelFileError, match=r"last.pt: refused .* Delete .*last\.pt to train afresh"):
        _train_nre(tmp_path / "out", synthetic_dataset, ckpt=ckpt)
    assert not marker.exists() and not (tmp_path / "out" / "model.pt").exists()


# --- merge: non-finite images and degenerate statistics -------------------------------------------------------------

def _shards(root: Path, images: list[np.ndarray]) -> list[Path]:
    paths = []
    for s, img in enumerate(images):
        n = img.shape[0]
        params = np.column_stack([np.full(n, 0.6), np.zeros(n), np.zeros(n), np.linspace(1.2, 2.8, n), np.zeros(n)])
        data = ShardData(images=img.astype(np.float32), params=params,
                         columns=["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub"],
                         image_seed=np.arange(100 * s, 100 * s + n, dtype=np.uint64), subhalos=np.zeros((0, 1)),
                         subhalo_columns=["mass"], subhalo_offsets=np.zeros(n + 1, np.int64))
        paths.append(root / f"shard_{s}.zarr")
        write_shard(paths[-1], data, {"dataset": "d", "shard": s}, chunk_images=4)
    return paths


def test_merge_refuses_a_non_finite_image_naming_shard_index_and_seed(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = rng.normal(size=(8, 16, 16)), rng.normal(size=(8, 16, 16))
    bad[5, 3, 4] = np.inf
    paths = _shards(tmp_path, [good, bad])
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match=r"dataset 'd': shard .*shard_1\.zarr image 5 \(global index 13, image seed 105\)"):
        merge_dataset("d", paths, out, pixel_scale=0.1, radius_theta_e=1.5)
    assert not list(out.iterdir())  # no manifest, table or stats left behind


def test_merge_refuses_constant_images(tmp_path):
    paths = _shards(tmp_path, [np.full((8, 16, 16), 3.0)])
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match=r"std \[0\.0\] .*not finite and positive"):
        merge_dataset("d", paths, out, pixel_scale=0.1, radius_theta_e=1.5)
    assert not list(out.iterdir())


# --- simulation: non-finite rendered images --------------------------------------------------------------------------

def test_simulation_refuses_a_non_finite_image_naming_dataset_shard_index_and_seed(tmp_path, monkeypatch, root):
    from lensinfer.config import load_config
    from lensinfer.seeds import image_seeds
    from lensinfer.simulate import shard as shard_module

    config = load_config(root / "config" / "test.yaml")
    config["datasets"]["val"]["shard_size"] = 3
    calls = []

    def add_noise(rng, image, *a, **k):  # the second image of the shard comes out with a NaN pixel
        calls.append(1)
        image = np.array(image)
        if len(calls) == 2:
            image[7, 9] = np.nan
        return image

    monkeypatch.setattr(shard_module, "add_noise", add_noise)
    seed = int(image_seeds(int(config["seed"]), "val", 0, 3)[1])
    out = tmp_path / "shard_0.zarr"
    with pytest.raises(shard_module.SimulationError,
                       match=rf"datasets\.val: shard 0, image 1 \(global index 1, image seed {seed}.*1 non-finite pixel"):
        shard_module.simulate_shard(config, "val", 0, out, progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())


# --- inference: observations off the training grid ------------------------------------------------------------------

def _observations(tmp: Path, names: list[str], shape: tuple[int, ...], meta: dict, seed: int = 0) -> tuple[list, list, list]:
    rng = np.random.default_rng(seed)
    images, masks, metas = [], [], []
    for name in names:
        d = tmp / "obs" / name
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "image.npy", rng.normal(size=shape).astype(np.float32))
        np.save(d / "mask.npy", np.ones(shape[-2:], bool))
        (d / "metadata.json").write_text(json.dumps(meta))
        images.append(str(d / "image.npy"))
        masks.append(str(d / "mask.npy"))
        metas.append(str(d / "metadata.json"))
    return images, masks, metas


def _with_grid(model: Path, out: Path, **grid) -> Path:
    blob = checkpoint.load(model)
    blob["grid"] = dict(blob["grid"], **grid)
    checkpoint.save(blob, out)
    return out


def _thresholds(tmp: Path) -> Path:
    path = tmp / "thresholds.json"
    # N = 1 (per lens) and N = 2 (the two lenses combined): thresholds exist for every N the summary uses
    path.write_text(json.dumps({"set_sizes": {n: {"thresholds": {"0.68": 1.0}} for n in ("1", "2")}}))
    return path


MATCHING = {"pixel_scale_arcsec": 0.1, "num_pix": 16, "zero_point_out": 25.127}


def _infer(tmp: Path, model: Path, images, masks, metas) -> dict:
    return infer_observations(model_path=model, thresholds_path=_thresholds(tmp), kde_path=None, names=["a", "b"],
                              images=images, masks=masks, inference_cfg=INFERENCE, out_summary=tmp / "summary.json",
                              out_curves=tmp / "curves.csv", metadata=metas)


@pytest.mark.parametrize("case,shape,meta,message", [
    ("pixel_scale", (16, 16), dict(MATCHING, pixel_scale_arcsec=0.04),
     r"observation a \(.*a/metadata\.json\): pixel scale 0\.04″, but the model .* was trained at 0\.1″; preprocess"),
    ("num_pix", (20, 20), MATCHING, r"images of 20×20 pixels, but the model .* was trained on 16×16"),
    ("bands", (2, 16, 16), MATCHING, r"2-band images, but the model .* was trained on 1-band images"),
    ("zero_point", (16, 16), dict(MATCHING, zero_point_out=26.0),
     r"observation a .*: flux units at AB zero point 26\.0, but the model .* zero point 25\.127"),
])
def test_nre_inference_refuses_observations_off_the_training_grid(tmp_path, nre_model, case, shape, meta, message):
    model = _with_grid(nre_model, tmp_path / "model.pt", pixel_scale=0.1, zero_point=25.127, units="e-/s")
    images, masks, metas = _observations(tmp_path, ["a", "b"], shape, meta)
    with pytest.raises(GridMismatchError, match=message):
        _infer(tmp_path, model, images, masks, metas)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "curves.csv").exists()


def test_nre_inference_refuses_non_finite_pixels_and_accepts_the_training_grid(tmp_path, nre_model):
    model = _with_grid(nre_model, tmp_path / "model.pt", pixel_scale=0.1, zero_point=25.127, units="e-/s")
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16), MATCHING)
    x = np.load(images[1])
    x[2, 2] = np.nan
    np.save(images[1], x)
    with pytest.raises(GridMismatchError, match="observation b: 1 non-finite pixel"):
        _infer(tmp_path, model, images, masks, metas)
    assert not (tmp_path / "summary.json").exists()
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16), MATCHING, seed=1)
    summary = _infer(tmp_path, model, images, masks, metas)
    assert sorted(summary["per_lens"]) == ["a", "b"] and (tmp_path / "curves.csv").exists()


def test_reference_mode_lets_the_published_zero_point_through_and_says_so(tmp_path, nre_model):
    """Paper-faithful preprocessing feeds raw ACS e⁻/s (ZP 25.94) to a model trained at 25.127, as the published
    run did: no refusal, a warning, and the summary's ``input_notes`` name both zero points. Pixel scale is still
    enforced in that mode."""
    model = _with_grid(nre_model, tmp_path / "model.pt", pixel_scale=0.1, zero_point=25.127, units="e-/s")
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16),
                                         dict(MATCHING, zero_point_out=25.94, preprocess="reference"))
    with pytest.warns(UserWarning, match="kept as the published run fed them"):
        summary = _infer(tmp_path, model, images, masks, metas)
    assert [n.split(":")[0] for n in summary["input_notes"]] == [f"observation {k} ({m})" for k, m in zip("ab", metas)]
    assert all("zero point 25.94" in n and "trained at 25.127" in n for n in summary["input_notes"])
    assert json.loads((tmp_path / "summary.json").read_text())["input_notes"] == summary["input_notes"]
    for f in ("summary.json", "curves.csv"):
        (tmp_path / f).unlink()
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16),
                                         dict(MATCHING, pixel_scale_arcsec=0.04, preprocess="reference"), seed=2)
    with pytest.raises(GridMismatchError, match="pixel scale 0.04″"):
        _infer(tmp_path, model, images, masks, metas)
    assert not (tmp_path / "summary.json").exists()


def test_npe_inference_refuses_a_mismatched_pixel_scale(tmp_path, synthetic_dataset):
    from lensinfer.npe import infer_observations as infer_npe

    out = tmp_path / "npe"
    out.mkdir()
    data = synthetic_dataset
    train_flow_posterior(train_dir=data, train_masks=data / "masks.zarr", val_dir=data, val_masks=data / "masks.zarr",
                         whitening=data / "stats.json", flow_cfg=FLOW, train_cfg=TRAIN, seed=3,
                         out_model=out / "model.pt", out_history=out / "history.csv", checkpoint_dir=out / "ckpt",
                         threads=1)
    assert torch.load(out / "model.pt", weights_only=True)["grid"]["num_pix"] == 16
    model = _with_grid(out / "model.pt", out / "grid.pt", pixel_scale=0.1, zero_point=25.127)
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16), dict(MATCHING, pixel_scale_arcsec=0.05))
    kwargs = dict(model_path=model, thresholds_path=_thresholds(tmp_path), names=["a", "b"], images=images, masks=masks,
                  inference_cfg=INFERENCE, out_summary=tmp_path / "s.json", out_curves=tmp_path / "c.csv",
                  out_samples=tmp_path / "x.npz", n_samples=20)
    with pytest.raises(GridMismatchError, match=r"observation a .*pixel scale 0\.05″, but the model .* at 0\.1″"):
        infer_npe(**kwargs, metadata=metas)
    assert not any((tmp_path / f).exists() for f in ("s.json", "c.csv", "x.npz"))
    images, masks, metas = _observations(tmp_path, ["a", "b"], (16, 16), MATCHING)
    assert infer_npe(**dict(kwargs, images=images, masks=masks), metadata=metas)["n_lenses"] == 2
