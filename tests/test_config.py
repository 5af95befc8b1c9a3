"""Schema and semantic validation: bad configs fail early with the key and the allowed values."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from lensinfer.config import ConfigError, check_config, load_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _validated(cfg):
    cfg = copy.deepcopy(cfg)
    validate(cfg, SCHEMA)
    check_config(cfg, ROOT)
    return cfg


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg["train"]["weight_decay"] == 1e-5  # default filled from the schema
    assert cfg["inference"]["grid"]["n"] >= 10


def test_paper_config_is_the_published_run():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    assert cfg["instrument"]["pixel_scale"] == 0.04 and cfg["instrument"]["num_pix"] == 100
    assert cfg["renderer"]["epl_model"] in ("EPL", "EPL_NUMBA")
    train = cfg["datasets"]["train"]
    assert train["n_shards"] * train["shard_size"] == 5_000_000
    assert train["population"]["gamma"] == {"uniform": [1.1, 2.9]}
    assert train["population"]["n_sub"] == {"randint": [0, 3000]}
    assert cfg["subhalos"]["log10_mass"] == [7.0, 10.0]
    assert cfg["model"]["depth"] == "50" and cfg["train"]["batch_size"] == 1000


def test_unknown_key_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["train"]["learning_rate"] = 0.1
    with pytest.raises(Exception, match="learning_rate"):
        _validated(cfg)


def test_wrong_type_is_named(raw):
    cfg = copy.deepcopy(raw)
    cfg["instrument"]["num_pix"] = "fifty"
    with pytest.raises(Exception, match="fifty"):
        _validated(cfg)


def test_enum_lists_allowed_values(raw):
    cfg = copy.deepcopy(raw)
    cfg["model"]["depth"] = "101"
    with pytest.raises(Exception, match="small"):
        _validated(cfg)


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("lens", "main", "theta_E"), {"uniform": [1.3, 0.9]}, r"lens\.main\.theta_E\.uniform: need low < high"),
        (("lens", "main", "gamma"), {"uniform": [0.5, 2.0]}, r"lens\.main\.gamma: the main-lens slope must lie in"),
        (("datasets", "train", "population", "gamma"), {"uniform": [1.1, 3.5]}, r"datasets\.train\.population\.gamma"),
        (("lens", "z_source"), {"uniform": [0.1, 0.2]}, r"lens\.z_source"),
        (("lens", "source", "e1"), {"gaussian": [0, 1]}, r"(?s)uniform.*\['lens'\]\['source'\]"),
        (("train", "val_dataset"), "nope", r"train\.val_dataset: dataset 'nope' is not defined"),
        (("instrument", "psf"), {"type": "pixel", "path": "missing.fits"}, r"instrument\.psf\.path: file 'missing\.fits' does not exist"),
        (("inference", "grid"), {"low": 1.0, "high": 2.9, "n": 150}, r"inference\.grid"),
    ],
)
def test_semantic_errors_name_the_key(raw, path, value, match):
    cfg = copy.deepcopy(raw)
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(Exception, match=match):
        _validated(cfg)


def test_local_observations_need_existing_folder(raw, tmp_path):
    cfg = copy.deepcopy(raw)
    cfg["observations"] = {"source": "local", "local_dir": str(tmp_path / "nowhere"), "lenses": [{"name": "J0946+1006", "file": "a.fits"}]}
    with pytest.raises(ConfigError, match="observations.local_dir"):
        _validated(cfg)


@pytest.mark.parametrize(
    "train,match",
    [
        ({"select": "epoch"}, r"train\.select_epoch: required when train\.select is 'epoch'"),
        ({"select": "epoch", "select_epoch": 99, "max_epochs": 75}, r"train\.select_epoch: 99 exceeds train\.max_epochs"),
        ({"select": "last"}, r"(?s)'last' is not one of.*best"),
    ],
)
def test_model_selection_errors_name_the_key(raw, train, match):
    cfg = copy.deepcopy(raw)
    cfg["train"].update(train)
    with pytest.raises(Exception, match=match):
        _validated(cfg)


def test_paper_config_selects_the_epoch_20_model(root):
    cfg = load_config(root / "config" / "paper.yaml")
    assert cfg["train"]["select"] == "epoch" and cfg["train"]["select_epoch"] == 20  # the reference's model


@pytest.mark.parametrize("key,value", [("peak_threshold", 0), ("peak_smoothing", -1.0), ("peak_smoothing", "psf")])
def test_peak_count_settings_are_checked_and_named(raw, key, value):
    """inference.misspecification.peak_threshold / peak_smoothing (the peak count, issue 17): a non-positive or
    non-numeric value is refused at validation — before any job runs — with the key in the message."""
    cfg = copy.deepcopy(raw)
    cfg["inference"].setdefault("misspecification", {})[key] = value
    with pytest.raises(Exception, match=key):
        _validated(cfg)
    cfg["inference"]["misspecification"][key] = None if key == "peak_smoothing" else 3.0
    assert _validated(cfg)["inference"]["misspecification"][key] == cfg["inference"]["misspecification"][key]


def test_light_traces_mass_needs_a_lens_light(raw):
    """lens.light_traces_mass without a lens light is refused with the key named; with one it validates."""
    cfg = copy.deepcopy(raw)
    cfg["lens"]["light_traces_mass"] = True
    if cfg["lens"].get("lens_light"):
        _validated(cfg)
    cfg["lens"]["lens_light"] = None
    with pytest.raises(ConfigError, match=r"lens\.light_traces_mass"):
        _validated(cfg)
    cfg["lens"]["light_traces_mass"] = "yes"
    with pytest.raises(Exception, match="light_traces_mass"):
        _validated(cfg)
