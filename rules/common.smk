# Config validation and helpers shared by the stage rules.
import functools
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Jobs import this checkout's library (src/) whatever environment runs them (venv, conda env, cluster node).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
)
# numba (lenstronomy EPL_NUMBA) caches compiled code here instead of read-only site-packages.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".numba_cache").resolve()))

from lensinfer.config import (
    ConfigError,
    check_config,
    dataset_shards,
    observation_lenses,
)  # noqa: E402

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    check_config(config, base_dir=".")
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

ESTIMATOR = "nre"
DATASETS = sorted(config["datasets"])
LENSES = observation_lenses(config)
CURVE_DATASETS = sorted(
    {config["calibrate"]["kde_dataset"], config["calibrate"]["coverage_dataset"]}
    | set(config["inference"]["cdm_datasets"])
)


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",
    lens="|".join(l.replace("+", r"\+").replace(".", r"\.") for l in LENSES),


SIM_SECTIONS = (
    "seed",
    "cosmology",
    "instrument",
    "renderer",
    "lens",
    "subhalos",
    "storage",
)


def canonical(value):
    """A copy with mapping keys sorted at every level: params compare equal however the YAML orders its keys."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


@functools.lru_cache(maxsize=None)
def simulation_params_of(dataset):
    return canonical(
        {k: config[k] for k in SIM_SECTIONS}
        | {"datasets": {dataset: config["datasets"][dataset]}}
    )


def simulation_params(wildcards):
    """Everything a shard depends on: a change of any of these reruns the simulation (cached per dataset)."""
    return simulation_params_of(wildcards.dataset)


def mock_params(wildcards):
    """Everything the mock observations depend on."""
    return canonical(
        {k: config[k] for k in SIM_SECTIONS} | {"observations": config["observations"]}
    )


COSMOS_DIR = config["lens"]["source"].get("catalog_dir", "resources/cosmos_catalog")
USE_COSMOS = config["lens"]["source"]["type"] == "cosmos"


def cosmos_download_marker(wildcards):
    """The verified-download record when the config asks lensinfer to fetch the COSMOS sample."""
    return (
        [f"{COSMOS_DIR}/lensinfer_verified.json"]
        if "download" in config["lens"]["source"]
        else []
    )


def cosmos_prepared(wildcards):
    """The warmed COSMOS cache, for every job that draws COSMOS sources."""
    return ["results/cosmos/prepared.json"] if USE_COSMOS else []


def shards_of(wildcards):
    return expand(
        "results/sims/{dataset}/shard_{shard}.zarr",
        dataset=wildcards.dataset,
        shard=dataset_shards(config, wildcards.dataset),
    )


def merged(dataset):
    return {
        "manifest": f"results/data/{dataset}/manifest.json",
        "table": f"results/data/{dataset}/table.zarr",
        "stats": f"results/data/{dataset}/stats.json",
        "masks": f"results/data/{dataset}/masks.zarr",
    }


def raw_frame(wildcards):
    source = config["observations"]["source"]
    if source == "local":
        entry = next(
            e
            for e in config["observations"]["lenses"]
            if not isinstance(e, str) and e["name"] == wildcards.lens
        )
        return str(Path(config["observations"]["local_dir"]) / entry["file"])
    return f"results/observations/raw/{wildcards.lens}/science.fits"


def all_shards():
    """Every shard: they are the data store the merged manifests point to, so a deleted one is regenerated."""
    return [
        f"results/sims/{d}/shard_{i}.zarr"
        for d in DATASETS
        for i in dataset_shards(config, d)
    ]


def all_targets():
    return [
        *all_shards(),
        f"results/models/{ESTIMATOR}/model.pt",
        f"results/calibration/{ESTIMATOR}/thresholds.json",
        f"results/inference/{ESTIMATOR}/summary.json",
        *expand(
            "results/inference/{est}/cdm_{dataset}.json",
            est=ESTIMATOR,
            dataset=config["inference"]["cdm_datasets"],
        ),
        *plot_targets(),
    ]


def plot_targets():
    return expand(
        "results/plots/{name}.png",
        name=["training", "examples", "observations", "gamma_curves", "coverage"],
    )
