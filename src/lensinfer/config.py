"""Configuration checks beyond the JSON schema, and helpers the workflow uses to expand the DAG.

The schema (``schemas/config.schema.yaml``) checks types, unknown keys and fills defaults. This module checks what
a schema cannot: that priors are well formed with low < high, that redshift and slope priors lie in their
physical ranges, that datasets named by other sections exist, that files exist, and that the inference grid lies
inside the training prior. Every error names the config key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .simulate.priors import PriorError, check_prior, prior_bounds

__all__ = ["ConfigError", "check_config", "iter_priors", "dataset_shards", "observation_lenses", "load_config",
           "expand_cdm_sweep", "cdm_sweep_name", "validate_config", "effective_bounds", "consumed_datasets"]


class ConfigError(ValueError):
    """An invalid configuration; the message names the key."""


def iter_priors(config: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(dotted key, spec) of every prior in the config."""
    lens = config["lens"]
    for k in ("z_lens", "z_source"):
        yield f"lens.{k}", lens[k]
    for k, v in lens["main"].items():
        yield f"lens.main.{k}", v
    for section in ("shear", "multipoles", "lens_light"):
        for k, v in (lens.get(section) or {}).items():
            if k not in ("type", "colors"):
                yield f"lens.{section}.{k}", v
    if lens.get("los"):
        yield "lens.los.delta_los", lens["los"]["delta_los"]
    source = lens["source"]
    keys = ("center_x", "center_y") if source.get("type") == "cosmos" else [k for k in source if k not in ("type", "colors")]
    for k in keys:
        if k in source:
            yield f"lens.source.{k}", source[k]
    for k in ("e1", "e2"):
        yield f"subhalos.{k}", config["subhalos"][k]
    for name, ds in config["datasets"].items():
        pop = ds["population"]
        for k in ("gamma", "n_sub"):
            if k in pop:
                yield f"datasets.{name}.population.{k}", pop[k]
    for i, band in enumerate(config["instrument"].get("bands") or []):
        if isinstance((band.get("psf") or {}).get("fwhm"), (dict, int, float)):
            yield f"instrument.bands[{i}].psf.fwhm", band["psf"]["fwhm"]
    for component in ("lens_light", "source", "point_source"):
        section = lens.get(component) or {}
        if component == "point_source" and section:
            yield "lens.point_source.magnitude", section["magnitude"]
        for band, spec in (section.get("colors") or {}).items():
            yield f"lens.{component}.colors.{band}", spec
    mock = config.get("observations", {}).get("mock", {})
    if "population" in mock:
        for k in ("gamma", "n_sub"):
            if k in mock["population"]:
                yield f"observations.mock.population.{k}", mock["population"][k]


def _within(key: str, spec: Any, low: float, high: float, what: str) -> None:
    lo, hi = prior_bounds(spec)
    if lo < low or hi > high:
        raise ConfigError(f"{key}: {what} must lie in [{low}, {high}]; the prior {spec!r} spans [{lo}, {hi}]")


