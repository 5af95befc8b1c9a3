"""Issue 21 item 7, through the user's command (``snakemake -n`` on the tiny config): only datasets some stage reads
are simulated, ``flow.diagnostics_dataset`` is validated, the NPE calibration curves use ``flow.n_samples`` and the
GPU rules get their device from the config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lensinfer.config import consumed_datasets, load_config

ROOT = Path(__file__).resolve().parents[1]


def dry_run(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "-n", "-p", "--cores", "2", *args]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "config" / "test.yaml").read_text())


def test_a_dataset_nothing_reads_is_not_simulated(tmp_path, config):
    config["datasets"]["unused"] = dict(config["datasets"]["val"])
    proc = dry_run(tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "results/sims/val/shard_0.zarr" in out
    assert "results/sims/unused/" not in out and "results/data/unused/" not in out
    # the same dataset becomes simulated once a stage reads it
    config["inference"]["cdm_datasets"] = ["test_nfw", "unused"]
    proc = dry_run(tmp_path, config)
    assert "results/sims/unused/shard_0.zarr" in proc.stdout + proc.stderr


def test_consumed_datasets_follow_the_estimators(root):
    cfg = load_config(root / "config" / "test.yaml")
    assert set(consumed_datasets(cfg)) == {"train", "val", "test", "test_nfw"}
    cfg["estimator"], cfg["flow"]["targets"] = "npe", ["lens_e1"]  # no γ curves: no calibration/CDM sets
    cfg["flow"]["diagnostics_dataset"] = "test"
    assert consumed_datasets(cfg) == ["test", "train", "val"]
    cfg["flow"]["diagnostics_dataset"] = None
    assert consumed_datasets(cfg) == ["train", "val"]


def test_unknown_diagnostics_dataset_is_refused_naming_the_key(tmp_path, config):
    config.setdefault("flow", {})["diagnostics_dataset"] = "nope"
    proc = dry_run(tmp_path, config)
    assert proc.returncode != 0
    assert re.search(r"flow\.diagnostics_dataset: dataset 'nope' is not defined", proc.stdout + proc.stderr)


def test_npe_curves_sample_as_many_as_the_observed_curves_and_gpu_rules_get_the_device(tmp_path, config):
    """The curves job of the NPE gets flow.n_samples (the value infer_flow uses) and train.device; the NRE's none."""
    config.setdefault("flow", {})["n_samples"] = 321
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # a dry run does not print params: read them from the parsed workflow (Snakemake's Python API, pinned 9.27.1)
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings, WorkflowSettings

    with SnakemakeApi() as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1),
                          config_settings=ConfigSettings(configfiles=[tmp_path / "cfg.yaml"]),
                          storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
                          snakefile=ROOT / "Snakefile", workdir=tmp_path)
        rules = {r.name: r for r in wf._workflow.rules}
    curves = rules["curves"].params
    assert callable(curves.n_samples)
    assert curves.n_samples(type("W", (), {"est": "npe"})) == 321
    assert curves.n_samples(type("W", (), {"est": "nre"})) is None
    assert curves.device == rules["posterior_samples"].params.device == "cpu"  # config/test.yaml's train.device


def test_paper_cosmos_download_checksum_is_pinned_or_the_decision_documented(root):
    """config/paper.yaml: the spec gives no checksum of the COSMOS archive; without one the file says so and how to
    pin the sha256 that ``download_cosmos`` records (lensinfer_verified.json, tested in test_cosmos.py)."""
    text = (root / "config" / "paper.yaml").read_text()
    download = load_config(root / "config" / "paper.yaml")["lens"]["source"]["download"]
    if "sha256" in download:
        assert re.fullmatch(r"[0-9a-f]{64}", download["sha256"])
    else:
        assert "No download.sha256, on purpose" in text and "lensinfer_verified.json" in text
