"""COSMOS galaxy sources through paltas' catalog classes, with the reference analysis' galaxy splits.

Zhang, Şengül & Dvorkin (2023) draw real galaxies from the COSMOS 23.5 training sample (GalSim RealGalaxy data)
through paltas' ``COSMOSExcludeCatalog`` (training: every galaxy except ``bad_galaxies.csv`` and
``val_galaxies.csv``) and ``COSMOSIncludeCatalog`` (validation: the first 70 of ``val_galaxies.csv``; test: the
remaining 29), with cuts max_z 1.0, ≥ 64 px, mag_auto < 20, flux radius ≥ 10 COSMOS px, no smoothing, random
rotation, output zero point 25.127 (spec/science.md §1.1). paltas moves the galaxy to z_source (pixel size ∝ D_A)
and k-corrects it.

paltas draws the galaxy and its rotation from numpy's *global* generator; here both come from the image's own
generator and are passed to ``draw_source(catalog_i, phi)``, so the draw is reproducible and recorded
(``source_catalog_index``, ``source_phi`` in the parameter table).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..compat import import_paltas

__all__ = ["SPLITS", "COSMOS_FILES", "REFERENCE_CUTS", "read_split_lists", "CosmosSource"]

SPLITS = ("train", "val", "test", "all")
COSMOS_FILES = ("real_galaxy_catalog_23.5.fits", "real_galaxy_catalog_23.5_fits.fits")
N_VAL_GALAXIES = 70  # the reference's val/test cut of val_galaxies.csv

#: catalog cuts of the reference analysis (spec §1.1), used for every key the config leaves unset
REFERENCE_CUTS: dict[str, Any] = {
    "max_z": 1.0, "minimum_size_in_pixels": 64, "faintest_apparent_mag": 20.0, "min_flux_radius": 10.0,
    "smoothing_sigma": 0.0, "random_rotation": True, "split_lists": "resources/cosmos",
}


def read_split_lists(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(bad galaxy indices, validation galaxy indices) from ``bad_galaxies.csv`` / ``val_galaxies.csv``."""
    folder = Path(folder)
    with open(folder / "bad_galaxies.csv", encoding="utf-8-sig") as fh:
        bad = np.array([int(row[0]) for row in csv.reader(fh) if row], dtype=int)
    with open(folder / "val_galaxies.csv", encoding="utf-8-sig") as fh:
        val = np.array([int(row[-1]) for row in csv.reader(fh) if row], dtype=int)
    return bad, val


class CosmosSource:
    """Draw COSMOS galaxies of one split as lenstronomy 'INTERPOL' light profiles.

    ``catalog_dir`` must be writable the first time: paltas caches each galaxy as ``npy_files/img_*.npy`` next to
    the catalog (the workflow warms this cache once, in ``prepare_cosmos``, before parallel simulation jobs).
    """

    def __init__(self, source_cfg: Mapping[str, Any], split: str, zero_point: float, cosmology: str = "planck18") -> None:
        if split not in SPLITS:
            raise ValueError(f"source split {split!r} unknown; allowed: {list(SPLITS)}")
        import_paltas()  # numpy-2 shims before paltas is used
        from paltas.Sources import cosmos

        cfg = dict(REFERENCE_CUTS, **source_cfg)
        folder = Path(cfg["catalog_dir"])
        missing = [f for f in COSMOS_FILES if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"lens.source.catalog_dir: {folder} lacks {missing} (COSMOS 23.5 training sample)")
        params = {
            "cosmos_folder": str(folder), "max_z": cfg["max_z"],
            "minimum_size_in_pixels": cfg["minimum_size_in_pixels"],
            "faintest_apparent_mag": cfg["faintest_apparent_mag"], "min_flux_radius": cfg["min_flux_radius"],
            "smoothing_sigma": cfg["smoothing_sigma"], "random_rotation": cfg["random_rotation"],
            "output_ab_zeropoint": zero_point, "z_source": 1.0, "center_x": 0.0, "center_y": 0.0,
        }
        bad, val = read_split_lists(cfg["split_lists"])
        if split == "train":
            catalog = cosmos.COSMOSExcludeCatalog(cosmology, dict(params, source_exclusion_list=np.concatenate([bad, val])))
        elif split in ("val", "test"):
            chosen = val[:N_VAL_GALAXIES] if split == "val" else val[N_VAL_GALAXIES:]
            catalog = cosmos.COSMOSIncludeCatalog(cosmology, dict(params, source_inclusion_list=chosen))
        else:
            catalog = cosmos.COSMOSCatalog(cosmology, params)
        self.catalog = catalog
        self.split = split
        self.random_rotation = bool(cfg["random_rotation"])
        self.eligible = np.nonzero(catalog._passes_cuts())[0]
        if self.eligible.size == 0:
            raise ValueError(f"no COSMOS galaxy of {folder} passes the cuts for split {split!r}")

    def draw(self, rng: np.random.Generator, z_source: float, center_x: float, center_y: float
             ) -> tuple[list[str], list[dict[str, Any]], dict[str, float]]:
        """(model list, kwargs list, table entries) of one galaxy placed at z_source and (center_x, center_y)."""
        index = int(self.eligible[rng.integers(self.eligible.size)])
        phi = float(rng.uniform(0.0, 2.0 * np.pi)) if self.random_rotation else 0.0
        self.catalog.source_parameters.update(z_source=z_source, center_x=center_x, center_y=center_y)
        models, kwargs, _ = self.catalog.draw_source(catalog_i=index, phi=phi)
        return list(models), list(kwargs), {"source_catalog_index": float(index), "source_phi": phi}