def check_config(config: Mapping[str, Any], base_dir: str | Path = ".") -> None:
    """Raise :class:`ConfigError` on the first semantic problem (after schema validation)."""
    for key, spec in iter_priors(config):
        try:
            check_prior(spec, key)
        except PriorError as exc:
            raise ConfigError(str(exc)) from None
    lens = config["lens"]
    _within("lens.z_lens", lens["z_lens"], 1e-3, 10.0, "the lens redshift")
    _within("lens.z_source", lens["z_source"], 1e-3, 20.0, "the source redshift")
    if prior_bounds(lens["z_source"])[0] <= prior_bounds(lens["z_lens"])[1]:
        raise ConfigError("lens.z_source: the source prior must lie entirely above the lens prior (z_source > z_lens)")
    _within("lens.main.gamma", lens["main"]["gamma"], 1.01, 2.99, "the main-lens slope")
    if "sigma_v" in lens["main"]:
        _within("lens.main.sigma_v", lens["main"]["sigma_v"], 1.0, 2000.0, "the velocity dispersion (km/s)")
    else:
        _within("lens.main.theta_E", lens["main"]["theta_E"], 1e-3, 10.0, "the Einstein radius (arcsec)")
    if lens.get("light_traces_mass") and not lens.get("lens_light"):
        raise ConfigError("lens.light_traces_mass: true needs a lens light (lens.lens_light is null or missing)")
    lo_m, hi_m = config["subhalos"]["log10_mass"]
    if not lo_m < hi_m:
        raise ConfigError(f"subhalos.log10_mass: need low < high, got {[lo_m, hi_m]}")
    for name, ds in config["datasets"].items():
        pop = ds["population"]
        key = f"datasets.{name}.population"
        if pop["profile"] == "EPL" and "gamma" not in pop and "gamma_values" not in pop:
            raise ConfigError(f"{key}: an EPL population needs 'gamma' (a prior) or 'gamma_values' (a list)")
        if "gamma" in pop and "gamma_values" in pop:
            raise ConfigError(f"{key}: give either 'gamma' or 'gamma_values', not both")
        if "gamma" in pop:
            _within(f"{key}.gamma", pop["gamma"], 1.01, 2.99, "the subhalo population slope γ")
        lo_n, _ = prior_bounds(pop["n_sub"])
        if lo_n < 0:
            raise ConfigError(f"{key}.n_sub: the number of subhalos cannot be negative")
    names = set(config["datasets"])
    refs = {
        "train.dataset": config["train"]["dataset"],
        "train.val_dataset": config["train"]["val_dataset"],
        "calibrate.kde_dataset": config["calibrate"]["kde_dataset"],
        "calibrate.coverage_dataset": config["calibrate"]["coverage_dataset"],
    }
    refs.update({f"inference.cdm_datasets[{i}]": d for i, d in enumerate(config["inference"]["cdm_datasets"])})
    if (config.get("flow") or {}).get("diagnostics_dataset") is not None:
        refs["flow.diagnostics_dataset"] = config["flow"]["diagnostics_dataset"]
    for key, name in refs.items():
        if name not in names:
            raise ConfigError(f"{key}: dataset {name!r} is not defined; defined datasets: {sorted(names)}")
    train_pop = config["datasets"][config["train"]["dataset"]]["population"]
    if "gamma" not in train_pop:
        raise ConfigError(f"datasets.{config['train']['dataset']}.population.gamma: the training set needs a γ prior")
    cov_pop = config["datasets"][config["calibrate"]["coverage_dataset"]]["population"]
    if "gamma_values" not in cov_pop:
        raise ConfigError(f"calibrate.coverage_dataset: dataset {config['calibrate']['coverage_dataset']!r} needs "
                          "fixed 'gamma_values' to measure coverage")
    grid = config["inference"]["grid"]
    lo, hi = prior_bounds(train_pop["gamma"])
    if not (grid["low"] < grid["high"]) or grid["low"] < lo - 1e-9 or grid["high"] > hi + 1e-9:
        raise ConfigError(f"inference.grid: [low, high] = [{grid['low']}, {grid['high']}] must be an interval inside "
                          f"the training γ prior [{lo}, {hi}]")
    train = config["train"]
    if train.get("select") == "epoch":  # the model after select_epoch epochs (the reference's epoch-20 checkpoint)
        if train.get("select_epoch") is None:
            raise ConfigError("train.select_epoch: required when train.select is 'epoch' (the reference's model: 20)")
        if train["select_epoch"] > train["max_epochs"]:
            raise ConfigError(f"train.select_epoch: {train['select_epoch']} exceeds train.max_epochs "
                              f"({train['max_epochs']})")
    if config["train"]["batch_size"] > config["datasets"][config["train"]["dataset"]]["n_shards"] * \
            config["datasets"][config["train"]["dataset"]]["shard_size"]:
        raise ConfigError("train.batch_size: larger than the training set")
    los = lens.get("los")
    if los:
        if not los["m_min"] < los["m_max"]:
            raise ConfigError(f"lens.los: need m_min < m_max, got {los['m_min']} and {los['m_max']}")
        if prior_bounds(los["delta_los"])[0] < 0:
            raise ConfigError("lens.los.delta_los: the mass-function normalisation cannot be negative")
    source = lens["source"]
    if source.get("type") == "cosmos":
        for k in ("center_x", "center_y"):
            if k not in source:
                raise ConfigError(f"lens.source.{k}: required for COSMOS sources (reference: {{uniform: [-0.1, 0.1]}})")
        catalog = Path(base_dir) / source["catalog_dir"]
        if "download" not in source and not catalog.is_dir():
            raise ConfigError(f"lens.source.catalog_dir: folder {source['catalog_dir']!r} does not exist "
                              "(or add lens.source.download to fetch the COSMOS 23.5 sample)")
        lists = Path(base_dir) / source.get("split_lists", "resources/cosmos")
        if not (lists / "bad_galaxies.csv").exists() or not (lists / "val_galaxies.csv").exists():
            raise ConfigError(f"lens.source.split_lists: {str(lists)!r} lacks bad_galaxies.csv / val_galaxies.csv")
    psf = config["instrument"]["psf"]
    if psf["type"] == "gaussian" and "fwhm" not in psf:
        raise ConfigError("instrument.psf.fwhm: required for a gaussian PSF")
    if psf["type"] == "pixel":
        if "path" not in psf:
            raise ConfigError("instrument.psf.path: required for a pixel PSF")
        if not (Path(base_dir) / psf["path"]).exists():
            raise ConfigError(f"instrument.psf.path: file {psf['path']!r} does not exist")
    _check_bands(config, base_dir)
    obs = config["observations"]
    if obs["source"] == "local":
        if "local_dir" not in obs:
            raise ConfigError("observations.local_dir: required when observations.source is 'local'")
        if not (Path(base_dir) / obs["local_dir"]).is_dir():
            raise ConfigError(f"observations.local_dir: folder {obs['local_dir']!r} does not exist")
        if not obs.get("lenses"):
            raise ConfigError("observations.lenses: list the lenses (name, file, ra/dec or SLACS name) for source 'local'")
        for i, entry in enumerate(obs["lenses"]):
            if isinstance(entry, str) or "file" not in entry:
                raise ConfigError(f"observations.lenses[{i}].file: required for source 'local'")
            if not (Path(base_dir) / obs["local_dir"] / entry["file"]).exists():
                raise ConfigError(f"observations.lenses[{i}].file: {entry['file']!r} not found in {obs['local_dir']!r}")
    if obs["source"] == "mast" and not obs.get("lenses"):
        raise ConfigError("observations.lenses: list the lenses to download for source 'mast'")
    if obs.get("preprocess") == "reference" and config["instrument"].get("bands"):
        raise ConfigError("observations.preprocess: 'reference' is the published single-band HST input; a multi-band "
                          "instrument (instrument.bands) needs 'calibrated'")
    if obs["source"] == "mock" and "population" not in obs["mock"]:
        raise ConfigError("observations.mock.population: required for source 'mock'")
    _check_physical_ranges(config)


