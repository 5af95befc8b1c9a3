"""Mock observations: simulated lenses written as HST-like FITS frames (SCI + WCS, e⁻/s).

Multi-band configs (``instrument.bands``) write one file with one ``SCI``/``WHT`` pair per band (EXTVER = channel
index + 1, ``FILTER`` = band name, PHOTFLAM/PHOTPLAM encoding the band's zero point), which
:func:`lensinfer.observe.preprocess.preprocess_fits_bands` stacks back to (C, H, W).

They stand in for real data in the offline demo and go through exactly the same preprocessing as real cutouts
(:mod:`lensinfer.observe.preprocess`). Each mock borrows the sky position of one SLACS reference lens so that the
WCS, names and masks look like the real sample; its truth (every drawn parameter) is kept beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..observe.fitsio import F814W_PHOTPLAM, tan_wcs, write_hst_like_fits
from ..observe.lenses import LensSpec
from ..seeds import image_rng, image_seeds
from .instrument import Instrument
from .renderers import make_renderer
from .shard import line_of_sight, simulate_image, simulate_image_bands, source_catalog

__all__ = ["MOCK_DATASET", "write_mock_observations", "write_multiband_fits"]

MOCK_DATASET = "observations-mock"


def write_mock_observations(config: Mapping[str, Any], lenses: Sequence[LensSpec], out_dirs: Sequence[str | Path],
                            science_name: str = "science.fits", truth_name: str = "truth.json") -> list[dict[str, Any]]:
    """Simulate one lens per entry of ``lenses`` and write ``science.fits`` + ``truth.json`` into its folder.

    Single band: an HST-like frame (:func:`lensinfer.observe.fitsio.write_hst_like_fits`); multi-band
    (``instrument.bands``): one scene per lens rendered in every band, written by :func:`write_multiband_fits`.
    """
    mock = config["observations"]["mock"]
    frame_cfg = dict(config["instrument"], num_pix=int(mock.get("frame_num_pix", 3 * config["instrument"]["num_pix"])))
    los = line_of_sight(config)
    seeds = image_seeds(int(config["seed"]), MOCK_DATASET, 0, len(lenses))
    cosmos = source_catalog(config, "test")
    pedestal = float(mock.get("sky_pedestal", 0.0))
    common = dict(population=mock["population"], cosmos=cosmos, los=los)
    extra: dict[str, Any] = {}
    if frame_cfg.get("bands"):
        from .bands import BandSet

        frame_config = dict(config, instrument=frame_cfg)
        bands = BandSet(frame_config)
        extra["bands"] = list(bands.names)

        def simulate(rng: np.random.Generator, i: int) -> tuple[np.ndarray, Any]:
            return simulate_image_bands(rng, bands=bands, config=frame_config, global_index=i, **common)

        def write(path: Path, image: np.ndarray, lens: LensSpec) -> None:
            write_multiband_fits(path, image, bands=bands.names,
                                 zero_points=[bands.instruments[b].zero_point for b in bands.names],
                                 exptimes=[bands.instruments[b].exposure_time for b in bands.names],
                                 pixel_scale_arcsec=float(frame_cfg["pixel_scale"]), ra=lens.ra_deg,
                                 dec=lens.dec_deg, extra_header={"MOCK": True, "LENSNAME": lens.name})
    else:
        inst = Instrument(frame_cfg)
        renderer = make_renderer(config, inst)

        def simulate(rng: np.random.Generator, i: int) -> tuple[np.ndarray, Any]:
            return simulate_image(rng, renderer=renderer, config=config, global_index=i, **common)

        def write(path: Path, image: np.ndarray, lens: LensSpec) -> None:
            write_hst_like_fits(path, image.astype(np.float32), pixel_scale_arcsec=inst.pixel_scale, ra=lens.ra_deg,
                                dec=lens.dec_deg, exptime=inst.exposure_time, zero_point=inst.zero_point,
                                extra_header={"MOCK": True, "LENSNAME": lens.name})
    truths = []
    for i, (lens, out) in enumerate(zip(lenses, out_dirs)):
        image, scene = simulate(image_rng(seeds[i]), i)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        truth = {"name": lens.name, "ra": lens.ra_deg, "dec": lens.dec_deg, "image_seed": int(seeds[i]),
                 "population": dict(mock["population"]), "sky_pedestal": pedestal, **extra,
                 "params": {k: float(v) for k, v in scene.params.items()}, "n_subhalos": int(scene.subhalos.shape[0])}
        write(out / science_name, image + pedestal, lens)
        (out / truth_name).write_text(json.dumps(truth, indent=2) + "\n")
        truths.append(truth)
    return truths


def write_multiband_fits(path: str | Path, cube: np.ndarray, *, bands: Sequence[str], zero_points: Sequence[float],
                         exptimes: Sequence[float], pixel_scale_arcsec: float, ra: float, dec: float,
                         extra_header: Mapping[str, Any] | None = None) -> Path:
    """A (C, H, W) e⁻/s cube as one FITS file: PRIMARY + per band ``SCI``/``WHT`` (EXTVER = c + 1, FILTER = band).

    Each SCI carries BUNIT, EXPTIME, a TAN WCS and PHOTFLAM/PHOTPLAM with ZP = −2.5 log PHOTFLAM − 5 log PHOTPLAM
    − 2.408 equal to the band's zero point (the pivot wavelength is nominal: only the zero point is used).
    CHECKSUM/DATASUM with fixed comments keep the file byte-identical across runs.
    """
    from astropy.io import fits

    from ..observe.photometry import photflam_for_zero_point

    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3 or cube.shape[0] != len(bands):
        raise ValueError(f"cube must be (C, H, W) with C = {len(bands)} bands, got {cube.shape}")
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["TELESCOP"] = "MOCK"
    ph["INSTRUME"] = "MULTIBAND"
    ph["NBANDS"] = len(bands)
    ph["BANDS"] = ",".join(bands)
    for key, value in (extra_header or {}).items():
        ph[key if len(key) <= 8 else f"HIERARCH {key}"] = value
    hdus: list[Any] = [primary]
    w = tan_wcs(ra=ra, dec=dec, pixel_scale_arcsec=pixel_scale_arcsec, shape=cube.shape[1:])
    for c, (band, zp, t) in enumerate(zip(bands, zero_points, exptimes)):
        header = w.to_header()
        header["BUNIT"] = "ELECTRONS/S"
        header["FILTER"] = band
        header["EXPTIME"] = (float(t), "exposure time (s)")
        header["PHOTFLAM"] = (float(photflam_for_zero_point(float(zp), F814W_PHOTPLAM)), "sets the AB zero point")
        header["PHOTPLAM"] = (F814W_PHOTPLAM, "nominal pivot wavelength (A)")
        header["ORIENTAT"] = (0.0, "position angle of image y axis (deg. e of n)")
        hdus.append(fits.ImageHDU(cube[c].astype(np.float32), header=header, name="SCI", ver=c + 1))
        hdus.append(fits.ImageHDU(np.full(cube.shape[1:], float(t), np.float32), header=w.to_header(), name="WHT",
                                  ver=c + 1))
    hdul = fits.HDUList(hdus)
    for hdu in hdul:
        hdu.add_checksum(when="HDU checksum")
    out = Path(path)
    hdul.writeto(out, overwrite=True)
    return out
