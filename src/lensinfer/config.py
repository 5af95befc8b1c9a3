"""Configuration checks beyond the JSON schema, and helpers the workflow uses to expand the DAG.

The schema (``schemas/config.schema.yaml``) checks types, unknown keys and fills defaults. This module checks what
a schema cannot: that priors are well formed with low < high, that redshift and slope priors lie in their
physical ranges, that datasets named by other sections exist, that files exist, and that the inference grid lies
inside the training prior. Every error names the config key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from .simulate.priors import PriorError, check_prior, prior_bounds

__all__ = ["ConfigError", "check_config", "iter_priors", "dataset_shards", "observation_lenses", "load_config"]


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
    if obs["source"] == "mock" and "population" not in obs["mock"]:
        raise ConfigError("observations.mock.population: required for source 'mock'")


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
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    schema = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
    validate(config, str(schema))
    check_config(config, Path(path).resolve().parent.parent)
    return config
