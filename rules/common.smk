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
    consumed_datasets,
    dataset_shards,
    observation_lenses,
)  # noqa: E402

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    check_config(config, base_dir=".")
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

# Estimators of this run (config `estimator`); γ-curve stages (curves, calibration, CDM tests, γ figures) run for the
# NRE and for an NPE whose flow targets include the population slope gamma_pop.
ESTIMATORS = ["nre", "npe"] if config["estimator"] == "both" else [config["estimator"]]
FLOW_TARGETS = list(config["flow"]["targets"])
GAMMA_ESTIMATORS = [e for e in ESTIMATORS if e == "nre" or "gamma_pop" in FLOW_TARGETS]
POINT_SOURCE = bool(config["lens"].get("point_source"))
DIAGNOSTICS_DATASET = config["flow"].get(
    "diagnostics_dataset", config["train"]["val_dataset"]
)
DATASETS = sorted(config["datasets"])
LENSES = observation_lenses(config)
CURVE_DATASETS = sorted(
    {config["calibrate"]["kde_dataset"], config["calibrate"]["coverage_dataset"]}
    | set(config["inference"]["cdm_datasets"])
)


wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",
    est="nre|npe",
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


# the training γ prior: the NPE posterior divided by it gives curves comparable with the NRE's likelihood ratios
GAMMA_PRIOR = canonical(
    config["datasets"][config["train"]["dataset"]]["population"].get("gamma")
)


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


# The warmed COSMOS cache, for every job that draws COSMOS sources (a static list: no per-job input function).
COSMOS_PREPARED = ["results/cosmos/prepared.json"] if USE_COSMOS else []


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
    """Every shard: they are the data store the merged manifests point to, so a deleted one is regenerated
    (Snakemake does not rerun a finished job for a missing input unless that input is itself a target).
    """
    return [
        f"results/sims/{d}/shard_{i}.zarr"
        for d in consumed_datasets(config)  # a dataset no stage reads is not simulated
        for i in dataset_shards(config, d)
    ]


def all_targets():
    return [
        *all_shards(),
        *expand("results/models/{est}/model.pt", est=ESTIMATORS),
        *expand("results/inference/{est}/summary.json", est=ESTIMATORS),
        *expand("results/calibration/{est}/thresholds.json", est=GAMMA_ESTIMATORS),
        *expand(
            "results/inference/{est}/cdm_{dataset}.json",
            est=GAMMA_ESTIMATORS,
            dataset=config["inference"]["cdm_datasets"],
        ),
        *plot_targets(),
    ]


def plot_targets():
    """Figures of the run: data figures once, training and γ figures per estimator, NPE diagnostics, comparison."""
    names = ["examples", "observations"]
    names += [f"{est}/training" for est in ESTIMATORS]
    names += [
        f"{est}/{n}" for est in GAMMA_ESTIMATORS for n in ("gamma_curves", "coverage")
    ]
    if "npe" in ESTIMATORS:
        names += [f"npe/{n}" for n in NPE_DIAGNOSTIC_PLOTS]
        if POINT_SOURCE:
            names.append("npe/derived")
    if len(GAMMA_ESTIMATORS) == 2:
        names.append("estimator_comparison")
    return expand("results/plots/{name}.png", name=names)


NPE_DIAGNOSTIC_PLOTS = ("truth_vs_prediction", "residuals", "tarp", "sbc", "corner")