#: a normal prior may put at most this probability beyond each bound of its parameter's physical range
NORMAL_TAIL = 1e-6
_Z_TAIL = 4.753424308822899  # scipy.stats.norm.isf(NORMAL_TAIL), fixed here so that the check needs no scipy


def effective_bounds(spec: Any) -> tuple[float, float]:
    """The range a prior's draws cover: its support, but mean ± 4.75 σ for a normal (all but 10⁻⁶ per side)."""
    if isinstance(spec, Mapping) and "normal" in spec:
        mean, sd = (float(a) for a in spec["normal"])
        return mean - _Z_TAIL * sd, mean + _Z_TAIL * sd
    return prior_bounds(spec)


def _positive(key: str, spec: Any, what: str, high: float = float("inf")) -> None:
    lo, hi = effective_bounds(spec)
    if not (lo > 0 and hi <= high):
        limit = f"in (0, {high}]" if high < float("inf") else "> 0"
        raise ConfigError(f"{key}: {what} must be {limit}; the prior {spec!r} reaches [{lo:.4g}, {hi:.4g}]"
                          + (" (a normal prior counts by mean ± 4.75 σ; use truncnormal)" if "normal" in str(spec) else ""))


def _modulus(prefix: str, section: Mapping[str, Any], names: tuple[str, str], what: str) -> None:
    """Both components and the modulus √(a² + b²) of a 2-vector prior (ellipticity, shear) stay below 1."""
    reach = []
    for n in names:
        lo, hi = effective_bounds(section[n])
        m = max(abs(lo), abs(hi))
        if not m < 1:
            raise ConfigError(f"{prefix}.{n}: the {what} component must satisfy |{n}| < 1; the prior {section[n]!r} "
                              f"reaches {m:.4g}")
        reach.append(m)
    if not float(np.hypot(*reach)) < 1:
        raise ConfigError(f"{prefix}.{names[0]}, {prefix}.{names[1]}: the {what} modulus √({names[0]}² + {names[1]}²) "
                          f"must stay < 1; the priors reach {float(np.hypot(*reach)):.4g} (|{names[0]}| ≤ {reach[0]:.4g}, "
                          f"|{names[1]}| ≤ {reach[1]:.4g})")


