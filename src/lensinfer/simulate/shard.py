"""Simulate one shard of a dataset: draw every image's scene from its own seed, render, add noise, store.

Rendering order of the reference (spec §1.4): (1) the smooth lensed source without substructure or lens light
— the map on whose bright pixels subhalos are placed; (2) the full lens model: main lens + shear + multipoles +
subhalos + negative mass sheet; (3) source + lens light, PSF convolution, noise. Unlike the reference, no unused
κ map is computed and the sheet's mean convergence comes from the boundary deflection (Gauss's theorem).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from .. import __version__, physics
from ..data.store import ShardData, write_shard
from ..seeds import config_hash, image_rng, image_seeds
from .instrument import Instrument, add_noise, reference_zero_point
from .renderers import Renderer, make_renderer
from .priors import draw
from .los import LOS_COLUMNS, LineOfSight
from .sources import CosmosSource
from .bands import BandSet
from .scene import SUBHALO_COLUMNS, Scene, draw_macro, draw_subhalos, place_on_bright_pixels, subhalo_lens_kwargs

__all__ = ["population_of", "draw_scene", "simulate_image", "simulate_image_bands", "simulate_shard",
           "simulation_config_section", "source_catalog", "line_of_sight", "noiseless", "SimulationError"]

#: population columns appended after the macro-model columns
POPULATION_COLUMNS = ("global_index", "gamma_pop", "n_sub", "nms_kappa", "subhalo_mass_total")


def line_of_sight(config: Mapping[str, Any]) -> LineOfSight | None:
    """The DG19 line-of-sight model when ``lens.los`` is enabled, else None."""
    los_cfg = config["lens"].get("los")
    return LineOfSight(los_cfg, config["cosmology"]) if los_cfg and los_cfg.get("enabled", True) else None


def source_catalog(config: Mapping[str, Any], split: str) -> CosmosSource | None:
    """The COSMOS catalog of a split when the config asks for COSMOS sources, else None."""
    source = config["lens"]["source"]
    if source["type"] != "cosmos":
        return None
    return CosmosSource(source, split, reference_zero_point(config["instrument"]), config["cosmology"])


def noiseless(config: Mapping[str, Any]) -> bool:
    """``storage.noiseless``: shards hold noiseless images (the loader adds fresh noise per batch)."""
    return bool((config.get("storage") or {}).get("noiseless", False))


def simulation_config_section(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The part of the config that determines a dataset's shards (hashed into the shard attrs).

    ``storage`` enters only through ``noiseless`` (and only when set), so that chunking — which does not change
    the content — does not change the hash, and the hashes of existing noisy configs stay as they were.
    """
    section = {k: config[k] for k in ("seed", "cosmology", "instrument", "renderer", "lens", "subhalos")} | {
        "dataset": config["datasets"][dataset]
    }
    if noiseless(config):
        section["storage"] = {"noiseless": True}
    return section


