"""The lens table: the 13 SLACS lenses of the reference analysis and user-configured lenses.

Reference: Zhang, Şengül & Dvorkin 2023 (arXiv:2308.09739) analysed 13 SLACS lenses observed
with HST ACS/WFC F814W. Their data files are named by the MAST *target names* (six of which are
SDSS plate-MJD-fibre identifiers), the notebook uses per-lens circular masks hand-set on a
100x100 grid of 0.04"/pix (science.md §2), and Einstein radii are from Bolton et al. 2008.

Coordinates are never typed in by hand: they are derived from the full SDSS J-names
(``J094656.68+100652.8``), because several public snippets carry rounded or wrong SLACS
coordinates (observations.md §1, "SLACS coordinates").

Masks are stored independently of the pixel grid: a radius in arcsec and the offset of the
mask centre from the grid centre in arcsec, along the image +x (column) and +y (row) axes of a
north-up grid (lenstronomy convention: the grid centre is pixel (N-1)/2). The reference masks
(the table below, copied from Zhang, Şengül & Dvorkin 2023's figures notebook as transcribed in
science.md §2 "HST masks") were hand-set on cutouts that were *not* recentred on the lens light
(lens peak up to ~7 px off centre, science.md §5). ``observations.preprocess: reference`` cuts
exactly such cutouts (at the catalogue position, no recentring), so on the published grid
(0.04"/pix, 100 px) the masks land on the published pixels exactly; ``calibrated`` recentres on
the lens light and keeps the published centre offsets (at most 2.5 px). A config entry may
override them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LensSpec",
    "REFERENCE_PIXEL_SCALE_ARCSEC",
    "REFERENCE_NUM_PIX",
    "SLACS_REFERENCE_LENSES",
    "parse_sdss_name",
    "reference_lens",
    "lens_specs_from_config",
]

#: Pixel scale (arcsec) and size of the reference analysis' HST cutouts; the reference mask
#: centres/radii in :data:`_REFERENCE_TABLE` are pixels of this grid.
REFERENCE_PIXEL_SCALE_ARCSEC = 0.04
REFERENCE_NUM_PIX = 100

_SDSS_NAME = re.compile(
    r"^(?:SDSS\s*)?J"
    r"(?P<rh>\d{2})(?P<rm>\d{2})(?P<rs>\d{2}(?:\.\d+)?)"
    r"(?P<sign>[+-])"
    r"(?P<dd>\d{2})(?P<dm>\d{2})(?P<ds>\d{2}(?:\.\d+)?)$"
)


def parse_sdss_name(sdss_name: str) -> tuple[float, float]:
    """Return (RA, Dec) in degrees (J2000) encoded in a full SDSS J-name.

    ``J094656.68+100652.8`` → (146.736167, +10.114667). An optional ``SDSS`` prefix and a
    Unicode minus sign are accepted. SDSS names truncate (not round) the coordinates, so the
    result is good to ~0.01 s in RA and ~0.1" in Dec — below the HST/SDSS astrometric offset
    that preprocessing removes by recentring on the lens light anyway.

    Raises:
        ValueError: for short names such as ``J0946+1006`` (too imprecise: up to ~1') or any
            string that is not a valid J-name.
    """
    text = sdss_name.strip().replace("\u2212", "-")
    match = _SDSS_NAME.match(text)
    if match is None:
        raise ValueError(
            f"not a full SDSS J-name: {sdss_name!r} (expected e.g. 'J094656.68+100652.8'; "
            "short names like 'J0946+1006' are too imprecise, give ra/dec instead)"
        )
    rh, rm, rs = int(match["rh"]), int(match["rm"]), float(match["rs"])
    dd, dm, ds = int(match["dd"]), int(match["dm"]), float(match["ds"])
    if rh >= 24 or rm >= 60 or rs >= 60 or dd > 90 or dm >= 60 or ds >= 60:
        raise ValueError(f"SDSS name {sdss_name!r} has out-of-range sexagesimal fields")
    ra = 15.0 * (rh + rm / 60.0 + rs / 3600.0)
    dec = dd + dm / 60.0 + ds / 3600.0
    if dec > 90.0:
        raise ValueError(f"SDSS name {sdss_name!r} has |Dec| > 90 deg")
    return ra, (-dec if match["sign"] == "-" else dec)


@dataclass(frozen=True)
class LensSpec:
    """One lens to observe and preprocess.

    Attributes:
        name: identifier used in file names and results (SDSS short name for SLACS lenses).
        ra_deg, dec_deg: target position (J2000, degrees).
        sdss_name: full SDSS J-name the coordinates were derived from, if any.
        mast_target: MAST target name (the reference analysis' file stem), if known.
        theta_e_arcsec: Einstein radius (Bolton+08 for SLACS), if known.
        mask_radius_arcsec: radius of the circular analysis mask; ``None`` → 1.5 θE, the
            simulation-mask rule of the reference (science.md §2).
        mask_center_offset_arcsec: (dx, dy) of the mask centre from the grid centre along the
            output image +x (column) and +y (row) axes; ``(0, 0)`` = centred on the lens.
    """

    name: str
    ra_deg: float
    dec_deg: float
    sdss_name: str | None = None
    mast_target: str | None = None
    theta_e_arcsec: float | None = None
    mask_radius_arcsec: float | None = None
    mask_center_offset_arcsec: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"lens name {self.name!r} must be non-empty, without '/', '\\' or spaces")
        if not (0.0 <= self.ra_deg < 360.0 and -90.0 <= self.dec_deg <= 90.0):
            raise ValueError(f"lens {self.name}: ra/dec out of range ({self.ra_deg}, {self.dec_deg})")
        for label, value in (("theta_e_arcsec", self.theta_e_arcsec), ("mask_radius_arcsec", self.mask_radius_arcsec)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"lens {self.name}: {label} must be a positive number, got {value!r}")

    def mask_geometry(self, pixel_scale_arcsec: float, num_pix: int) -> tuple[tuple[float, float], float]:
        """Mask centre (x=column, y=row, 0-based pixel coordinates) and radius in pixels on a
        ``num_pix`` × ``num_pix`` grid of ``pixel_scale_arcsec`` (centre pixel (N-1)/2)."""
        if self.mask_radius_arcsec is not None:
            radius_arcsec = self.mask_radius_arcsec
        elif self.theta_e_arcsec is not None:
            radius_arcsec = 1.5 * self.theta_e_arcsec
        else:
            raise ValueError(f"lens {self.name}: no mask radius and no theta_e to derive one from")
        centre = (num_pix - 1) / 2.0
        dx, dy = self.mask_center_offset_arcsec
        # rounded to 1e-9 px: masks given in pixels (the published table, config overrides) come back exactly after
        # their round trip through arcsec (otherwise off by ~1e-14 px, which can flip pixels on the circle's edge)
        x, y = round(centre + dx / pixel_scale_arcsec, 9), round(centre + dy / pixel_scale_arcsec, 9)
        return (x, y), round(radius_arcsec / pixel_scale_arcsec, 9)


# (MAST target name, SDSS short name, full SDSS name, θE" Bolton+08, mask x, mask y, mask r [px])
# in the order of the reference data/filenames.txt; masks from science.md §2 (0.04"/pix, 100 px).
_REFERENCE_TABLE: tuple[tuple[str, str, str, float, int, int, int], ...] = (
    ("SDSSJ1023+4230", "J1023+4230", "J102332.26+423001.8", 1.41, 48, 47, 48),
    ("GAL-0364-52000-084", "J1627-0053", "J162746.45-005357.6", 1.23, 49, 48, 45),
    ("SDSSJ0946+1006", "J0946+1006", "J094656.68+100652.8", 1.38, 49, 48, 49),
    ("0722-52224-442", "J2238-0754", "J223840.20-075456.0", 1.27, 50, 48, 46),
    ("0902-52409-068", "J0956+5100", "J095629.78+510006.6", 1.33, 50, 50, 49),
    ("SDSSJ0822+2652", "J0822+2652", "J082242.32+265243.5", 1.17, 50, 50, 50),
    ("0677-52606-520", "J2300+0022", "J230053.15+002238.0", 1.24, 50, 50, 44),
    ("SDSSJ0936+0913", "J0936+0913", "J093600.77+091335.8", 1.09, 50, 50, 45),
    ("SDSSJ1103+5322", "J1103+5322", "J110308.21+532228.2", 1.02, 50, 50, 40),
    ("0605-52353-503", "J1402+6321", "J140228.21+632133.5", 1.35, 47, 48, 44),
    ("SDSSJ0728+3835", "J0728+3835", "J072804.95+383525.7", 1.25, 50, 48, 45),
    ("0969-52442-134", "J1205+4910", "J120540.44+491029.4", 1.22, 49, 52, 42),
    ("SDSSJ1142+1001", "J1142+1001", "J114257.35+100111.8", 0.98, 49, 48, 48),
)


def _reference_spec(row: tuple[str, str, str, float, int, int, int]) -> LensSpec:
    mast_target, short, sdss_name, theta_e, mx, my, mr = row
    ra, dec = parse_sdss_name(sdss_name)
    centre = (REFERENCE_NUM_PIX - 1) / 2.0
    s = REFERENCE_PIXEL_SCALE_ARCSEC
    return LensSpec(
        name=short,
        ra_deg=ra,
        dec_deg=dec,
        sdss_name=sdss_name,
        mast_target=mast_target,
        theta_e_arcsec=theta_e,
        mask_radius_arcsec=mr * s,
        mask_center_offset_arcsec=((mx - centre) * s, (my - centre) * s),
    )


#: The 13 SLACS lenses of the reference analysis, in the reference data order.
SLACS_REFERENCE_LENSES: tuple[LensSpec, ...] = tuple(_reference_spec(row) for row in _REFERENCE_TABLE)


def reference_lens(key: str) -> LensSpec:
    """Look up a reference lens by SDSS short name, full SDSS name or MAST target name.

    Raises:
        KeyError: if ``key`` names none of the 13 lenses.
    """
    wanted = key.strip().replace("\u2212", "-").upper()
    for spec in SLACS_REFERENCE_LENSES:
        if wanted in {spec.name.upper(), str(spec.sdss_name).upper(), str(spec.mast_target).upper()}:
            return spec
    known = ", ".join(spec.name for spec in SLACS_REFERENCE_LENSES)
    raise KeyError(f"{key!r} is not one of the reference SLACS lenses ({known})")


_CONFIG_KEYS = frozenset(
    {"name", "sdss_name", "ra", "dec", "mast_target", "theta_e_arcsec", "mask_radius_px", "mask_center_xy"}
)


def _coordinates(entry: Mapping[str, Any], base: LensSpec | None, label: str) -> tuple[float, float, str | None]:
    has_ra, has_dec = "ra" in entry, "dec" in entry
    if has_ra != has_dec:
        raise ValueError(f"{label}: give both 'ra' and 'dec' (degrees), not only one")
    sdss_name = entry.get("sdss_name", base.sdss_name if base else None)
    if has_ra:
        ra, dec = float(entry["ra"]), float(entry["dec"])
        if "sdss_name" in entry:
            ra_n, dec_n = parse_sdss_name(str(entry["sdss_name"]))
            sep = 3600.0 * math.hypot((ra - ra_n) * math.cos(math.radians(dec)), dec - dec_n)
            if sep > 1.0:
                raise ValueError(f"{label}: ra/dec disagree with sdss_name {entry['sdss_name']!r} by {sep:.1f}\"")
        return ra, dec, sdss_name
    if "sdss_name" in entry:
        ra, dec = parse_sdss_name(str(entry["sdss_name"]))
        return ra, dec, sdss_name
    if base is None:
        raise ValueError(f"{label}: not a reference lens, so give 'sdss_name' (full J-name) or 'ra' and 'dec'")
    return base.ra_deg, base.dec_deg, sdss_name


def lens_specs_from_config(
    entries: Sequence[str | Mapping[str, Any]], *, pixel_scale_arcsec: float, num_pix: int
) -> list[LensSpec]:
    """Build :class:`LensSpec` objects from the ``lenses`` list of the workflow config.

    Each entry is either the name of a reference lens (``"J0946+1006"``, a full SDSS name or a
    MAST target name) or a mapping with keys:

    * ``name`` (required): a reference lens name to start from, or a new identifier;
    * ``sdss_name`` (full J-name) or ``ra`` + ``dec`` (degrees) — required for new lenses;
      if both are given they must agree to 1";
    * ``mast_target``, ``theta_e_arcsec`` (optional);
    * ``mask_radius_px``, ``mask_center_xy`` ([x, y], 0-based pixel coordinates): optional
      mask overrides in pixels of the *output* grid given by ``pixel_scale_arcsec`` and
      ``num_pix``. A new lens without ``mask_radius_px`` gets 1.5 θE.

    Raises:
        ValueError: unknown keys, missing/inconsistent coordinates, bad values, or duplicate
            names (the messages name the offending entry).
    """
    specs: list[LensSpec] = []
    for index, raw in enumerate(entries):
        entry = {"name": raw} if isinstance(raw, str) else raw
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ValueError(f"lenses[{index}]: each lens must be a name or a mapping with a 'name', got {raw!r}")
        label = f"lenses[{index}] ({entry['name']})"
        unknown = set(entry) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"{label}: unknown keys {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}")
        try:
            base: LensSpec | None = reference_lens(str(entry["name"]))
        except KeyError:
            base = None
        ra, dec, sdss_name = _coordinates(entry, base, label)
        radius = base.mask_radius_arcsec if base else None
        offset = base.mask_center_offset_arcsec if base else (0.0, 0.0)
        if "mask_radius_px" in entry:
            radius = float(entry["mask_radius_px"]) * pixel_scale_arcsec
        if "mask_center_xy" in entry:
            xy = entry["mask_center_xy"]
            if not (isinstance(xy, Sequence) and len(xy) == 2):
                raise ValueError(f"{label}: mask_center_xy must be [x, y] in pixels, got {xy!r}")
            centre = (num_pix - 1) / 2.0
            offset = ((float(xy[0]) - centre) * pixel_scale_arcsec, (float(xy[1]) - centre) * pixel_scale_arcsec)
        theta_e = entry.get("theta_e_arcsec", base.theta_e_arcsec if base else None)
        try:
            spec = LensSpec(
                name=base.name if base else str(entry["name"]),
                ra_deg=ra,
                dec_deg=dec,
                sdss_name=sdss_name,
                mast_target=entry.get("mast_target", base.mast_target if base else None),
                theta_e_arcsec=None if theta_e is None else float(theta_e),
                mask_radius_arcsec=radius,
                mask_center_offset_arcsec=offset,
            )
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from err
        if any(spec.name == other.name for other in specs):
            raise ValueError(f"{label}: duplicate lens name {spec.name!r}")
        specs.append(spec)
    return specs
