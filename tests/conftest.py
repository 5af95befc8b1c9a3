"""Shared fixtures: repository paths and a small synthetic merged dataset (no simulation needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def make_synthetic_dataset(out: Path, n: int = 96, num_pix: int = 16, seed: int = 0, shards: int = 2) -> Path:
    """A merged dataset whose images carry γ in their amplitude (learnable), written through the real store API."""
    from lensinfer.data.merge import merge_dataset, write_masks
    from lensinfer.data.store import ShardData, write_shard

    rng = np.random.default_rng(seed)
    paths = []
    per = n // shards
    columns = ["lens_theta_E", "lens_center_x", "lens_center_y", "gamma_pop", "n_sub"]
    for s in range(shards):
        gamma = rng.uniform(1.1, 2.9, per)
        yy, xx = np.mgrid[:num_pix, :num_pix] - (num_pix - 1) / 2
        ring = np.exp(-((np.hypot(xx, yy) - 4) ** 2) / 2.0)
        images = (gamma[:, None, None] * ring[None] + rng.normal(0, 0.3, (per, num_pix, num_pix))).astype(np.float32)
        params = np.column_stack([np.full(per, 0.6), np.zeros(per), np.zeros(per), gamma, np.zeros(per)])
        data = ShardData(images=images, params=params, columns=columns, image_seed=rng.integers(0, 2**63, per, dtype=np.uint64),
                         subhalos=np.zeros((0, 2)), subhalo_columns=["mass", "x"], subhalo_offsets=np.zeros(per + 1, np.int64))
        p = out / "sims" / f"shard_{s}.zarr"
        write_shard(p, data, {"dataset": "synthetic", "shard": s}, chunk_images=8)
        paths.append(p)
    merge_dataset("synthetic", paths, out / "merged", pixel_scale=0.1, radius_theta_e=1.5)
    write_masks(out / "merged", out / "merged" / "masks.zarr", pixel_scale=0.1, radius_theta_e=1.5, chunk_images=8)
    return out / "merged"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def finished_test_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG of config/test.yaml, run once per test session through the user's command
    (``snakemake --cores 2``) in a folder no test changes: tests that need a finished run work on a copy
    (:func:`copy_run`), so the end-to-end module and the observation-source module share one simulation and
    training instead of each running their own. Under pytest-xdist (``make test``) the run is built once for all
    workers: the first worker that needs it builds it under a file lock in the session's shared temporary folder,
    the others wait for it (the xdist-documented pattern for a session fixture that must run once)."""
    import fcntl
    import shutil
    import subprocess
    import sys

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    wd = shared / "finished_test_run"
    done, failed = shared / "finished_test_run.done", shared / "finished_test_run.failed"
    with open(shared / "finished_test_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            raise AssertionError(failed.read_text())
        if not done.exists():
            try:
                wd.mkdir()
                shutil.copy(ROOT / "config" / "test.yaml", wd / "config.yaml")
                cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
                       "--configfile", str(wd / "config.yaml"), "--cores", "2"]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500,
                                      env=dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache")))
                if proc.returncode != 0:
                    raise AssertionError(f"snakemake --cores 2 on config/test.yaml failed ({proc.returncode}):\n"
                                         f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
            except BaseException as err:  # the other workers get the same error instead of a half-built folder
                failed.write_text(f"{type(err).__name__}: {err}")
                raise
            done.touch()
    return wd


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a finished run (file times kept, so Snakemake sees it up to date) at ``dest``."""
    import shutil

    shutil.copytree(run, dest, symlinks=True)
    return dest


# `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadscope`): each module is one unit of work,
# so its module-scoped fixtures are built once per session and its tests keep their order; the bench smoke tests
# share nothing and go one by one. The longest units are handed out first (xdist's own reordering puts units with
# few tests last, which left the 8-minute real-SLURM test running alone at the end): the module whose first test
# builds the shared finished run, the real-SLURM test, then the other modules that copy the finished run.
_ONE_BY_ONE_MODULES = {"test_bench_smoke"}
_LONG_FIRST = ("test_device", "test_slurm_integration", "test_workflow", "test_workflow_observe")


def _work_unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return nodeid if Path(module).stem in _ONE_BY_ONE_MODULES else module


class _ModuleUnitsPlugin:
    """Registered only when pytest-xdist is loaded (``-p no:xdist`` runs without it)."""

    @staticmethod
    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        """Long units first; otherwise the collection order (stable: every worker collects the same order)."""
        def rank(item: pytest.Item) -> int:
            stem = Path(str(item.path)).stem
            return _LONG_FIRST.index(stem) if stem in _LONG_FIRST else len(_LONG_FIRST)

        items.sort(key=rank)

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN205 (xdist's scheduler protocol)
        if config.getvalue("dist") != "loadscope":
            return None
        from xdist.scheduler import LoadScopeScheduling

        config.option.loadscopereorder = False  # keep the order above

        class ModuleUnits(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _work_unit(nodeid)

        return ModuleUnits(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_ModuleUnitsPlugin(), "lensinfer-module-units")
