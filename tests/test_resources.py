"""Resource requests from measured costs (issue 21 items 2 and 7): simulate_shard runtimes from the per-image costs
of bench/simulate.py, seen in the dry run of the user's command."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lensinfer.config import load_config
from lensinfer.resources import MARGIN, PER_IMAGE_S, STARTUP_MIN, simulate_shard_runtime_min

ROOT = Path(__file__).resolve().parents[1]


def paper() -> dict:
    return yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


def test_paper_training_shard_runtime_follows_the_measured_cost():
    cfg = paper()
    base, per_sub = PER_IMAGE_S["torch"]  # the paper config renders with the torch backend
    assert cfg["renderer"]["backend"] == "torch"
    seconds = 1000 * (base + per_sub * (0 + 2999) / 2)  # 1 000 images, N_sub ~ randint[0, 3000)
    assert 120 < seconds < 140  # ≈ the 133 ms per image measured at 1 500 subhalos
    assert simulate_shard_runtime_min(cfg, "train") == math.ceil(MARGIN * seconds / 60 + STARTUP_MIN) == 19


def test_runtime_scales_with_images_subhalos_pixels_and_backend():
    cfg = paper()
    t = simulate_shard_runtime_min(cfg, "train")
    cfg["datasets"]["train"]["shard_size"] = 4000
    assert simulate_shard_runtime_min(cfg, "train") - STARTUP_MIN == pytest.approx(4 * (t - STARTUP_MIN), abs=4)
    cfg["datasets"]["train"]["shard_size"] = 1000
    assert simulate_shard_runtime_min(cfg, "test_tnfw") > simulate_shard_runtime_min(cfg, "train")  # N_sub < 12000
    cfg["renderer"]["backend"] = "lenstronomy"
    assert simulate_shard_runtime_min(cfg, "train") > 10 * (t - STARTUP_MIN)
    cfg["renderer"]["backend"] = "torch"
    cfg["instrument"]["num_pix"] = 50
    assert simulate_shard_runtime_min(cfg, "train") < t


def test_the_dry_run_requests_these_runtimes(tmp_path):
    cfg = load_config(ROOT / "config" / "test.yaml")
    (tmp_path / "config.yaml").write_text((ROOT / "config" / "test.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n", "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = re.findall(r"rule simulate_shard:.*?wildcards: dataset=(\w+), shard=\d+\n\s*resources: .*?runtime=(\d+)",
                      proc.stdout + proc.stderr, re.S)
    assert jobs
    for dataset, runtime in jobs:
        assert int(runtime) == simulate_shard_runtime_min(cfg, dataset)


def test_training_asks_a_thread_per_loader_worker(tmp_path):
    """train.num_workers loader processes + the main process: the training rules ask 1 + num_workers threads
    (lensinfer.train.loader_workers caps the workers to what the job was granted)."""
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    cfg["train"]["num_workers"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "-n", "--cores", "8", "results/models/nre/model.pt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    block = re.search(r"rule train_nre:(.*?)\n\n", proc.stdout + proc.stderr, re.S).group(1)
    assert re.search(r"threads: 4\b", block), block
