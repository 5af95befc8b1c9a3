"""Download and verify the COSMOS 23.5 training sample (GalSim RealGalaxy data) for COSMOS sources.

The archive (``COSMOS_23.5_training_sample.tar.gz``, several GB) is streamed to a temporary file with retries and
exponential backoff on HTTP 5xx, connection errors and timeouts, checked against a sha256 when the config gives
one, unpacked into a temporary folder, verified (the catalog files exist and every FITS file reads), and only then
renamed to its final place with a ``lensinfer_verified.json`` record — a truncated or corrupt download never looks
like a catalog. A folder that already carries a record is not downloaded again (from any URL), unless a given
sha256 differs from the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import requests

from .sources import COSMOS_FILES

__all__ = ["CosmosDownloadError", "download_cosmos", "verify_catalog", "VERIFIED_NAME"]

VERIFIED_NAME = "lensinfer_verified.json"


class CosmosDownloadError(RuntimeError):
    """The COSMOS archive could not be fetched or failed verification."""


def verify_catalog(folder: str | Path) -> dict[str, int]:
    """Check a catalog folder: both catalog tables and ≥ 1 image file, all readable FITS. Returns counts."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    folder = Path(folder)
    missing = [f for f in COSMOS_FILES if not (folder / f).exists()]
    images = sorted(folder.glob("real_galaxy_images_23.5_n*.fits"))
    if missing or not images:
        raise CosmosDownloadError(f"{folder}: not a COSMOS 23.5 catalog (missing {missing or 'image files'})")
    n_hdus = 0
    for path in [folder / f for f in COSMOS_FILES] + images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", AstropyUserWarning)  # checksum mismatches are only warnings
                with fits.open(path, checksum=True) as hdul:
                    for hdu in hdul:
                        _ = hdu.data
                    n_hdus += len(hdul)
        except Exception as exc:  # astropy raises several types for damaged files
            raise CosmosDownloadError(f"{path}: unreadable FITS ({exc})") from exc
    return {"image_files": len(images), "hdus": n_hdus}


def _find_catalog_root(root: Path) -> Path:
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / COSMOS_FILES[0]).exists():
            return candidate
    raise CosmosDownloadError("the archive holds no real_galaxy_catalog_23.5.fits")


def _fetch(url: str, target: Path, *, retries: int, backoff_s: float, timeout_s: float,
           sleep: Callable[[float], None], session: requests.Session) -> str:
    """Stream ``url`` into ``target``; returns the sha256 of the bytes."""
    for attempt in range(retries + 1):
        try:
            with session.get(url, stream=True, timeout=timeout_s) as resp:
                if resp.status_code >= 500:
                    raise requests.HTTPError(f"{resp.status_code} server error", response=resp)
                resp.raise_for_status()
                digest = hashlib.sha256()
                with open(target, "wb") as fh:
                    for block in resp.iter_content(1 << 20):
                        fh.write(block)
                        digest.update(block)
                expected = resp.headers.get("Content-Length")
                if expected is not None and target.stat().st_size != int(expected):
                    raise requests.ConnectionError(f"truncated: {target.stat().st_size} of {expected} bytes")
                return digest.hexdigest()
        except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as exc:
            transient = not isinstance(exc, requests.HTTPError) or (exc.response is not None and exc.response.status_code >= 500)
            if not transient or attempt == retries:
                raise CosmosDownloadError(f"download of {url} failed after {attempt + 1} attempt(s): {exc}") from exc
            sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def download_cosmos(url: str, dest: str | Path, *, sha256: str | None = None, retries: int = 4,
                    backoff_s: float = 10.0, timeout_s: float = 300.0, sleep: Callable[[float], None] = time.sleep,
                    session: requests.Session | None = None) -> Path:
    """Fetch, verify and unpack the COSMOS archive at ``url`` into ``dest``; returns ``dest/lensinfer_verified.json``."""
    dest = Path(dest)
    record_path = dest / VERIFIED_NAME
    if record_path.exists():  # a verified catalogue is kept, whichever mirror it came from
        record = json.loads(record_path.read_text())
        if sha256 is None or record.get("sha256") == sha256:
            return record_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=dest.name + ".partial-") as tmp:
        tmp_path = Path(tmp)
        archive = tmp_path / "archive.tar.gz"
        digest = _fetch(url, archive, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, sleep=sleep,
                        session=session or requests.Session())
        if sha256 is not None and digest != sha256:
            raise CosmosDownloadError(f"sha256 of {url} is {digest}, expected {sha256}")
        unpacked = tmp_path / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CosmosDownloadError(f"{url}: not a readable tar archive ({exc})") from exc
        root = _find_catalog_root(unpacked)
        counts = verify_catalog(root)
        (root / VERIFIED_NAME).write_text(json.dumps({"url": url, "sha256": digest, **counts}, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    return record_path
