"""Ratio estimator: architecture, embed-once inference, loss, deterministic training and resume after a kill."""

import csv

import numpy as np
import pytest
import torch

from lensinfer.data.loader import ChunkShuffleLoader, MergedDataset, load_whitening
from lensinfer.infer import grid_centres, log_ratio_curves
from lensinfer.models.ratio import RatioEstimator, ratio_loss
from lensinfer import train as train_module
from lensinfer.train import cosine_factor, load_model, train_ratio_estimator

MODEL = {"depth": "small", "width": 4, "head_hidden": 8, "dropout": 0.0}
TRAIN = {"lr": 3e-3, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 3, "shuffle_buffer_chunks": 2,
         "scheduler": {"factor": 0.1, "patience": 3, "threshold": 0.01, "cooldown": 2},
         "early_stopping": {"patience": 10, "min_delta": 0.001}, "num_workers": 0, "device": "cpu"}


@pytest.mark.parametrize("depth,params", [("18", 11.43e6), ("50", 24.55e6)])
def test_reference_parameter_counts(depth, params):
    model = RatioEstimator(depth, 64, 512)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=1e-3)


def test_embed_once_equals_full_forward_and_untrained_loss_is_ln2():
    torch.manual_seed(0)
    model = RatioEstimator("small", 8, 16).eval()
    x = torch.randn(4, 32, 32)
    theta = torch.linspace(-1, 1, 7)
    fast = model.head(model.embed(x)[:, None, :], theta[None, :])
    slow = torch.stack([model(x, torch.full((4,), float(t))) for t in theta], dim=1)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.fc[-1].weight.zero_()
        model.fc[-1].bias.zero_()
        assert float(ratio_loss(model, x, torch.randn(4))) == pytest.approx(np.log(2), abs=1e-6)


@pytest.mark.parametrize("conditioning", ["late", "film"])
def test_log_ratio_grid_equals_one_forward_per_grid_value(conditioning):
    torch.manual_seed(1)
    model = RatioEstimator("small", 8, 16, conditioning=conditioning)
    for m in model.modules():  # non-trivial BatchNorm statistics and FiLM weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    if conditioning == "film":
        torch.nn.init.normal_(model.embedding.film.net[-1].weight, std=0.3)
    model.eval()
    x, theta = torch.randn(3, 32, 32), torch.linspace(-1.5, 1.5, 9)
    slow = torch.stack([model(x, torch.full((3,), float(t))) for t in theta], dim=1)
    with torch.inference_mode():
        torch.testing.assert_close(model.log_ratio_grid(x, theta), slow.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.fused().log_ratio_grid(x, theta), slow.detach(), rtol=1e-4, atol=1e-4)
    assert model.embed_once == (conditioning == "late")
    if conditioning == "film":
        with pytest.raises(RuntimeError, match="FiLM"):
            model.embed(x)


def test_untrained_film_equals_late_fusion():
    torch.manual_seed(2)
    late = RatioEstimator("small", 8, 16).eval()
    film = RatioEstimator("small", 8, 16, conditioning="film").eval()
    film.load_state_dict(late.state_dict(), strict=False)  # FiLM's last layer starts at zero: identity modulation
    x, theta = torch.randn(4, 32, 32), torch.randn(4)
    torch.testing.assert_close(film(x, theta), late(x, theta))
    assert float(ratio_loss(film, x, theta).detach()) > 0


def test_loader_covers_each_image_once_per_epoch(synthetic_dataset):
    data = MergedDataset(synthetic_dataset, synthetic_dataset / "masks.zarr")
    w = load_whitening(synthetic_dataset / "stats.json")
    loader = ChunkShuffleLoader(data, w, 16, seed=1, buffer_blocks=2, drop_last=False)
    thetas = torch.cat([t for _, t in loader]).numpy().ravel()
    expected = np.sort(w.theta(data.column("gamma_pop")).astype(np.float32))
    np.testing.assert_allclose(np.sort(thetas), expected, rtol=1e-6)
    loader.set_epoch(1)
    assert not np.array_equal(torch.cat([t for _, t in loader]).numpy().ravel(), thetas)  # reshuffled


def _train(tmp, data, max_epochs, ckpt, train_cfg=TRAIN):
    cfg = dict(train_cfg, max_epochs=max_epochs)
    return train_ratio_estimator(
        train_dir=data, train_masks=data / "masks.zarr", val_dir=data, val_masks=data / "masks.zarr",
        whitening=load_whitening(data / "stats.json"), model_cfg=MODEL, train_cfg=cfg, seed=3,
        out_model=tmp / "model.pt", out_history=tmp / "history.csv", checkpoint_dir=ckpt, threads=1)


