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
    expand_cdm_sweep,
    observation_lenses,
)  # noqa: E402
from lensinfer.dag import (  # noqa: E402
    SHARDS_PER_BLOCK,
    block_count,
    block_regex,
    library_code_hash,
    single_regex,
)

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
# the CDM bands of the γ-curve figure: the listed CDM sets, plus the c × 1 sets of a concentration sweep
CDM_BANDS = list(config["inference"]["cdm_datasets"])
try:
    # inference.cdm_sweep: generated datasets (one per base dataset and multiplier), added to inference.cdm_datasets
    CDM_SWEEP = expand_cdm_sweep(config)
    check_config(config, base_dir=".")
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

CDM_BANDS += [
    r["dataset"]
    for r in CDM_SWEEP
    if r["c_factor"] == 1.0 and r["dataset"] not in CDM_BANDS
]

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
    # ten-shard jobs of simulate_shards: the complete tens of each dataset after shards 0-9 (lensinfer.dag)
    block=block_regex({d: config["datasets"][d]["n_shards"] for d in DATASETS}),


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


# flow keys that set how the trained posterior is sampled, not the training (rule train_flow leaves them out)
FLOW_SAMPLING_KEYS = ("n_samples", "diagnostics_dataset")

# the training γ prior: the NPE posterior divided by it gives curves comparable with the NRE's likelihood ratios
GAMMA_PRIOR = canonical(
    config["datasets"][config["train"]["dataset"]]["population"].get("gamma")
)


# Keys that do not change any image, left out of the shards' params so that editing them reruns no shard: where
# the COSMOS archive is fetched from and its checksum (the catalogue's content is the download record, an input),
# and the number of shards (a shard's seeds depend on (seed, dataset, shard) only: growing n_shards adds shards).
NOT_IMAGE_KEYS = {"lens": {"source": {"download": None}}, "dataset": {"n_shards": None}}


def without(section, drop):
    """A copy of the mapping ``section`` without the nested keys of ``drop`` (a tree of dicts ending in None)."""
    return {
        k: (
            without(v, drop[k])
            if isinstance(drop.get(k), dict) and isinstance(v, dict)
            else v
        )
        for k, v in section.items()
        if not (k in drop and drop[k] is None)
    }


@functools.lru_cache(maxsize=None)
def simulation_params_of(dataset):
    sections = without({k: config[k] for k in SIM_SECTIONS}, NOT_IMAGE_KEYS)
    return canonical(
        sections
        | {
            "datasets": {
                dataset: without(config["datasets"][dataset], NOT_IMAGE_KEYS["dataset"])
            }
        }
    )


def simulation_params(wildcards):
    """Everything a shard depends on: a change of any of these reruns the simulation (cached per dataset)."""
    return simulation_params_of(wildcards.dataset)


def mock_params(wildcards):
    """Everything the mock observations depend on (of `observations`, only its `mock` section: the preprocessing
    mode, MAST or local settings do not change the simulated frames)."""
    return canonical(
        without({k: config[k] for k in SIM_SECTIONS}, NOT_IMAGE_KEYS)
        | {"observations": {"mock": config["observations"]["mock"]}}
    )


COSMOS_DIR = config["lens"]["source"].get("catalog_dir", "resources/cosmos_catalog")
USE_COSMOS = config["lens"]["source"]["type"] == "cosmos"


COSMOS_DOWNLOAD = "download" in config["lens"]["source"]
# What the COSMOS cache is built from: the download_cosmos record when lensinfer fetches the catalogue (the folder
# does not exist before), else the user's catalogue folder itself.
COSMOS_CATALOG = ["results/cosmos/download.json"] if COSMOS_DOWNLOAD else [COSMOS_DIR]


def check_cosmos_record():
    """A catalogue downloaded earlier must match a checksum added to the config later (checked here, without a
    rerun: the record holds the archive's sha256)."""
    import json

    want = config["lens"]["source"].get("download", {}).get("sha256")
    record = Path(COSMOS_DIR) / "lensinfer_verified.json"
    if want and record.is_file():
        got = json.loads(record.read_text()).get("sha256")
        if got != want:
            raise WorkflowError(
                f"lens.source.download.sha256: the catalogue in {COSMOS_DIR} was downloaded from an archive with "
                f"sha256 {got}, not {want}; delete {COSMOS_DIR} to download it again"
            )


if USE_COSMOS and COSMOS_DOWNLOAD:
    check_cosmos_record()


# The warmed COSMOS cache, for every job that draws COSMOS sources (a static list: no per-job input function).
COSMOS_PREPARED = ["results/cosmos/prepared.json"] if USE_COSMOS else []


def psf_files():
    """The pixel-PSF files the renderer reads (instrument.psf.path and per-band PSFs)."""
    inst = config["instrument"]
    psfs = [inst.get("psf") or {}] + [
        b.get("psf") or {} for b in inst.get("bands") or []
    ]
    return sorted({p["path"] for p in psfs if p.get("type") == "pixel" and "path" in p})


# COSMOS galaxy split lists (train/val/test galaxies, lensinfer.simulate.sources.read_split_lists)
COSMOS_SPLIT_FILES = (
    [
        str(Path(config["lens"]["source"].get("split_lists", "resources/cosmos")) / f)
        for f in ("bad_galaxies.csv", "val_galaxies.csv")
    ]
    if USE_COSMOS
    else []
)
# Every file a simulation reads: the PSF, the COSMOS split lists and the prepared COSMOS catalogue.
SIMULATION_INPUTS = [*COSMOS_PREPARED, *psf_files(), *COSMOS_SPLIT_FILES]


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


# Shards of the single-shard rule (0-9 and the last incomplete ten of each dataset; the rest are simulate_shards').
SINGLE_SHARD = single_regex({d: config["datasets"][d]["n_shards"] for d in DATASETS})


def all_shards():
    """One shard of every simulation job: the shards are the data store the merged manifests point to, so a
    deleted one must be regenerated (Snakemake does not rerun a finished job for a missing input unless that input
    is itself a target), and a job whose target is any of its shards reruns when any of its outputs is missing.
    One target per job rather than per shard keeps the DAG cheap (bench/dag.py).
    """
    targets = []
    for d in consumed_datasets(config):  # a dataset no stage reads is not simulated
        n = int(config["datasets"][d]["n_shards"])
        blocks = range(1, block_count(n) + 1)
        # the first shard of each ten-shard job, and every shard the ten-shard jobs hold
        firsts = {SHARDS_PER_BLOCK * b for b in blocks}
        inside = {
            i
            for b in blocks
            for i in range(SHARDS_PER_BLOCK * b, SHARDS_PER_BLOCK * (b + 1))
        }
        targets += [
            f"results/sims/{d}/shard_{i}.zarr"
            for i in range(n)
            if i in firsts or i not in inside
        ]
    return targets


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
        "results/report/result.html",  # the report's front page (rules/report.smk)
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
    if CDM_SWEEP:
        names += [f"{est}/cdm_sweep" for est in GAMMA_ESTIMATORS]
    if len(GAMMA_ESTIMATORS) == 2:
        names.append("estimator_comparison")
    return expand("results/plots/{name}.png", name=names)


NPE_DIAGNOSTIC_PLOTS = ("truth_vs_prediction", "residuals", "tarp", "sbc", "corner")
