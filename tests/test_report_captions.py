"""Report captions describe the estimator and settings the figure shows (issue 21 item 7): rendered as Snakemake's
report renders them (Jinja2 with ``snakemake.wildcards`` and ``snakemake.config``), for the NRE and the NPE."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest

from lensinfer.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def render(name: str, config: dict, est: str | None = None) -> str:
    text = (ROOT / "report" / name).read_text()
    sm = SimpleNamespace(config=config, wildcards=SimpleNamespace(est=est))
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(snakemake=sm)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config" / "test.yaml")


def test_training_caption_names_the_loss_of_each_estimator(config):
    nre, npe = render("training.rst", config, "nre"), render("training.rst", config, "npe")
    assert "binary cross-entropy" in nre and "ln 2" in nre
    assert "cross-entropy" not in npe and "ln 2" not in npe and "−log q(θ|x)" in npe and "gamma_pop, lens_e1" in npe


def test_gamma_curve_caption_follows_the_estimator_and_config(config):
    nre, npe = render("gamma_curves.rst", config, "nre"), render("gamma_curves.rst", config, "npe")
    assert "log r̂" in nre and "NRE" in nre and "q(γ|x)" not in nre
    assert "log r̂" not in npe and "log q(γ|x) − log π(γ)" in npe
    assert f"{config['flow']['n_samples']} posterior samples" in npe  # γ one of two targets: a KDE marginal
    assert "NFW" not in npe and "test_nfw" in npe and f"of {config['inference']['combine_size']} lenses" in npe
    single = dict(config, flow=dict(config["flow"], targets=["gamma_pop"]))
    assert "posterior samples" not in render("gamma_curves.rst", single, "npe")


def test_coverage_caption_uses_the_configured_set_sizes(config):
    cfg = dict(config, calibrate=dict(config["calibrate"], set_sizes=[1, 5]))
    text = render("coverage.rst", cfg, "npe")
    assert "N = 1, N = 5" in text and "13" not in text and "NPE" in text
    assert f"dataset {config['calibrate']['coverage_dataset']}" in text


def test_npe_diagnostics_caption_does_not_call_the_validation_set_held_out(config):
    default = render("npe_diagnostics.rst", config)
    assert "held out" not in default.replace("not strictly held out", "") and "held-out" not in default
    assert "validation set" in default and "early stopping" in default
    other = dict(config, flow=dict(config["flow"], diagnostics_dataset="test"))
    assert "Neither training nor model selection saw this dataset" in render("npe_diagnostics.rst", other)
    train = dict(config, flow=dict(config["flow"], diagnostics_dataset=config["train"]["dataset"]))
    assert "training set" in render("npe_diagnostics.rst", train)
