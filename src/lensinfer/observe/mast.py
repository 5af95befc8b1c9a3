"""Fetch HST images of a lens from MAST, verified and recorded in a manifest.

Two methods (observations.md §1):

* ``"hapcut"`` (default): :meth:`astroquery.mast.HapcutClass.download_cutouts` cuts
  server-side from the HAP multi-visit mosaics (north-up, 0.04"/pix for ACS/WFC), and the
  layer of the requested instrument/filter is kept. ``download_cutouts`` streams the server's
  zip to disk, so the stored file holds exactly the server's bytes (its sha256 is meaningful).
* ``"drizzled"``: ``Observations.query_criteria`` → ``get_product_list`` →
  ``filter_products`` (SCIENCE, DRC preferred over DRZ) → ``download_products`` of the
  deepest frame (~200 MB).

Practices (observations.md §1 "Errors / limits", §5):

* astroquery does no retries: HTTP 5xx, ``requests.ConnectionError``/``Timeout`` and
  astroquery's long-poll ``TimeoutError`` are retried with exponential backoff; a download
  reported as ``ERROR`` with an HTTP 5xx message is retried too. The sleep function is
  injectable so tests never sleep.
* Every HTTP request gets a socket timeout (``timeout_s``; astroquery passes none).
* Offline first: when ``manifest.json`` matches the request and the file's size and sha256
  match, no astroquery object is even created.
* Never a truncated file under the final name: downloads land in a temporary directory next
  to the destination, are verified (:func:`~lensinfer.observe.fitsio.verify_fits`: FITS
  checksums, full data read) and checked to cover the target, then renamed atomically; the
  manifest is written last, atomically.
* The manifest has no timestamps: reruns on identical inputs are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import astropy.units as u
import numpy as np
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astroquery.exceptions import InvalidQueryError, NoResultsWarning, RemoteServiceError
from astroquery.mast import HapcutClass, ObservationsClass
from requests.adapters import HTTPAdapter

from .errors import DownloadError, MastFetchError, NoCoverageError, NoProductsError
from .fitsio import celestial_wcs, find_science_hdu, verify_fits
from .lenses import LensSpec

__all__ = [
    "FetchMethod",
    "MANIFEST_NAME",
    "SCIENCE_NAME",
    "fetch_hst",
    "read_manifest",
    "manifest_science_path",
]

FetchMethod = Literal["hapcut", "drizzled"]

#: File names inside the per-lens output directory.
MANIFEST_NAME = "manifest.json"
SCIENCE_NAME = "science.fits"

_MANIFEST_VERSION = 1
_T = TypeVar("_T")


class _TransientDownloadError(Exception):
    """A download that astroquery reported as ``ERROR`` with an HTTP 5xx message."""


class _DefaultTimeoutAdapter(HTTPAdapter):
    """Requests transport adapter that applies a socket timeout when the caller gave none."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def _with_timeout(client: _T, timeout_s: float) -> _T:
    """Give every HTTP request of an astroquery client a default socket timeout (the Portal and
    Service APIs and the downloads all share the client's ``_session``)."""
    session: requests.Session = client._session  # type: ignore[attr-defined]
    adapter = _DefaultTimeoutAdapter(timeout_s)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return client


def _is_transient(err: BaseException) -> bool:
    """HTTP 5xx, connection problems and timeouts: worth retrying after a pause."""
    if isinstance(err, requests.HTTPError):
        status = getattr(err.response, "status_code", None)
        return status is not None and status >= 500
    transient = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        TimeoutError,  # astroquery's long-poll limit
        _TransientDownloadError,
    )
    return isinstance(err, transient)


