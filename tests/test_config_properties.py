"""Config semantics, property-based (issue 17 item 4): random configs derived from ``config/test.yaml`` with one
prior pushed outside its parameter's physical range are rejected — by the validation the workflow runs before any
job (:func:`lensinfer.config.validate_config`: schema + :func:`check_config`) — with a message naming the key;
random configs inside the ranges pass it. A few examples of each go through a real ``snakemake -n``."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lensinfer.config import ConfigError, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
HALF_FOV = 0.5 * BASE["instrument"]["num_pix"] * BASE["instrument"]["pixel_scale"]  # 1.92″
GRID = (1.1, 2.9)  # the test config's inference grid (schema default)
Z = 4.753424308822899  # a normal prior counts by mean ± Z σ (lensinfer.config.NORMAL_TAIL)

ELLIPTICITY = ["lens.main", "lens.lens_light", "lens.source", "subhalos"]
SERSIC = ["lens.lens_light", "lens.source"]
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _set(cfg: dict, key: str, value) -> None:
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node[k]
    node[last] = value


def _num(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# --- invalid: one prior outside its physical range; each strategy gives (key the message must name, edits) -------

@st.composite
def beyond_one(draw, low: float = 1.0, high: float = 20.0) -> dict:
    """A prior on a quantity whose modulus must stay < 1 that reaches |x| ≥ 1 (uniform, fixed or normal)."""
    reach = draw(_num(low, high))
    kind = draw(st.sampled_from(["uniform", "fixed", "normal"]))
    sign = draw(st.sampled_from([-1.0, 1.0]))
    if kind == "fixed":
        return sign * reach
    if kind == "normal":
        return {"normal": [0.0, reach / Z * 1.001]}
    other = draw(_num(-0.9, 0.9))
    return {"uniform": sorted([sign * reach, other])}


@st.composite
def bad_ellipticity(draw):
    prefix = draw(st.sampled_from(ELLIPTICITY))
    if draw(st.booleans()):  # one component reaches |e| ≥ 1
        comp = draw(st.sampled_from(["e1", "e2"]))
        return f"{prefix}.{comp}", {f"{prefix}.{comp}": draw(beyond_one())}
    a = draw(_num(0.72, 0.99))  # each component below 1, the modulus √(e1² + e2²) ≥ 1
    b = draw(_num(math.sqrt(max(0.0, 1.0 - a * a)) + 1e-3, 0.99))
    return f"{prefix}.e1", {f"{prefix}.e1": {"uniform": [-a, a]}, f"{prefix}.e2": {"uniform": [-b, b]}}


@st.composite
def bad_shear(draw):
    comp = draw(st.sampled_from(["gamma1", "gamma2"]))
    return f"lens.shear.{comp}", {f"lens.shear.{comp}": draw(beyond_one())}


@st.composite
def non_positive(draw, key_choices: list[str]):
    key = draw(st.sampled_from(key_choices))
    kind = draw(st.sampled_from(["uniform", "fixed", "normal"]))
    if kind == "fixed":
        value = draw(_num(-5.0, 0.0))
    elif kind == "uniform":
        lo = draw(_num(-5.0, 0.0))
        value = {"uniform": [lo, lo + draw(_num(0.01, 3.0))]}
    else:
        mean = draw(_num(0.05, 2.0))
        value = {"normal": [mean, mean / Z * draw(_num(1.01, 5.0))]}
    return key, {key: value}


@st.composite
def bad_radius(draw):
    return draw(non_positive([f"{p}.R_sersic" for p in SERSIC] + [f"{p}.n_sersic" for p in SERSIC]))


@st.composite
def non_finite(draw):
    key = draw(st.sampled_from(["lens.lens_light.magnitude", "lens.source.magnitude", "lens.main.theta_E",
                                "lens.source.R_sersic", "lens.main.e1", "lens.z_lens"]))
    bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if draw(st.booleans()):
        return key, {key: bad}
    return key, {key: {"uniform": [draw(_num(-1.0, 1.0)), bad]}}


@st.composite
def gamma_value_off_grid(draw):
    value = draw(st.one_of(_num(1.001, GRID[0] - 1e-6), _num(GRID[1] + 1e-6, 2.999)))
    values = draw(st.lists(_num(*GRID), max_size=3))
    i = draw(st.integers(0, len(values)))
    return ("datasets.test.population.gamma_values",
            {"datasets.test.population.gamma_values": values[:i] + [value] + values[i:]})


@st.composite
def centre_off_field(draw):
    key = draw(st.sampled_from(["lens.main.center_x", "lens.main.center_y", "lens.source.center_x",
                                "lens.source.center_y"]))
    reach = draw(_num(HALF_FOV, 50.0))
    return key, {key: {"uniform": [-reach, draw(_num(-HALF_FOV + 0.01, HALF_FOV - 0.01))]} if draw(st.booleans())
                 else reach}


@st.composite
def other_ranges(draw):
    choice = draw(st.sampled_from(["theta_E", "z_lens", "gamma", "n_sub", "mock_gamma"]))
    if choice == "theta_E":
        return draw(non_positive(["lens.main.theta_E"]))
    if choice == "z_lens":
        return draw(non_positive(["lens.z_lens"]))
    if choice == "gamma":
        lo = draw(_num(0.0, 1.0))
        return "lens.main.gamma", {"lens.main.gamma": {"uniform": [lo, draw(_num(1.5, 2.5))]}}
    if choice == "n_sub":
        return "datasets.train.population.n_sub", {
            "datasets.train.population.n_sub": {"randint": [draw(st.integers(-100, -1)), draw(st.integers(1, 50))]}}
    hi = draw(_num(3.0, 10.0))
    return "observations.mock.population.gamma", {"observations.mock.population.gamma": {"uniform": [1.5, hi]}}


INVALID = st.one_of(bad_ellipticity(), bad_shear(), bad_radius(), non_finite(), gamma_value_off_grid(),
                    centre_off_field(), other_ranges())


def _apply(edits: dict) -> dict:
    cfg = copy.deepcopy(BASE)
    for key, value in edits.items():
        _set(cfg, key, value)
    return cfg


@FEW
@given(INVALID)
def test_every_invalid_config_is_rejected_naming_the_key(case):
    key, edits = case
    cfg = _apply(edits)
    if key == "observations.mock.population.gamma":
        cfg["observations"]["mock"]["population"] = {"profile": "EPL", "n_sub": {"randint": [0, 5]},
                                                     "gamma": edits[key]}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, ROOT)
    assert str(err.value).startswith(key) or f"{key}." in str(err.value) or f"{key}," in str(err.value), \
        (key, str(err.value))


# --- valid: every prior inside its range ------------------------------------------------------------------------

@st.composite
def symmetric_pair(draw, limit: float = 0.99) -> tuple[dict, dict]:
    a = draw(_num(0.0, 0.7))
    b = draw(_num(0.0, min(0.7, math.sqrt(limit**2 - a * a))))
    lo_a, lo_b = draw(_num(-a, a)), draw(_num(-b, b))
    ea = {"uniform": [lo_a, a]} if lo_a < a else round(a, 6)
    eb = {"uniform": [lo_b, b]} if lo_b < b else round(b, 6)
    return ea, eb


@st.composite
def positive_prior(draw, lo: float, hi: float, kinds: tuple[str, ...] = ("uniform", "fixed", "normal", "truncnormal")):
    a = draw(_num(lo, hi))
    kind = draw(st.sampled_from(kinds))
    if kind == "fixed":
        return a
    if kind == "normal":
        return {"normal": [a, a / Z * draw(_num(0.0, 0.99))]}
    b = draw(_num(a + 1e-3, hi + 1.0))
    return {"uniform": [a, b]} if kind == "uniform" else {"truncnormal": [(a + b) / 2, draw(_num(0.01, 2.0)), a, b]}


@st.composite
def valid_edits(draw) -> dict:
    edits: dict = {}
    for prefix in ELLIPTICITY:
        edits[f"{prefix}.e1"], edits[f"{prefix}.e2"] = draw(symmetric_pair())
    edits["lens.shear.gamma1"], edits["lens.shear.gamma2"] = draw(symmetric_pair())
    for prefix in SERSIC:
        edits[f"{prefix}.R_sersic"] = draw(positive_prior(0.01, 2.0))
        edits[f"{prefix}.n_sersic"] = {"uniform": sorted(draw(st.lists(_num(0.3, 7.9), min_size=2, max_size=2,
                                                                      unique=True)))}
        mag = draw(_num(10.0, 30.0))
        edits[f"{prefix}.magnitude"] = {"uniform": [mag, mag + draw(_num(0.1, 3.0))]}
    for key in ("lens.main.center_x", "lens.main.center_y", "lens.source.center_x", "lens.source.center_y"):
        r = draw(_num(0.0, HALF_FOV * 0.95))
        edits[key] = {"uniform": [-r, r]} if r > 0 else 0.0
    # θE, like z and γ, needs a bounded prior (lensinfer.config: it must lie in [1e-3, 10])
    edits["lens.main.theta_E"] = draw(positive_prior(0.05, 2.0, ("uniform", "fixed", "truncnormal")))
    edits["datasets.test.population.gamma_values"] = draw(st.lists(_num(*GRID), min_size=1, max_size=4))
    edits["datasets.train.population.n_sub"] = {"randint": [0, draw(st.integers(1, 40))]}
    return edits


@FEW
@given(valid_edits())
def test_every_valid_config_passes_the_workflow_validation(edits):
    cfg = _apply(edits)
    validate_config(cfg, ROOT)  # raises on any problem
    assert cfg["train"]["weight_decay"] == 1e-5 and cfg["renderer"]["backend"] == "lenstronomy"  # schema defaults
    assert cfg["lens"]["source"]["R_sersic"] == edits["lens.source.R_sersic"]  # the drawn values are what was checked


# --- a few of each through the user's command: snakemake -n -------------------------------------------------------

def _dry_run(tmp: Path, cfg: dict) -> subprocess.CompletedProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp),
                           "--configfile", str(tmp / "config.yaml"), "-n"], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each example is a snakemake run
@given(valid_edits())
def test_valid_configs_pass_snakemake_dry_run(tmp_path_factory, edits):
    wd = tmp_path_factory.mktemp("valid")
    proc = _dry_run(wd, _apply(edits))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "simulate_shard" in proc.stdout + proc.stderr


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each example is a snakemake run
@given(INVALID)
def test_invalid_configs_fail_snakemake_before_any_job(tmp_path_factory, case):
    key, edits = case
    cfg = _apply(edits)
    if key == "observations.mock.population.gamma":
        cfg["observations"]["mock"]["population"] = {"profile": "EPL", "n_sub": {"randint": [0, 5]},
                                                     "gamma": edits[key]}
    wd = tmp_path_factory.mktemp("invalid")
    proc = _dry_run(wd, cfg)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"invalid configuration: {key}" in out, out[-3000:]
    assert not (wd / "results").exists() and not (wd / "logs").exists()
