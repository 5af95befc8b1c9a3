"""Progress where people wait (issue 20): one log line per training epoch with the time left; progress bars on
stderr for γ curves and posterior samples of many lenses."""

from __future__ import annotations

import logging
import re

import numpy as np

from lensinfer.data.loader import MergedDataset, load_whitening
from lensinfer.infer import grid_centres, log_ratio_curves
from lensinfer.progress import format_duration, progress, time_left
from lensinfer.train import load_model, train_ratio_estimator

MODEL = {"depth": "small", "width": 4, "head_hidden": 8, "dropout": 0.0}
TRAIN = {"lr": 3e-3, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 3, "shuffle_buffer_chunks": 2,
         "scheduler": {"factor": 0.1, "patience": 3, "threshold": 0.01, "cooldown": 2},
         "early_stopping": {"patience": 10, "min_delta": 0.001}, "num_workers": 0, "device": "cpu"}


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.9, 60, 185, 3599, 7440, -3)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 05 s", "59 min 59 s", "2 h 04 min", "0 s"]


def test_time_left_is_the_mean_rate_times_what_remains():
    assert time_left(30.0, 3, 10) == 70.0
    assert time_left(30.0, 10, 10) == 0.0
    assert time_left(0.0, 0, 10) == 0.0


def test_progress_bar_counts_units_on_stderr(capsys):
    with progress(5, "γ curves") as bar:
        bar.update(2)
        bar.update(3)
    err = capsys.readouterr().err
    assert "γ curves" in err and "5/5" in err and "lens" in err


def test_training_logs_one_line_per_epoch_with_losses_lr_and_time_left(tmp_path, synthetic_dataset, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="lensinfer.train"):
        train_ratio_estimator(
            train_dir=synthetic_dataset, train_masks=synthetic_dataset / "masks.zarr", val_dir=synthetic_dataset,
            val_masks=synthetic_dataset / "masks.zarr", whitening=load_whitening(synthetic_dataset / "stats.json"),
            model_cfg=MODEL, train_cfg=TRAIN, seed=3, out_model=tmp_path / "model.pt",
            out_history=tmp_path / "history.csv", checkpoint_dir=tmp_path / "ckpt", threads=1)
    pattern = re.compile(r"^nre epoch (\d)/3 train (\d+\.\d{4}) val (\d+\.\d{4}) lr (\S+) \(\d+\.\d s; ≈ (.+) left\)$")
    lines = [m for r in caplog.records if (m := pattern.match(r.getMessage()))]
    assert [int(m.group(1)) for m in lines] == [1, 2, 3]
    assert all(float(m.group(4)) == TRAIN["lr"] for m in lines[:1])  # plateau rule: the configured lr at first
    assert lines[-1].group(5) == "0 s"  # nothing left after the last epoch

    # the trained model's γ curves of many lenses show a progress bar
    model, w = load_model(tmp_path / "model.pt")
    data = MergedDataset(synthetic_dataset, synthetic_dataset / "masks.zarr")
    images, masks = data.read(np.arange(40))
    capsys.readouterr()
    curves = log_ratio_curves(model, w, images, masks, grid_centres(1.1, 2.9, 20), batch_size=16)
    err = capsys.readouterr().err
    assert curves.shape == (40, 20) and "NRE γ curves" in err and "40/40" in err
