"""A tiny COSMOS-23.5-format catalog made by the project (no download, no ../shared): Sérsic-like galaxy stamps, or
(``clumpy=True``) irregular star-forming galaxies with the stamp noise real COSMOS cutouts carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits


def make_cosmos_fixture(folder: Path, n: int = 6, size: int = 72, seed: int = 0, clumpy: bool = False) -> Path:
    """Write real_galaxy_catalog_23.5{,_fits}.fits and real_galaxy_images_23.5_n1.fits with ``n`` galaxies.

    Default stamps are smooth (an exp(−r^0.8) profile: a Sérsic-like source, close to the simulations' own). With
    ``clumpy`` each stamp is what makes real COSMOS sources unlike a Sérsic profile: a faint lopsided disc carrying
    most of its light in 4–9 compact star-forming clumps (the clumpy galaxies of z ~ 1–2 HST imaging, e.g.
    Guo et al. 2015, ApJ 800, 39), plus white stamp noise at 2 % of the peak (COSMOS cutouts are noisy HST frames,
    Mandelbaum et al. 2012, MNRAS 420, 1518; the shared 10-galaxy catalog shows both)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ident = np.arange(n, dtype=np.int64) + 1000
    cat = fits.BinTableHDU.from_columns([
        fits.Column(name="IDENT", format="K", array=ident),
        fits.Column(name="MAG", format="D", array=rng.uniform(18, 19.5, n)),
        fits.Column(name="GAL_FILENAME", format="30A", array=np.array(["real_galaxy_images_23.5_n1.fits"] * n)),
        fits.Column(name="GAL_HDU", format="K", array=np.arange(n)),
        fits.Column(name="PIXEL_SCALE", format="D", array=np.full(n, 0.03)),
    ])
    fits.HDUList([fits.PrimaryHDU(), cat]).writeto(folder / "real_galaxy_catalog_23.5.fits", overwrite=True, checksum=True)
    fit = fits.BinTableHDU.from_columns([
        fits.Column(name="IDENT", format="K", array=ident),
        fits.Column(name="mag_auto", format="D", array=rng.uniform(18, 19.5, n)),
        fits.Column(name="flux_radius", format="D", array=rng.uniform(12, 20, n)),
        fits.Column(name="zphot", format="D", array=rng.uniform(0.3, 0.9, n)),
    ])
    fits.HDUList([fits.PrimaryHDU(), fit]).writeto(folder / "real_galaxy_catalog_23.5_fits.fits", overwrite=True, checksum=True)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    stamps = []
    for i in range(n):
        q = rng.uniform(0.5, 1.0)
        r = np.hypot(xx, yy / q)
        if not clumpy:
            stamps.append((rng.uniform(0.5, 2.0) * np.exp(-(r / rng.uniform(4, 10)) ** 0.8)).astype(np.float32))
            continue
        scale = rng.uniform(5, 9)
        disc = np.exp(-np.hypot(xx - rng.uniform(-3, 3), (yy - rng.uniform(-3, 3)) / q) / scale)
        image = rng.uniform(0.2, 0.4) * disc / disc.sum()
        n_clumps = int(rng.integers(4, 10))
        weights = rng.dirichlet(np.ones(n_clumps)) * (1.0 - image.sum())
        for w in weights:
            radius, angle = scale * rng.gamma(2.0, 0.6), rng.uniform(0, 2 * np.pi)
            cx, cy = radius * np.cos(angle), q * radius * np.sin(angle)
            width = rng.uniform(0.8, 2.0)
            blob = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / width**2)
            image += w * blob / blob.sum()
        image += rng.normal(0.0, 0.02 * image.max(), image.shape)
        stamps.append((rng.uniform(0.5, 2.0) * image / image.max()).astype(np.float32))
    hdus = [fits.PrimaryHDU(stamps[0])] + [fits.ImageHDU(s) for s in stamps[1:]]
    fits.HDUList(hdus).writeto(folder / "real_galaxy_images_23.5_n1.fits", overwrite=True, checksum=True)
    return folder