def _check_physical_ranges(config: Mapping[str, Any]) -> None:
    """Every prior against the physical range of its parameter (issue 17): ellipticities and shear |e| < 1,
    Sérsic radii > 0 and indices in (0, 8], centres inside the field of view, fixed γ values inside the inference
    grid, mock-population priors like the datasets', instrument numbers finite. A normal prior counts by
    mean ± 4.75 σ (:data:`NORMAL_TAIL`)."""
    lens = config["lens"]
    inst = config["instrument"]
    _modulus("lens.main", lens["main"], ("e1", "e2"), "ellipticity")
    _modulus("subhalos", config["subhalos"], ("e1", "e2"), "ellipticity")
    if lens.get("shear"):
        _modulus("lens.shear", lens["shear"], ("gamma1", "gamma2"), "external shear")
    half_fov = 0.5 * float(inst["num_pix"]) * float(inst["pixel_scale"])
    for component in ("lens_light", "source"):
        section = lens.get(component) or {}
        if section.get("type", "sersic") != "sersic" or not section:
            continue
        key = f"lens.{component}"
        _modulus(key, section, ("e1", "e2"), "ellipticity")
        _positive(f"{key}.R_sersic", section["R_sersic"], "the Sérsic half-light radius (arcsec)")
        _positive(f"{key}.n_sersic", section["n_sersic"], "the Sérsic index", high=8.0)
    for key, section in (("lens.main", lens["main"]), ("lens.source", lens["source"])):
        for c in ("center_x", "center_y"):
            if c in section:
                lo, hi = effective_bounds(section[c])
                if not max(abs(lo), abs(hi)) < half_fov:
                    raise ConfigError(f"{key}.{c}: the centre must stay inside the field of view (|{c}| < "
                                      f"{half_fov:g}″ = num_pix × pixel_scale / 2); the prior {section[c]!r} reaches "
                                      f"[{lo:.4g}, {hi:.4g}]")
    grid = config["inference"]["grid"]
    pops = [(f"datasets.{name}.population", ds["population"]) for name, ds in config["datasets"].items()]
    mock = (config.get("observations") or {}).get("mock") or {}
    if "population" in mock:
        pops.append(("observations.mock.population", mock["population"]))
        pop = mock["population"]
        if "gamma" in pop:
            _within("observations.mock.population.gamma", pop["gamma"], 1.01, 2.99, "the subhalo population slope γ")
        if prior_bounds(pop["n_sub"])[0] < 0:
            raise ConfigError("observations.mock.population.n_sub: the number of subhalos cannot be negative")
    for key, pop in pops:
        for i, g in enumerate(pop.get("gamma_values") or []):
            if not grid["low"] <= g <= grid["high"]:
                raise ConfigError(f"{key}.gamma_values[{i}]: γ = {g} lies outside the inference grid "
                                  f"inference.grid [{grid['low']}, {grid['high']}]; its curves could not contain the truth")
    numbers = [(f"instrument.{k}", inst[k]) for k in ("exposure_time", "sky_brightness", "read_noise", "ccd_gain",
                                                       "magnitude_zero_point", "pixel_scale") if k in inst]
    numbers += [(f"instrument.bands[{i}].{k}", b[k]) for i, b in enumerate(inst.get("bands") or [])
                for k in ("exposure_time", "sky_brightness", "read_noise", "ccd_gain", "magnitude_zero_point") if k in b]
    numbers += [(f"inference.grid.{k}", grid[k]) for k in ("low", "high")]
    for key, value in numbers:
        if not np.isfinite(float(value)):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")