def population_of(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The subhalo population settings of a dataset (profile, γ prior or grid, N_sub prior, placement threshold)."""
    try:
        return dict(config["datasets"][dataset]["population"])
    except KeyError as exc:
        raise KeyError(f"datasets.{dataset}: unknown dataset; defined: {sorted(config['datasets'])}") from exc


def draw_scene(
    rng: np.random.Generator,
    *,
    renderer: Renderer,
    config: Mapping[str, Any],
    population: Mapping[str, Any],
    global_index: int,
    cosmos: CosmosSource | None = None,
    los: LineOfSight | None = None,
) -> Scene:
    """Every draw of one image except its noise: macro model, population, subhalos placed on the smooth image."""
    inst = renderer.instrument
    epl_model = config["renderer"]["epl_model"]
    macro = draw_macro(rng, config["lens"], inst.zero_point, epl_model, cosmos, config["cosmology"])
    p = dict(macro.params)
    if "gamma_values" in population:
        values = population["gamma_values"]
        gamma_pop = float(values[global_index % len(values)])
    elif population["profile"] == "EPL":
        gamma_pop = float(draw(population["gamma"], rng))
    else:
        gamma_pop = float("nan")
    n_sub = int(draw(population["n_sub"], rng))
    plane = physics.LensPlane(macro.z_lens, macro.z_source, config["cosmology"])
    positions = place_on_bright_pixels(
        rng, renderer.smooth_image(macro), n_sub, inst.pixel_scale, float(population["placement_threshold"])
    )
    subs = draw_subhalos(
        rng, n_sub=n_sub, gamma_pop=gamma_pop, population=population, subhalo_cfg=config["subhalos"], plane=plane,
        lens_center=(p["lens_center_x"], p["lens_center_y"]), positions=positions,
        h=physics.get_cosmology(config["cosmology"]).h,
    )
    sub_models, sub_kwargs = subhalo_lens_kwargs(subs, population["profile"], epl_model)
    kappa = renderer.mean_convergence(sub_models, sub_kwargs) if config["subhalos"]["negative_mass_sheet"] else 0.0
    lens_models = macro.lens_model_list + sub_models
    kwargs_lens = macro.kwargs_lens + sub_kwargs
    if kappa != 0.0:
        lens_models = lens_models + ["CONVERGENCE"]
        kwargs_lens = kwargs_lens + [{"kappa": -kappa, "ra_0": 0.0, "dec_0": 0.0}]
    p.update(gamma_pop=gamma_pop, n_sub=n_sub, nms_kappa=-kappa, global_index=global_index,
             subhalo_mass_total=float(subs[:, 0].sum()) if n_sub else 0.0)
    redshifts = los_table = None
    if los is not None:
        halos = los.draw(rng, z_lens=macro.z_lens, z_source=macro.z_source, theta_e=p["lens_theta_E"],
                         gamma_lens=p["lens_gamma"], gamma_pop=gamma_pop if population["profile"] == "EPL" else 2.0,
                         profile=population["profile"], gamma_scatter=float(config["subhalos"]["gamma_scatter"]),
                         population=population, subhalo_cfg=config["subhalos"],
                         h=physics.get_cosmology(config["cosmology"]).h, epl_model=epl_model)
        redshifts = [macro.z_lens] * len(lens_models) + list(halos.redshifts)
        lens_models, kwargs_lens = lens_models + halos.models, kwargs_lens + halos.kwargs
        for z_plane in sorted(set(halos.redshifts)):  # one negative sheet per slice (spec §1.3)
            sel = [i for i, z in enumerate(halos.redshifts) if z == z_plane]
            k = renderer.mean_convergence([halos.models[i] for i in sel], [halos.kwargs[i] for i in sel])
            lens_models.append("CONVERGENCE")
            kwargs_lens.append({"kappa": -k, "ra_0": 0.0, "dec_0": 0.0})
            redshifts.append(z_plane)
        los_table = halos.table
        p.update(n_los=float(len(halos.models)), delta_los=halos.delta_los,
                 los_mass_total=float(halos.table[:, 1].sum()) if len(halos.models) else 0.0)
    scene = Scene(
        z_lens=macro.z_lens, z_source=macro.z_source, lens_model_list=lens_models, kwargs_lens=kwargs_lens,
        source_model_list=macro.source_model_list, kwargs_source=macro.kwargs_source,
        lens_light_model_list=macro.lens_light_model_list, kwargs_lens_light=macro.kwargs_lens_light,
        params=p, subhalos=subs, lens_redshift_list=redshifts, los=los_table,
    )
    ps_cfg = config["lens"].get("point_source")
    if ps_cfg:  # optional lensed point source at the source centre (no draws when absent)
        from .point_source import attach_point_source

        attach_point_source(rng, scene, ps_cfg, zero_point=inst.zero_point, num_pix=inst.num_pix,
                            pixel_scale=inst.pixel_scale, cosmology=config["cosmology"])
    if config["instrument"].get("bands"):  # multi-band: colours of every light component (no draws otherwise)
        from .bands import draw_colors

        draw_colors(rng, scene, config)
    return scene


def simulate_image(
    rng: np.random.Generator,
    *,
    renderer: Renderer,
    config: Mapping[str, Any],
    population: Mapping[str, Any],
    global_index: int,
    cosmos: CosmosSource | None = None,
    los: LineOfSight | None = None,
    noise: bool = True,
) -> tuple[np.ndarray, Scene]:
    """One noisy (``noise=False``: noiseless) image (float64, e⁻/s) and its scene; every draw comes from ``rng``."""
    scene = draw_scene(rng, renderer=renderer, config=config, population=population, global_index=global_index,
                       cosmos=cosmos, los=los)
    inst = renderer.instrument
    image = renderer.image(scene)
    if noise:
        image = add_noise(rng, image, inst.exposure_time, inst.sigma_bkg)
    return image, scene


def simulate_image_bands(
    rng: np.random.Generator,
    *,
    bands: BandSet,
    config: Mapping[str, Any],
    population: Mapping[str, Any],
    global_index: int,
    cosmos: CosmosSource | None = None,
    los: LineOfSight | None = None,
    noise: bool = True,
) -> tuple[np.ndarray, Scene]:
    """One multi-band image (C, H, W) (float64, e⁻/s per band) and its scene (:mod:`lensinfer.simulate.bands`).

    Order of draws from ``rng``: the seeing of drawn-PSF bands; the scene (subhalos placed on the smooth image of
    the reference band, colours at its end); then the noise of each band in channel order.
    """
    fwhm = bands.draw_psf(rng)
    renderers = bands.renderers(fwhm)
    scene = draw_scene(rng, renderer=renderers[bands.reference], config=config, population=population,
                       global_index=global_index, cosmos=cosmos, los=los)
    scene.params.update({f"psf_fwhm_{b}": v for b, v in fwhm.items()})
    out = []
    for b in bands.names:
        image = renderers[b].image(bands.scene_in(scene, b))
        if noise:
            inst = bands.instruments[b]
            image = add_noise(rng, image, inst.exposure_time, inst.sigma_bkg)
        out.append(image)
    return np.stack(out), scene


class SimulationError(ValueError):
    """A simulated image or parameter that is not finite (names dataset, shard, image index and seed)."""


def _check_finite(image: np.ndarray, params: Mapping[str, float], *, dataset: str, shard: int, index: int,
                  global_index: int, seed: int, gamma_free: bool) -> None:
    """Raise :class:`SimulationError` on a non-finite pixel or parameter of one image (before anything is written).

    ``gamma_pop`` is NaN by design for populations without a γ (NFW/TNFW test sets: ``gamma_free``)."""
    where = (f"datasets.{dataset}: shard {shard}, image {index} (global index {global_index}, image seed {seed}; "
             f"redraw it with lensinfer.seeds.image_rng({seed}))")
    bad = ~np.isfinite(image)
    if bad.any():
        raise SimulationError(f"{where}: {int(bad.sum())} non-finite pixel(s) in the rendered image; check the priors "
                              "of this configuration (lens.*, subhalos.*) for values the renderer cannot handle")
    wrong = sorted(k for k, v in params.items() if not np.isfinite(v) and not (k == "gamma_pop" and gamma_free))
    if wrong:
        raise SimulationError(f"{where}: non-finite parameter(s) {', '.join(f'{k}={params[k]}' for k in wrong)}")


def simulate_shard(config: Mapping[str, Any], dataset: str, shard: int, out_path: str | Path,
                   progress: bool = True, threads: int | None = None) -> ShardData:
    """Simulate shard ``shard`` of ``dataset`` and write it to ``out_path`` (zarr, see :mod:`lensinfer.data.store`).

    ``threads`` caps the CPU threads of the torch renderer (the job's ``threads:``; torch would otherwise use every
    core of the node, oversubscribing it when several shards run side by side)."""
    ds = config["datasets"][dataset]
    if threads is not None and config["renderer"].get("backend", "lenstronomy") == "torch":
        import torch

        torch.set_num_threads(int(threads))
    n = int(ds["shard_size"])
    # the workflow leaves n_shards out of a shard's params (it does not change the shard's images)
    if shard < 0 or ("n_shards" in ds and shard >= int(ds["n_shards"])):
        raise ValueError(f"datasets.{dataset}: shard {shard} out of range [0, {ds.get('n_shards', 'n_shards')})")
    population = population_of(config, dataset)
    renderer = make_renderer(config)
    cosmos = source_catalog(config, ds.get("source_split", "train"))
    los = line_of_sight(config)
    seeds = image_seeds(int(config["seed"]), dataset, shard, n)
    inst = renderer.instrument
    bands = BandSet(config) if config["instrument"].get("bands") else None  # multi-band: images (N, C, H, W)
    noisy = not noiseless(config)
    channels = (len(bands.names),) if bands is not None else ()
    images = np.empty((n, *channels, inst.num_pix, inst.num_pix), dtype=np.float32)
    rows: list[dict[str, float]] = []
    subhalos: list[np.ndarray] = []
    offsets = np.zeros(n + 1, dtype=np.int64)
    los_rows: list[np.ndarray] = []
    los_offsets = np.zeros(n + 1, dtype=np.int64)
    for i in tqdm(range(n), desc=f"{dataset}/shard {shard}", file=sys.stderr, disable=not progress, mininterval=2.0):
        if bands is not None:
            image, scene = simulate_image_bands(image_rng(seeds[i]), bands=bands, config=config, population=population,
                                                global_index=shard * n + i, cosmos=cosmos, los=los, noise=noisy)
        else:
            image, scene = simulate_image(image_rng(seeds[i]), renderer=renderer, config=config, population=population,
                                          global_index=shard * n + i, cosmos=cosmos, los=los, noise=noisy)
        _check_finite(image, scene.params, dataset=dataset, shard=shard, index=i, global_index=shard * n + i,
                      seed=int(seeds[i]), gamma_free="gamma" not in population and "gamma_values" not in population)
        images[i] = image
        rows.append(scene.params)
        subhalos.append(scene.subhalos)
        offsets[i + 1] = offsets[i] + scene.subhalos.shape[0]
        if scene.los is not None:
            los_rows.append(scene.los)
            los_offsets[i + 1] = los_offsets[i] + scene.los.shape[0]
    columns = [c for c in rows[0] if c not in POPULATION_COLUMNS] + list(POPULATION_COLUMNS)
    params = np.array([[r[c] for c in columns] for r in rows], dtype=np.float64)
    data = ShardData(
        images=images, params=params, columns=columns, image_seed=seeds,
        subhalos=np.concatenate(subhalos) if subhalos else np.zeros((0, len(SUBHALO_COLUMNS))),
        subhalo_columns=list(SUBHALO_COLUMNS), subhalo_offsets=offsets,
    )
    if los is not None:
        data.extra = {"los": (np.concatenate(los_rows) if los_rows else np.zeros((0, len(LOS_COLUMNS))),
                              list(LOS_COLUMNS), los_offsets)}
    attrs = {
        "dataset": dataset, "shard": shard, "seed": int(config["seed"]), "lensinfer_version": __version__,
        "config_hash": config_hash(simulation_config_section(config, dataset)),
        "pixel_scale": inst.pixel_scale, "num_pix": inst.num_pix, "units": "e-/s",
        "sigma_bkg": inst.sigma_bkg, "exposure_time": inst.exposure_time, "zero_point": inst.zero_point,
        "population": population,
    }
    if bands is not None:  # per-band lists replace the scalars: bands, reference_band, sigma_bkg, exposure_time, zero_point
        attrs.update(bands.attrs())
    if not noisy:
        attrs["noiseless"] = True
    write_shard(out_path, data, attrs, chunk_images=int(config["storage"]["chunk_images"]))
    return data
