"""Mock observations: simulated lenses written as HST-like FITS frames (SCI + WCS, e⁻/s).

They stand in for real data in the offline demo and go through exactly the same preprocessing as real cutouts
(:mod:`lensinfer.observe.preprocess`). Each mock borrows the sky position of one SLACS reference lens so that the
WCS, names and masks look like the real sample; its truth (every drawn parameter) is kept beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..observe.fitsio import write_hst_like_fits
from ..observe.lenses import LensSpec
from ..seeds import image_rng, image_seeds
from .instrument import Instrument
from .renderers import make_renderer
from .shard import line_of_sight, simulate_image, source_catalog

__all__ = ["MOCK_DATASET", "write_mock_observations"]

MOCK_DATASET = "observations-mock"


def write_mock_observations(config: Mapping[str, Any], lenses: Sequence[LensSpec], out_dirs: Sequence[str | Path],
                            science_name: str = "science.fits", truth_name: str = "truth.json") -> list[dict[str, Any]]:
    """Simulate one lens per entry of ``lenses`` and write ``science.fits`` + ``truth.json`` into its folder."""
    mock = config["observations"]["mock"]
    frame_cfg = dict(config["instrument"], num_pix=int(mock.get("frame_num_pix", 3 * config["instrument"]["num_pix"])))
    inst = Instrument(frame_cfg)
    renderer = make_renderer(config, inst)
    los = line_of_sight(config)
    seeds = image_seeds(int(config["seed"]), MOCK_DATASET, 0, len(lenses))
    cosmos = source_catalog(config, "test")
    truths = []
    for i, (lens, out) in enumerate(zip(lenses, out_dirs)):
        image, scene = simulate_image(image_rng(seeds[i]), renderer=renderer, config=config,
                                      population=mock["population"], global_index=i, cosmos=cosmos, los=los)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        image = image + float(mock.get("sky_pedestal", 0.0))
        truth = {"name": lens.name, "ra": lens.ra_deg, "dec": lens.dec_deg, "image_seed": int(seeds[i]),
                 "population": dict(mock["population"]), "sky_pedestal": float(mock.get("sky_pedestal", 0.0)),
                 "params": {k: float(v) for k, v in scene.params.items()}, "n_subhalos": int(scene.subhalos.shape[0])}
        write_hst_like_fits(out / science_name, image.astype(np.float32), pixel_scale_arcsec=inst.pixel_scale,
                            ra=lens.ra_deg, dec=lens.dec_deg, exptime=inst.exposure_time, zero_point=inst.zero_point,
                            extra_header={"MOCK": True, "LENSNAME": lens.name})
        (out / truth_name).write_text(json.dumps(truth, indent=2) + "\n")
        truths.append(truth)
    return truths