def _check_bands(config: Mapping[str, Any], base_dir: str | Path) -> None:
    """Multi-band instrument, colours and point source: names unique and consistent, PSFs complete."""
    inst = config["instrument"]
    bands = inst.get("bands") or []
    names = [str(b["name"]) for b in bands]
    lens = config["lens"]
    colored = [c for c in ("lens_light", "source", "point_source") if (lens.get(c) or {}).get("colors")]
    if not bands:
        if "reference_band" in inst:
            raise ConfigError("instrument.reference_band: only meaningful with instrument.bands")
        if colored:
            raise ConfigError(f"lens.{colored[0]}.colors: colours need a multi-band instrument (instrument.bands)")
    else:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"instrument.bands: band names must be unique; repeated: {dupes}")
        ref = str(inst.get("reference_band") or names[0])
        if ref not in names:
            raise ConfigError(f"instrument.reference_band: {ref!r} is not one of the bands {names}")
        for i, band in enumerate(bands):
            psf = band.get("psf") or inst["psf"]
            key = f"instrument.bands[{i}].psf" if band.get("psf") else "instrument.psf"
            if psf["type"] == "gaussian":
                if "fwhm" not in psf:
                    raise ConfigError(f"{key}.fwhm: required for a gaussian PSF")
                if prior_bounds(psf["fwhm"])[0] <= 0:
                    raise ConfigError(f"{key}.fwhm: the seeing FWHM must be > 0; the prior {psf['fwhm']!r} reaches "
                                      f"{prior_bounds(psf['fwhm'])[0]}")
            elif "path" not in psf:
                raise ConfigError(f"{key}.path: required for a pixel PSF")
            elif not (Path(base_dir) / psf["path"]).exists():
                raise ConfigError(f"{key}.path: file {psf['path']!r} does not exist")
        for component in colored:
            colors = lens[component]["colors"]
            unknown = sorted(set(colors) - set(names))
            if unknown:
                raise ConfigError(f"lens.{component}.colors: unknown band(s) {unknown}; bands: {names}")
            if ref in colors and prior_bounds(colors[ref]) != (0.0, 0.0):
                raise ConfigError(f"lens.{component}.colors.{ref}: the reference band's colour must be 0 "
                                  "(magnitudes are given in the reference band)")
    if lens.get("point_source") and config.get("renderer", {}).get("backend", "lenstronomy") != "lenstronomy":
        raise ConfigError("lens.point_source: lensed point sources are rendered by the lenstronomy backend only "
                          "(renderer.backend: lenstronomy)")


def cdm_sweep_name(base: str, c_factor: float) -> str:
    """Name of the dataset of a CDM sweep: the base dataset with its concentration multiplier, e.g. ``test_nfw_c0.4``."""
    return f"{base}_c{float(c_factor):g}"