def _with_retries(
    call: Callable[[], _T], *, what: str, retries: int, backoff_s: float, sleep: Callable[[float], None]
) -> _T:
    """Run ``call``; on transient errors retry up to ``retries`` times, sleeping
    ``backoff_s · 2**attempt`` in between, then raise :class:`DownloadError`. Errors MAST
    reports about the request itself become :class:`MastFetchError`; others propagate."""
    attempt = 0
    while True:
        try:
            return call()
        except (RemoteServiceError, InvalidQueryError) as err:
            raise MastFetchError(f"{what}: MAST refused the request: {err}") from err
        except Exception as err:
            if not _is_transient(err):
                raise
            if attempt >= retries:
                raise DownloadError(f"{what} failed after {attempt + 1} attempts: {type(err).__name__}: {err}") from err
            sleep(backoff_s * 2**attempt)
            attempt += 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(manifest_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a manifest written by :func:`fetch_hst`."""
    return json.loads(Path(manifest_path).read_text(encoding="utf-8"))


def manifest_science_path(manifest_path: str | os.PathLike[str]) -> Path:
    """Absolute path of the science FITS file recorded in a manifest."""
    p = Path(manifest_path)
    return p.parent / read_manifest(p)["file"]["name"]


def _verified(outdir: Path, request: dict[str, Any]) -> bool:
    """True if the manifest in ``outdir`` matches ``request`` and its file is intact."""
    manifest = outdir / MANIFEST_NAME
    try:
        recorded = read_manifest(manifest)
        entry = recorded["file"]
        target = outdir / entry["name"]
        return (
            recorded.get("version") == _MANIFEST_VERSION
            and recorded.get("request") == request
            and target.is_file()
            and target.stat().st_size == entry["size"]
            and _sha256(target) == entry["sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_coverage(path: Path, ra: float, dec: float) -> None:
    """Raise :class:`NoCoverageError` unless the science image has valid data at the target."""
    with fits.open(path, memmap=False) as hdul:
        hdu = find_science_hdu(hdul)
        w = celestial_wcs(hdu.header, hdul, path)
        x, y = w.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        ny, nx = hdu.data.shape
        ix, iy = int(round(float(x))), int(round(float(y)))
        inside = 0 <= ix < nx and 0 <= iy < ny
        value = hdu.data[iy, ix] if inside else np.nan
        weight = hdul["WHT"].data[iy, ix] if inside and "WHT" in hdul else 1.0
    if not (inside and np.isfinite(value) and value != 0 and weight > 0):
        raise NoCoverageError(f"{path.name}: no valid data at RA={ra:.5f}, Dec={dec:.5f} (pixel {x:.1f}, {y:.1f})")


def _hapcut_layer_token(instrument: str, filter_name: str) -> str:
    """HAPCut layer suffix, e.g. ``acs_wfc_f814w`` for ('ACS/WFC', 'F814W')."""
    return f"{instrument.replace('/', '_')}_{filter_name}".lower()


def _fetch_hapcut(
    lens: LensSpec,
    tmpdir: Path,
    *,
    size_arcsec: float,
    instrument: str,
    filter_name: str,
    timeout_s: float,
    retry: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    client = _with_timeout(HapcutClass(), timeout_s)
    coords = SkyCoord(lens.ra_deg, lens.dec_deg, unit="deg")

    def download() -> Table:
        for stale in tmpdir.iterdir():  # partial zip/members of a failed attempt
            stale.unlink()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NoResultsWarning)
            table = client.download_cutouts(coords, size=size_arcsec * u.arcsec, path=str(tmpdir))
        if len(table) == 0:
            reason = "; ".join(str(w.message) for w in caught if issubclass(w.category, NoResultsWarning))
            raise NoCoverageError(f"{lens.name}: HAPCut returned no cutout ({reason or 'empty response'})")
        return table

    table = _with_retries(download, what=f"HAPCut download for {lens.name}", **retry)
    token = _hapcut_layer_token(instrument, filter_name)
    members = sorted(Path(str(p)).name for p in table["Local Path"])
    matching = [m for m in members if Path(m).stem.lower().endswith(token)]
    if not matching:
        got = ", ".join(members)
        raise NoProductsError(f"{lens.name}: HAPCut has no {instrument} {filter_name} layer (got: {got})")
    return tmpdir / matching[0], {"service": "hapcut", "member": matching[0]}


def _fetch_drizzled(
    lens: LensSpec, tmpdir: Path, *, instrument: str, filter_name: str, timeout_s: float, retry: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    client = _with_timeout(ObservationsClass(), timeout_s)
    coords = SkyCoord(lens.ra_deg, lens.dec_deg, unit="deg")

    def query() -> Table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            return client.query_criteria(
                coordinates=coords,
                radius=30 * u.arcsec,
                obs_collection="HST",
                dataproduct_type="image",
                intentType="science",
                instrument_name=[instrument],
                filters=[f"*{filter_name}*"],
            )

    observations = _with_retries(query, what=f"MAST query for {lens.name}", **retry)
    if len(observations) == 0:
        raise NoCoverageError(f"{lens.name}: no HST {instrument} {filter_name} image observations within 30\"")
    products = _with_retries(
        lambda: client.get_product_list(observations), what=f"product list for {lens.name}", **retry
    )
    science = client.filter_products(
        products, productType="SCIENCE", productSubGroupDescription=["DRC", "DRZ"], extension="fits"
    )
    if len(science) == 0:
        raise NoProductsError(f"{lens.name}: {len(observations)} observations but no DRC/DRZ science products")
    exptime = {str(o["obsid"]): float(o["t_exptime"]) for o in observations}
    parent = "parent_obsid" if "parent_obsid" in science.colnames else "obsID"

    def rank(row: Any) -> tuple[int, float, str]:
        depth = exptime.get(str(row[parent]), exptime.get(str(row["obsID"]), 0.0))
        return (0 if row["productSubGroupDescription"] == "DRC" else 1, -depth, str(row["productFilename"]))

    best = min(science, key=rank)
    chosen = science[best.index : best.index + 1]

    def download() -> Path:
        manifest = client.download_products(chosen, download_dir=str(tmpdir), flat=True, cache=False, verbose=False)
        if manifest is None or len(manifest) == 0:
            raise NoProductsError(f"{lens.name}: nothing to download for {best['productFilename']}")
        row = manifest[0]
        if row["Status"] != "COMPLETE":
            # astroquery catches HTTPError and reports it only as text: "HTTPError: 503 Server Error: …"
            message = str(row["Message"])
            status = re.match(r"HTTPError: (\d{3}) ", message)
            if status and int(status.group(1)) >= 500:
                raise _TransientDownloadError(message)
            raise DownloadError(f"{lens.name}: download of {best['dataURI']} ended with {row['Status']}: {message}")
        return Path(str(row["Local Path"]))

    path = _with_retries(download, what=f"download of {best['productFilename']}", **retry)
    source = {
        "service": "mast-observations",
        "dataURI": str(best["dataURI"]),
        "obs_id": str(best["obs_id"]),
        "product": str(best["productFilename"]),
        "url": f"{client._portal_api_connection.MAST_DOWNLOAD_URL}?uri={best['dataURI']}",
    }
    return path, source


def fetch_hst(
    lens: LensSpec,
    outdir: str | os.PathLike[str],
    *,
    method: FetchMethod = "hapcut",
    size_arcsec: float = 30.0,
    instrument: str = "ACS/WFC",
    filter: str = "F814W",
    retries: int = 4,
    backoff_s: float = 5.0,
    timeout_s: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetch the HST image of ``lens`` into ``outdir`` and return the manifest path.

    ``outdir`` receives :data:`SCIENCE_NAME` (the verified FITS file) and :data:`MANIFEST_NAME`
    (JSON: the request, the file's name, size, sha256 and source product/URL; no timestamps).
    If the manifest already matches the request and the file's size and sha256, nothing is
    downloaded and no network call is made.

    Args:
        lens: the target (its RA/Dec are used; MAST target names vary, coordinates do not).
        outdir: per-lens output directory (created).
        method: ``"hapcut"`` (HAP mosaic cutout, default) or ``"drizzled"`` (DRC/DRZ frame).
        size_arcsec: HAPCut cutout side (ignored by ``"drizzled"``). It must hold the
            background annulus of preprocessing (default 8"–12" radius → 30"), beyond the
            final 4" grid.
        instrument, filter: e.g. ``"ACS/WFC"``, ``"F814W"``.
        retries, backoff_s: transient failures are retried ``retries`` times after sleeping
            ``backoff_s · 2**attempt`` seconds.
        timeout_s: socket timeout of each HTTP request.
        sleep: sleep function (injectable for tests).

    Raises:
        NoCoverageError: no image of this instrument/filter covers the target.
        NoProductsError: observations exist but no matching product/layer.
        DownloadError: persistent transient failures, or a download status ERROR.
        CorruptFitsError: the downloaded file fails FITS checksum/read verification.
        MastFetchError: MAST rejected the query (status ERROR / invalid request).
    """
    if method not in ("hapcut", "drizzled"):
        raise ValueError(f"unknown fetch method {method!r}; use 'hapcut' or 'drizzled'")
    if not (size_arcsec > 0 and math.isfinite(size_arcsec)):
        raise ValueError(f"size_arcsec must be positive, got {size_arcsec!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    request: dict[str, Any] = {
        "lens": lens.name,
        "ra_deg": lens.ra_deg,
        "dec_deg": lens.dec_deg,
        "method": method,
        "instrument": instrument,
        "filter": filter,
    }
    if method == "hapcut":
        request["size_arcsec"] = size_arcsec
    if _verified(out, request):
        return out / MANIFEST_NAME

    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for stale in out.glob(".fetch-*"):  # left behind by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmpdir = Path(tempfile.mkdtemp(dir=out, prefix=".fetch-"))
    try:
        retry = {"retries": retries, "backoff_s": backoff_s, "sleep": sleep}
        common = {"instrument": instrument, "filter_name": filter, "timeout_s": timeout_s, "retry": retry}
        if method == "hapcut":
            downloaded, source = _fetch_hapcut(lens, tmpdir, size_arcsec=size_arcsec, **common)
        else:
            downloaded, source = _fetch_drizzled(lens, tmpdir, **common)
        verify_fits(downloaded)
        _check_coverage(downloaded, lens.ra_deg, lens.dec_deg)
        final = out / SCIENCE_NAME
        size, digest = downloaded.stat().st_size, _sha256(downloaded)
        os.replace(downloaded, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    manifest = {
        "version": _MANIFEST_VERSION,
        "request": request,
        "file": {"name": SCIENCE_NAME, "size": size, "sha256": digest, "source": source},
    }
    _atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out / MANIFEST_NAME