def test_training_learns_and_resumes_after_kill(tmp_path, synthetic_dataset, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    _train(full, synthetic_dataset, 3, full / "ckpt")
    rows = list(csv.DictReader(open(full / "history.csv")))
    assert len(rows) == 3 and float(rows[-1]["val_loss"]) < np.log(2)

    # "killed" after epoch 1: a run with max_epochs=1 leaves the checkpoint a killed run would leave
    part = tmp_path / "part"
    part.mkdir()
    _train(part, synthetic_dataset, 1, part / "ckpt")
    epochs_run = []
    evaluate = train_module.evaluate_loss
    monkeypatch.setattr(train_module, "evaluate_loss", lambda *a, **k: epochs_run.append(1) or evaluate(*a, **k))
    _train(part, synthetic_dataset, 3, part / "ckpt")  # resumes at epoch 1 (a plateau budget may grow)
    monkeypatch.setattr(train_module, "evaluate_loss", evaluate)
    assert len(epochs_run) == 2
    resumed = list(csv.DictReader(open(part / "history.csv")))
    assert [r["epoch"] for r in resumed] == ["0", "1", "2"]
    a = torch.load(full / "model.pt", weights_only=True)["model"]
    b = torch.load(part / "model.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)  # bit-identical to the uninterrupted run

    # a checkpoint of other settings is ignored, not resumed
    other = dict(MODEL, head_hidden=12)
    train_ratio_estimator(
        train_dir=synthetic_dataset, train_masks=synthetic_dataset / "masks.zarr", val_dir=synthetic_dataset,
        val_masks=synthetic_dataset / "masks.zarr", whitening=load_whitening(synthetic_dataset / "stats.json"),
        model_cfg=other, train_cfg=dict(TRAIN, max_epochs=1), seed=3, out_model=part / "m2.pt",
        out_history=part / "h2.csv", checkpoint_dir=part / "ckpt", threads=1)
    assert len(list(csv.DictReader(open(part / "h2.csv")))) == 1

    # FiLM conditioning trains through the same loop (trunk run on joint and marginal pairs)
    film = train_ratio_estimator(
        train_dir=synthetic_dataset, train_masks=synthetic_dataset / "masks.zarr", val_dir=synthetic_dataset,
        val_masks=synthetic_dataset / "masks.zarr", whitening=load_whitening(synthetic_dataset / "stats.json"),
        model_cfg=dict(MODEL, conditioning="film"), train_cfg=dict(TRAIN, max_epochs=1), seed=3,
        out_model=part / "film.pt", out_history=part / "film.csv", checkpoint_dir=part / "ckpt_film", threads=1)
    assert np.isfinite(film["best_val_loss"]) and load_model(part / "film.pt")[0].conditioning == "film"

    model, w = load_model(full / "model.pt")
    data = MergedDataset(synthetic_dataset, synthetic_dataset / "masks.zarr")
    images, masks = data.read(np.arange(8))
    curves = log_ratio_curves(model, w, images, masks, grid_centres(1.1, 2.9, 50))
    assert curves.shape == (8, 50) and np.isfinite(curves).all()


def test_rerun_of_an_early_stopped_run_trains_nothing(tmp_path, synthetic_dataset):
    cfg = dict(TRAIN, max_epochs=5, early_stopping={"patience": 1, "min_delta": 10.0})  # stops after epoch 2
    kwargs = dict(train_dir=synthetic_dataset, train_masks=synthetic_dataset / "masks.zarr", val_dir=synthetic_dataset,
                  val_masks=synthetic_dataset / "masks.zarr", whitening=load_whitening(synthetic_dataset / "stats.json"),
                  model_cfg=MODEL, train_cfg=cfg, seed=3, out_model=tmp_path / "model.pt",
                  out_history=tmp_path / "history.csv", checkpoint_dir=tmp_path / "ckpt", threads=1)
    first = train_ratio_estimator(**kwargs)
    again = train_ratio_estimator(**kwargs)
    assert first["epochs"] == again["epochs"] == 2 and first["best_val_loss"] == again["best_val_loss"]


def test_cosine_factor_warms_up_then_decays_to_the_floor():
    f = [cosine_factor(i, steps_per_epoch=10, epochs=5, warmup_epochs=1, min_factor=0.01) for i in range(60)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over the first epoch
    assert f[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(f[10:], f[11:]))  # then monotone decay
    assert f[30] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the decay: the cosine's mid-point
    assert f[50] == f[59] == pytest.approx(0.01)  # the floor at the budget's end, and after
    assert cosine_factor(0, steps_per_epoch=10, epochs=5, warmup_epochs=0) == 1.0


def test_cosine_schedule_sets_the_lr_per_step_and_resumes_bit_identically(tmp_path, synthetic_dataset, monkeypatch):
    cfg = dict(TRAIN, max_epochs=3, scheduler={"type": "cosine", "warmup_epochs": 0.5, "min_factor": 0.1})
    n = len(MergedDataset(synthetic_dataset, synthetic_dataset / "masks.zarr"))
    steps = n // TRAIN["batch_size"]

    def run(out, epochs):
        out.mkdir(exist_ok=True)
        return _train(out, synthetic_dataset, epochs, out / "ckpt", cfg)

    run(tmp_path / "full", 3)
    rows = list(csv.DictReader(open(tmp_path / "full" / "history.csv")))
    expected = [TRAIN["lr"] * cosine_factor((e + 1) * steps, steps_per_epoch=steps, epochs=3, warmup_epochs=0.5,
                                            min_factor=0.1) for e in range(3)]
    np.testing.assert_allclose([float(r["lr"]) for r in rows], expected, rtol=1e-5)
    assert float(rows[-1]["lr"]) == pytest.approx(0.1 * TRAIN["lr"])
    # killed during epoch 1 (after epoch 0's checkpoint), then rerun: resumes with the schedule's state
    part = tmp_path / "part"
    calls = {"n": 0}
    evaluate = train_module.evaluate_loss

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_loss", killed)
    with pytest.raises(KeyboardInterrupt):
        run(part, 3)
    monkeypatch.setattr(train_module, "evaluate_loss", evaluate)
    run(part, 3)
    resumed = list(csv.DictReader(open(part / "history.csv")))
    assert [r["epoch"] for r in resumed] == ["0", "1", "2"] and [r["lr"] for r in resumed] == [r["lr"] for r in rows]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(part / "model.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # a cosine checkpoint of another budget is not resumed: the budget shapes the schedule
    run(part, 4)
    fresh = list(csv.DictReader(open(part / "history.csv")))
    assert len(fresh) == 4 and float(fresh[0]["lr"]) == pytest.approx(
        TRAIN["lr"] * cosine_factor(steps, steps_per_epoch=steps, epochs=4, warmup_epochs=0.5, min_factor=0.1))


def test_select_epoch_writes_that_epochs_model_and_ignores_early_stopping(tmp_path, synthetic_dataset):
    """train.select: epoch (the reference's epoch-20 checkpoint): training runs exactly select_epoch epochs, even
    when early stopping would have stopped it, and the model written is the one after that epoch."""
    cfg = dict(TRAIN, max_epochs=6, early_stopping={"patience": 1, "min_delta": 10.0}, select="epoch", select_epoch=4)
    kwargs = dict(train_dir=synthetic_dataset, train_masks=synthetic_dataset / "masks.zarr", val_dir=synthetic_dataset,
                  val_masks=synthetic_dataset / "masks.zarr", whitening=load_whitening(synthetic_dataset / "stats.json"),
                  model_cfg=MODEL, train_cfg=cfg, seed=3, out_model=tmp_path / "model.pt",
                  out_history=tmp_path / "history.csv", checkpoint_dir=tmp_path / "ckpt", threads=1)
    out = train_ratio_estimator(**kwargs)  # best: early stopping (min_delta 10) would stop after 2 epochs
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert out["epochs"] == len(history) == 4 and out["select"] == "epoch" and out["selected_epoch"] == 3
    blob = torch.load(tmp_path / "model.pt", weights_only=False)
    last = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert blob["selected_epoch"] == last["epoch"] == 3 and blob["select"] == "epoch"
    assert blob["selected_val_loss"] == pytest.approx(float(history[3]["val_loss"]), rel=1e-5)
    for k in blob["model"]:
        torch.testing.assert_close(blob["model"][k], last["model"][k].cpu(), rtol=0, atol=0)
    # a rerun finds the finished checkpoint and writes the same model without training
    again = train_ratio_estimator(**dict(kwargs, out_model=tmp_path / "again.pt"))
    assert again["selected_epoch"] == 3 and again["epochs"] == 4
    blob2 = torch.load(tmp_path / "again.pt", weights_only=False)
    for k in blob["model"]:
        torch.testing.assert_close(blob["model"][k], blob2["model"][k], rtol=0, atol=0)

    best = train_ratio_estimator(**dict(kwargs, train_cfg=dict(cfg, select="best"), out_model=tmp_path / "best.pt",
                                        out_history=tmp_path / "best.csv", checkpoint_dir=tmp_path / "ckpt_best"))
    assert best["epochs"] == 2 and best["select"] == "best" and best["selected_epoch"] == best["best_epoch"]


def test_selection_rejects_a_missing_or_out_of_range_epoch():
    from lensinfer.train import selection

    assert selection({"max_epochs": 75}) == ("best", 0)
    assert selection({"max_epochs": 75, "select": "epoch", "select_epoch": 20}) == ("epoch", 20)
    with pytest.raises(ValueError, match="train.select_epoch: required"):
        selection({"max_epochs": 75, "select": "epoch"})
    with pytest.raises(ValueError, match=r"train.select_epoch: 80 must lie in \[1, train.max_epochs = 75\]"):
        selection({"max_epochs": 75, "select": "epoch", "select_epoch": 80})