def expand_cdm_sweep(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Generate the datasets of ``inference.cdm_sweep`` (in place) and return the sweep as rows.

    For every base dataset (an NFW or TNFW population) and every multiplier c in ``c_factors`` a copy of the base with
    ``population.c_factor = c`` is added to ``datasets`` as :func:`cdm_sweep_name` (the base itself when its own
    ``c_factor`` is c) and to ``inference.cdm_datasets``: the paper's CDM comparison, c × {0.4, …, 10} for NFW and
    tNFW (spec/science.md §1.2, §5). Only the subhalo concentrations are scaled; the line-of-sight halos keep the plain
    DM14 concentration, as in the reference (:mod:`lensinfer.simulate.los`). Idempotent. Rows: ``dataset``, ``base``,
    ``profile``, ``c_factor``.
    """
    import copy

    sweep = (config.get("inference") or {}).get("cdm_sweep")
    if not sweep:
        return []
    datasets = config["datasets"]
    cdm = config["inference"].setdefault("cdm_datasets", [])
    rows = []
    for i, base in enumerate(sweep["datasets"]):
        key = f"inference.cdm_sweep.datasets[{i}]"
        if base not in datasets:
            raise ConfigError(f"{key}: dataset {base!r} is not defined; defined datasets: {sorted(datasets)}")
        pop = datasets[base]["population"]
        if pop["profile"] not in ("NFW", "TNFW"):
            raise ConfigError(f"{key}: dataset {base!r} has profile {pop['profile']!r}; a concentration sweep needs an "
                              "NFW or TNFW population")
        for c in sweep["c_factors"]:
            if float(c) == float(pop.get("c_factor", 1.0)):
                name = base
            else:
                name = cdm_sweep_name(base, c)
                generated = copy.deepcopy(datasets[base])
                generated["population"]["c_factor"] = float(c)
                if name in datasets and datasets[name] != generated:
                    raise ConfigError(f"{key}: the sweep dataset {name!r} (c_factor {c:g}) is already defined "
                                      "differently in datasets; rename it")
                datasets[name] = generated
            if name not in cdm:
                cdm.append(name)
            rows.append({"dataset": name, "base": base, "profile": pop["profile"], "c_factor": float(c)})
    return rows


def dataset_shards(config: Mapping[str, Any], dataset: str) -> list[int]:
    """Shard indices of a dataset."""
    return list(range(int(config["datasets"][dataset]["n_shards"])))


def observation_lenses(config: Mapping[str, Any]) -> list[str]:
    """Names of the lenses the observation branch produces."""
    from .observe.lenses import SLACS_REFERENCE_LENSES

    obs = config["observations"]
    if obs["source"] == "mock":
        return [spec.name for spec in SLACS_REFERENCE_LENSES[: obs["mock"]["n_lenses"]]]
    return [entry if isinstance(entry, str) else entry["name"] for entry in obs["lenses"]]


def load_config(path: str | Path) -> dict[str, Any]:
    """Load a YAML config and validate it like the workflow does (schema defaults + :func:`check_config`)."""
    import yaml

    config = yaml.safe_load(Path(path).read_text())
    validate_config(config, Path(path).resolve().parent.parent)
    return config


def validate_config(config: dict[str, Any], base_dir: str | Path = ".") -> None:
    """What the workflow runs on its config before any job (``rules/common.smk``): the JSON schema (filling in
    defaults, in place) and :func:`check_config`. Raises ``WorkflowError`` (schema) or :class:`ConfigError`."""
    from snakemake.utils import validate

    schema = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
    validate(config, str(schema))
    expand_cdm_sweep(config)
    check_config(config, base_dir)


def consumed_datasets(config: Mapping[str, Any]) -> list[str]:
    """The datasets some stage of this run reads (only these are simulated): training and validation sets; the
    calibration (``calibrate.kde_dataset``, ``coverage_dataset``) and CDM test sets (``inference.cdm_datasets``)
    when an estimator gives γ curves (the NRE, or an NPE whose ``flow.targets`` include gamma_pop); the NPE
    diagnostics set (``flow.diagnostics_dataset``, default ``train.val_dataset``) when the NPE runs."""
    estimators = ["nre", "npe"] if config["estimator"] == "both" else [config["estimator"]]
    flow = config.get("flow") or {}
    used = {config["train"]["dataset"], config["train"]["val_dataset"]}
    if "nre" in estimators or "gamma_pop" in list(flow.get("targets") or ["gamma_pop"]):
        used |= {config["calibrate"]["kde_dataset"], config["calibrate"]["coverage_dataset"],
                 *config["inference"]["cdm_datasets"]}
    if "npe" in estimators:
        used.add(flow.get("diagnostics_dataset") or config["train"]["val_dataset"])
    return sorted(used)
