"""The torch device of a job, and the check that a GPU the scheduler granted is really used (issue 21 item 3).

The GPU rules (``train_nre``, ``train_flow``, ``curves``, ``posterior_samples``) ask the scheduler for a GPU
(``resources: gpu=1``) and pass ``train.device`` as a param; their scripts call :func:`select_device` and hand the
result to the library (training, :func:`lensinfer.infer.dataset_curves`, :func:`lensinfer.npe.dataset_curves`,
:func:`lensinfer.npe.posterior_samples`), which put the model and every batch on it.

Decision (``requested`` is ``train.device``):

* ``cpu`` → the CPU, always (an explicit choice, e.g. a cluster whose "GPU" is a placeholder).
* ``cuda`` / ``cuda:N`` → that device; an error when torch sees no CUDA device.
* ``mps`` → Apple's Metal device.
* ``auto`` → CUDA when torch sees a device. Otherwise the CPU — unless the scheduler granted this job a GPU
  (``CUDA_VISIBLE_DEVICES`` set to a device list, as SLURM does for ``--gres=gpu``): then torch not seeing it means
  a CPU-only torch build or a broken driver, and the job fails (:class:`GPUUnavailableError`) instead of silently
  training on the CPU of a GPU node for days.

Mixed precision stays CUDA-only (bf16 autocast, :func:`lensinfer.train._autocast`); CPU runs are float32.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import torch

__all__ = ["GPUUnavailableError", "granted_gpus", "select_device"]


class GPUUnavailableError(RuntimeError):
    """The job was given a GPU (or asked for CUDA) but torch cannot use one."""


def granted_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The devices the scheduler granted this process (``CUDA_VISIBLE_DEVICES``; empty when unset, empty, or the
    "no device" markers ``-1`` / ``NoDevFiles``)."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "").strip()
    if value in ("", "-1", "NoDevFiles"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def _torch_build() -> str:
    cuda = torch.version.cuda
    return f"torch {torch.__version__} ({'CUDA ' + cuda if cuda else 'a CPU-only build'})"


def select_device(requested: str | None = "auto", *, environ: Mapping[str, str] | None = None,
                  cuda_available: Callable[[], bool] | None = None) -> torch.device:
    """The device a job runs on (module docstring); ``environ`` and ``cuda_available`` are injectable for tests."""
    requested = str(requested or "auto")
    available = (cuda_available or torch.cuda.is_available)
    env = os.environ if environ is None else environ
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "mps":
        return torch.device("mps")
    if requested.startswith("cuda"):
        if not available():
            raise GPUUnavailableError(f"train.device={requested!r} but {_torch_build()} sees no CUDA device "
                                      f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}); "
                                      "install the CUDA build (envs/train.yaml) or set train.device: auto or cpu")
        return torch.device(requested)
    if requested != "auto":
        raise ValueError(f"train.device={requested!r}: allowed are auto, cpu, cuda, cuda:N, mps")
    if available():
        return torch.device("cuda")
    gpus = granted_gpus(env)
    if gpus:
        raise GPUUnavailableError(
            f"the scheduler granted this job GPU(s) CUDA_VISIBLE_DEVICES={','.join(gpus)} but {_torch_build()} sees no "
            "CUDA device: the job would run on the CPU of a GPU node. Install the CUDA build of PyTorch (the GPU "
            "rules' conda env envs/train.yaml; check `python -c 'import torch; print(torch.cuda.is_available())'` "
            "on the node), or set train.device: cpu to run on the CPU on purpose")
    return torch.device("cpu")
