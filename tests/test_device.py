"""The device decision of the GPU rules (issue 21 item 3), tested without a GPU: the scheduler's grant
(``CUDA_VISIBLE_DEVICES``) and torch's view of CUDA are injected."""

from __future__ import annotations

import pytest
import torch

from lensinfer.device import GPUUnavailableError, granted_gpus, select_device
from lensinfer.train import loader_workers, resolve_device


def no_cuda() -> bool:
    return False


def has_cuda() -> bool:
    return True


@pytest.mark.parametrize("value, gpus", [(None, []), ("", []), ("-1", []), ("NoDevFiles", []), ("0", ["0"]),
                                         ("0,1", ["0", "1"]), ("GPU-5f2c", ["GPU-5f2c"])])
def test_granted_gpus(value, gpus):
    assert granted_gpus({} if value is None else {"CUDA_VISIBLE_DEVICES": value}) == gpus


def test_granted_gpu_that_torch_cannot_see_fails_clearly():
    with pytest.raises(GPUUnavailableError) as err:
        select_device("auto", environ={"CUDA_VISIBLE_DEVICES": "0"}, cuda_available=no_cuda)
    msg = str(err.value)
    assert "CUDA_VISIBLE_DEVICES=0" in msg and "sees no CUDA device" in msg and "train.device: cpu" in msg
    assert torch.__version__ in msg


def test_auto_uses_the_visible_gpu_and_falls_back_to_cpu_only_without_a_grant():
    assert select_device("auto", environ={"CUDA_VISIBLE_DEVICES": "0"}, cuda_available=has_cuda).type == "cuda"
    assert select_device("auto", environ={}, cuda_available=has_cuda).type == "cuda"
    assert select_device("auto", environ={}, cuda_available=no_cuda).type == "cpu"  # a laptop: CPU on purpose
    assert select_device(None, environ={"CUDA_VISIBLE_DEVICES": "-1"}, cuda_available=no_cuda).type == "cpu"


def test_explicit_choices():
    # cpu is an explicit choice: honoured even on a GPU grant (e.g. a placeholder GPU of a test cluster)
    assert select_device("cpu", environ={"CUDA_VISIBLE_DEVICES": "0"}, cuda_available=no_cuda).type == "cpu"
    assert select_device("cuda:1", environ={}, cuda_available=has_cuda) == torch.device("cuda:1")
    with pytest.raises(GPUUnavailableError, match="train.device='cuda'"):
        select_device("cuda", environ={}, cuda_available=no_cuda)
    with pytest.raises(ValueError, match="train.device='gpu'"):
        select_device("gpu", environ={}, cuda_available=no_cuda)


def test_training_resolves_its_device_through_the_same_check(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", no_cuda)
    with pytest.raises(GPUUnavailableError):
        resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"


def test_loader_workers_fit_the_jobs_threads():
    assert loader_workers({"num_workers": 8}, 9) == 8
    assert loader_workers({"num_workers": 8}, 2) == 1  # Snakemake granted fewer cores than the rule asked
    assert loader_workers({"num_workers": 0}, 2) == 0
    assert loader_workers({}, 1) == 0


@pytest.mark.slow
def test_gpu_rule_fails_clearly_when_the_granted_gpu_is_invisible(tmp_path, root, finished_test_run):
    """Through the user's command: a GPU rule (train_nre) of the tiny config with ``train.device: auto``, run as a
    scheduler would with a GPU granted (CUDA_VISIBLE_DEVICES=0) on this CPU-only torch, fails with the message in its
    log and leaves no model; the same run with ``train.device: cpu`` (the config's explicit choice) trains.
    On a copy of the session's finished run: the device setting reruns the training, not the simulation."""
    import os
    import subprocess
    import sys

    import yaml

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU: nothing to refuse")
    from .conftest import copy_run

    tmp_path = copy_run(finished_test_run, tmp_path / "run")
    cfg = yaml.safe_load((root / "config" / "test.yaml").read_text())
    cfg["train"]["device"] = "auto"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(root / ".numba_cache"), CUDA_VISIBLE_DEVICES="0")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "results/models/nre/model.pt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode != 0
    assert "rule simulate_shard:" not in proc.stdout + proc.stderr  # only the training reran
    log = (tmp_path / "logs" / "train" / "nre.log").read_text()
    assert "GPUUnavailableError" in log and "CUDA_VISIBLE_DEVICES=0" in log and "sees no CUDA device" in log
    assert not (tmp_path / "results" / "models" / "nre" / "model.pt").exists()
    cfg["train"]["device"] = "cpu"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "models" / "nre" / "model.pt").exists()
