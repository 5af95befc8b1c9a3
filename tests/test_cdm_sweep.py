"""inference.cdm_sweep: CDM datasets generated from concentration multipliers, their figure, the paper's sweep."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from lensinfer.config import ConfigError, cdm_sweep_name, check_config, expand_cdm_sweep, load_config
from lensinfer.plots import plot_cdm_sweep
from lensinfer.reference import CDM_SWEEP

ROOT = Path(__file__).resolve().parents[1]
PAPER_C = [0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def _demo():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(cfg, str(ROOT / "schemas" / "config.schema.yaml"))
    return cfg


def test_sweep_generates_datasets_with_only_the_concentration_changed():
    cfg = _demo()
    cfg["inference"]["cdm_sweep"] = {"datasets": ["test_nfw"], "c_factors": [0.5, 1, 4]}
    before = copy.deepcopy(cfg["datasets"]["test_nfw"])
    rows = expand_cdm_sweep(cfg)
    assert [r["dataset"] for r in rows] == ["test_nfw_c0.5", "test_nfw", "test_nfw_c4"]  # c × 1 is the base itself
    assert [r["c_factor"] for r in rows] == [0.5, 1.0, 4.0] and {r["profile"] for r in rows} == {"NFW"}
    assert cfg["datasets"]["test_nfw"] == before
    for c in (0.5, 4.0):
        generated = copy.deepcopy(cfg["datasets"][cdm_sweep_name("test_nfw", c)])
        assert generated["population"].pop("c_factor") == c
        expected = copy.deepcopy(before)
        expected["population"].pop("c_factor")
        assert generated == expected
    assert cfg["inference"]["cdm_datasets"] == ["test_nfw", "test_nfw_c0.5", "test_nfw_c4"]
    check_config(cfg, ROOT)
    again = copy.deepcopy(cfg)
    assert expand_cdm_sweep(again) == rows and again == cfg  # idempotent


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["inference"].update(cdm_sweep={"datasets": ["nope"], "c_factors": [2]}),
     r"inference\.cdm_sweep\.datasets\[0\]: dataset 'nope' is not defined"),
    (lambda c: c["inference"].update(cdm_sweep={"datasets": ["test"], "c_factors": [2]}),
     r"inference\.cdm_sweep\.datasets\[0\]: dataset 'test' has profile 'EPL'"),
    (lambda c: (c["inference"].update(cdm_sweep={"datasets": ["test_nfw"], "c_factors": [2]}),
                c["datasets"].update(test_nfw_c2=copy.deepcopy(c["datasets"]["test"]))),
     r"the sweep dataset 'test_nfw_c2' \(c_factor 2\) is already defined differently"),
])
def test_sweep_errors_name_the_key(edit, match):
    cfg = _demo()
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        expand_cdm_sweep(cfg)


def test_schema_rejects_a_non_positive_multiplier():
    cfg = _demo()
    cfg["inference"]["cdm_sweep"] = {"datasets": ["test_nfw"], "c_factors": [0, 1]}
    with pytest.raises(Exception, match="c_factors"):
        validate(cfg, str(ROOT / "schemas" / "config.schema.yaml"))


def test_paper_config_sweeps_the_nine_multipliers_for_nfw_and_tnfw():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    for base, profile in (("test_nfw", "NFW"), ("test_tnfw", "TNFW")):
        names = [base if c == 1.0 else cdm_sweep_name(base, c) for c in PAPER_C]
        assert set(names) <= set(cfg["inference"]["cdm_datasets"])
        assert [cfg["datasets"][n]["population"]["c_factor"] for n in names] == PAPER_C
        assert {cfg["datasets"][n]["population"]["profile"] for n in names} == {profile}
        assert sorted(CDM_SWEEP[profile]) == PAPER_C  # the reference points cover the same multipliers
    assert len(cfg["inference"]["cdm_datasets"]) == 18


def test_demo_config_sweeps_three_multipliers():
    cfg = load_config(ROOT / "config" / "config.yaml")
    assert cfg["inference"]["cdm_sweep"]["c_factors"] == [1, 4, 10]
    assert cfg["inference"]["cdm_datasets"] == ["test_nfw", "test_nfw_c4", "test_nfw_c10"]


def test_plot_cdm_sweep_draws_our_band_and_the_paper_points(tmp_path):
    sweep, paths = [], []
    for profile in ("NFW", "TNFW"):
        for c in (1.0, 4.0):
            med = CDM_SWEEP[profile][c][0]
            path = tmp_path / f"cdm_{profile}_{c:g}.json"
            path.write_text(json.dumps({"set_size": 13, "n_sets": 10,
                                        "mle_percentiles": {"16": med - 0.1, "50": med, "84": med + 0.1}}))
            sweep.append({"dataset": path.stem, "base": profile, "profile": profile, "c_factor": c})
            paths.append(str(path))
    out = tmp_path / "sweep.png"
    plot_cdm_sweep(paths, sweep, out)
    assert out.stat().st_size > 10_000
    with pytest.raises(ValueError, match="2 result files for 4 sweep datasets"):
        plot_cdm_sweep(paths[:2], sweep, tmp_path / "bad.png")


@pytest.mark.slow
def test_paper_dry_run_shows_the_nine_point_sweep(tmp_path):
    """`snakemake --configfile config/paper.yaml -n`: 18 infer_cdm jobs (NFW and tNFW at nine multipliers) and the
    sweep figure."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(ROOT),
                           "--configfile", str(ROOT / "config" / "paper.yaml"), "-n", "--quiet", "rules"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", text, re.M)}
    assert counts["infer_cdm"] == 18 and counts["plot_cdm_sweep"] == 1
