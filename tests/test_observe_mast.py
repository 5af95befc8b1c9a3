"""Offline tests of :func:`lensinfer.observe.mast.fetch_hst` (issue 5, item 4).

Every fetch path runs through the real astroquery 0.4.11 code; only the transport layer is
replaced (observations.md §2): ``PortalAPI._request`` serves the JSON fixtures in
``tests/fixtures/mast`` (MAST Portal response format), ``ObservationsClass._download_file`` and
``HapcutClass._download_file`` write FITS/zip payloads generated here, and
``ServiceAPI._request`` is patched to fail loudly (HAPCut downloads go through
``_download_file``). Real sockets are blocked by an autouse guard on ``HTTPAdapter.send``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import requests
from astroquery.mast import HapcutClass, ObservationsClass
from astroquery.mast.discovery_portal import PortalAPI
from astroquery.mast.services import ServiceAPI
from astroquery.utils.mocks import MockResponse

from lensinfer.observe.errors import (
    CorruptFitsError,
    DownloadError,
    MastFetchError,
    NoCoverageError,
    NoProductsError,
)
from lensinfer.observe.fitsio import write_hst_like_fits
from lensinfer.observe.lenses import reference_lens
from lensinfer.observe.mast import MANIFEST_NAME, SCIENCE_NAME, fetch_hst, manifest_science_path, read_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "mast"
LENS = reference_lens("J0946+1006")
ACS_MEMBER = "hst_cutout_skycell-p1234x05y06-ra146d7362-decp10d1147_acs_wfc_f814w.fits"
UVIS_MEMBER = "hst_cutout_skycell-p1234x05y06-ra146d7362-decp10d1147_wfc3_uvis_f814w.fits"
DEEP_DRC = "j9c701010_drc.fits"
BACKOFF = 0.25


def _fits_bytes(
    directory: Path, name: str, *, rotation: float = 0.0, scale: float = 0.04, nan_centre: bool = False
) -> bytes:
    """A small HST-like file centred on the lens (what a cutout or a drizzled frame holds)."""
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    image = 0.05 + 2.0 * np.exp(-0.5 * (xx**2 + yy**2) / 3.0**2)
    if nan_centre:
        image[24:40, 24:40] = np.nan
    options = {"ra": LENS.ra_deg, "dec": LENS.dec_deg, "exptime": 2088.0, "zero_point": 25.95}
    path = write_hst_like_fits(directory / name, image, pixel_scale_arcsec=scale, rotation_deg=rotation, **options)
    return path.read_bytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), payload)
    return buffer.getvalue()


def _http_error(status: int, url: str) -> requests.HTTPError:
    """The exception ``raise_for_status`` raises for a real response with this status."""
    response = requests.Response()
    response.status_code, response.url = status, url
    response.reason = {404: "Not Found", 503: "Service Unavailable"}[status]
    try:
        response.raise_for_status()
    except requests.HTTPError as err:
        return err
    raise AssertionError(status)


class FakeMast:
    """Transport-level stand-in for MAST: serves fixtures, records calls, injects failures.

    ``script[kind]`` is a queue of behaviours consumed one per call (default ``"ok"``):
    ``"503"``, ``"404"``, ``"conn"``, ``"timeout"``, ``"error-json"`` or ``"ok"``.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.calls: list[tuple[str, str]] = []
        self.script: dict[str, list[str]] = {"portal": [], "download": [], "hapcut": []}
        self.portal_files = {
            "Mast.Caom.Filtered.Position": "caom_position_j0946.json",
            "Mast.Caom.Products": "caom_products_j0946.json",
        }
        payloads = tmp_path / "payloads"
        payloads.mkdir()
        self.acs = _fits_bytes(payloads, "acs.fits")
        self.hapcut_payload = _zip({UVIS_MEMBER: _fits_bytes(payloads, "uvis.fits"), ACS_MEMBER: self.acs})
        self.drc = _fits_bytes(payloads, "drc.fits", rotation=-73.0, scale=0.05)
        self.products = {DEEP_DRC: self.drc, "j9c702010_drc.fits": b"shallow frame: must not be chosen"}

    def _next(self, kind: str, url: str) -> str:
        self.calls.append((kind, url))
        action = self.script[kind].pop(0) if self.script[kind] else "ok"
        if action == "503":
            raise _http_error(503, url)
        if action == "404":
            raise _http_error(404, url)
        if action == "conn":
            raise requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, 'reset by peer'))")
        if action == "timeout":
            raise requests.ReadTimeout("Read timed out. (read timeout=120)")
        return action

    # --- the patched methods (``api``/``client`` is the astroquery object) ---
    def portal_request(self, api: PortalAPI, method: str, url: str, data: Any = None, **kw: Any) -> list:
        action = self._next("portal", f"{url} {unquote(str(data))}")
        if "columnsconfig" in url:
            name = "columnsconfig.json"
        else:  # data = "request=" + url-encoded JSON naming the Mashup service
            service = json.loads(unquote(data).removeprefix("request="))["service"]
            name = self.portal_files[service]
        content = (FIXTURES / name).read_bytes()
        if action == "error-json":
            content = json.dumps({"status": "ERROR", "msg": "Request Object is Malformed", "data": None}).encode()
        return [MockResponse(content)]  # a list: the real method returns all long-poll pages

    def service_request(self, api: ServiceAPI, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("service", url))
        raise AssertionError("ServiceAPI._request is not expected to be used")

    def observations_download(self, client: ObservationsClass, url: str, local_path: str, **kw: Any) -> None:
        self._next("download", url)
        Path(local_path).write_bytes(self.products[url.rsplit("/", 1)[-1]])

    def hapcut_download(self, client: HapcutClass, url: str, local_path: str, **kw: Any) -> None:
        self._next("hapcut", url)
        Path(local_path).write_bytes(self.hapcut_payload)


@pytest.fixture(autouse=True)
def no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, request: requests.PreparedRequest, **kwargs: Any) -> None:
        raise AssertionError(f"real network access attempted: {request.method} {request.url}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMast]:
    mast = FakeMast(tmp_path)
    monkeypatch.setattr(PortalAPI, "_column_configs", {})  # class-level cache in astroquery
    monkeypatch.setattr(PortalAPI, "_request", lambda api, *a, **k: mast.portal_request(api, *a, **k))
    monkeypatch.setattr(ServiceAPI, "_request", lambda api, *a, **k: mast.service_request(api, *a, **k))
    monkeypatch.setattr(ObservationsClass, "_download_file", lambda c, *a, **k: mast.observations_download(c, *a, **k))
    monkeypatch.setattr(HapcutClass, "_download_file", lambda c, *a, **k: mast.hapcut_download(c, *a, **k))
    yield mast


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _fetch(outdir: Path, sleeps: Sleeps | None = None, **kwargs: Any) -> Path:
    options: dict[str, Any] = {"retries": 2, "backoff_s": BACKOFF, "sleep": sleeps if sleeps is not None else Sleeps()}
    options.update(kwargs)
    return fetch_hst(LENS, outdir, **options)


def _listing(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []


# ------------------------------------------------------------------ HAPCut (default method)
def test_hapcut_success(tmp_path: Path, fake: FakeMast) -> None:
    manifest_path = _fetch(tmp_path / "out", size_arcsec=12.0)
    assert manifest_path == tmp_path / "out" / MANIFEST_NAME
    assert _listing(tmp_path / "out") == [MANIFEST_NAME, SCIENCE_NAME]  # no temp leftovers
    science = manifest_science_path(manifest_path)
    assert science.read_bytes() == fake.acs  # the ACS/WFC F814W layer, exactly the server's bytes
    manifest = read_manifest(manifest_path)
    assert manifest["file"] == {
        "name": SCIENCE_NAME,
        "size": len(fake.acs),
        "sha256": hashlib.sha256(fake.acs).hexdigest(),
        "source": {"service": "hapcut", "member": ACS_MEMBER},
    }
    assert manifest["request"] == {
        "lens": "J0946+1006",
        "ra_deg": LENS.ra_deg,
        "dec_deg": LENS.dec_deg,
        "method": "hapcut",
        "instrument": "ACS/WFC",
        "filter": "F814W",
        "size_arcsec": 12.0,
    }
    assert "time" not in manifest_path.read_text()
    assert len(fake.calls) == 1
    kind, url = fake.calls[0]
    assert kind == "hapcut" and "hapcut/api/v0.1/astrocut?ra=146.73616" in url and "&dec=10.11466" in url
    assert "&x=0.0033333" in url and "&y=0.0033333" in url and url.endswith("&units=d")  # 12" sent in degrees


def test_hapcut_503_then_success(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["hapcut"] = ["503"]
    sleeps = Sleeps()
    manifest = _fetch(tmp_path / "out", sleeps)
    assert sleeps == [BACKOFF] and len(fake.calls) == 2
    assert manifest_science_path(manifest).read_bytes() == fake.acs


def test_connection_errors_and_timeouts_back_off_exponentially(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["hapcut"] = ["conn", "timeout", "503"]
    sleeps = Sleeps()
    _fetch(tmp_path / "out", sleeps, retries=3)
    assert sleeps == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF] and len(fake.calls) == 4


def test_persistent_failure_leaves_nothing(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["hapcut"] = ["503"] * 3
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match=r"failed after 3 attempts: HTTPError: 503 Server Error"):
        _fetch(tmp_path / "out", sleeps)
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    assert _listing(tmp_path / "out") == []


def test_hapcut_no_coverage(tmp_path: Path, fake: FakeMast) -> None:
    fake.hapcut_payload = (FIXTURES / "hapcut_no_coverage.json").read_bytes()
    sleeps = Sleeps()
    with pytest.raises(NoCoverageError, match="Missing HAP files for input target"):
        _fetch(tmp_path / "out", sleeps)
    assert sleeps == [] and _listing(tmp_path / "out") == []


def test_hapcut_without_requested_layer(tmp_path: Path, fake: FakeMast) -> None:
    fake.hapcut_payload = _zip({UVIS_MEMBER: fake.acs})
    with pytest.raises(NoProductsError, match=r"no ACS/WFC F814W layer \(got: .*wfc3_uvis_f814w.fits\)"):
        _fetch(tmp_path / "out")
    assert _listing(tmp_path / "out") == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_download_is_never_kept(tmp_path: Path, fake: FakeMast, damage: str) -> None:
    broken = bytearray(fake.acs)
    if damage == "flip":
        broken[-2880 * 2 + 40] ^= 0x10  # a SCI data byte: DATASUM/CHECKSUM mismatch
    else:
        del broken[-4000:]
    fake.hapcut_payload = _zip({ACS_MEMBER: bytes(broken)})
    with pytest.raises(CorruptFitsError):
        _fetch(tmp_path / "out")
    assert _listing(tmp_path / "out") == []


def test_no_data_at_target_is_no_coverage(tmp_path: Path, fake: FakeMast) -> None:
    fake.hapcut_payload = _zip({ACS_MEMBER: _fits_bytes(tmp_path, "edge.fits", nan_centre=True)})
    with pytest.raises(NoCoverageError, match="no valid data at RA=146.73617"):
        _fetch(tmp_path / "out")
    assert _listing(tmp_path / "out") == []


def test_verified_files_need_no_network(tmp_path: Path, fake: FakeMast, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    manifest = _fetch(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fake.calls.clear()
    for cls in (PortalAPI, ServiceAPI, ObservationsClass, HapcutClass):
        for name in ("_request", "_download_file"):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, lambda *a, **k: pytest.fail("transport called"))
    monkeypatch.setattr(HapcutClass, "__init__", lambda self: pytest.fail("astroquery client created"))
    assert _fetch(out) == manifest
    assert fake.calls == [] and {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_damaged_or_changed_request_refetches(tmp_path: Path, fake: FakeMast) -> None:
    out = tmp_path / "out"
    manifest = _fetch(out)
    first = manifest.read_bytes()
    science = out / SCIENCE_NAME
    damaged = bytearray(science.read_bytes())
    damaged[-10] ^= 0x01
    science.write_bytes(bytes(damaged))  # same size, different sha256
    fake.calls.clear()
    _fetch(out)
    assert len(fake.calls) == 1 and science.read_bytes() == fake.acs and manifest.read_bytes() == first
    _fetch(out, size_arcsec=45.0)  # a different request is never satisfied by the old file
    assert len(fake.calls) == 2 and read_manifest(manifest)["request"]["size_arcsec"] == 45.0


def test_reruns_are_byte_identical(tmp_path: Path, fake: FakeMast) -> None:
    a, b = _fetch(tmp_path / "a"), _fetch(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / SCIENCE_NAME).read_bytes() == (tmp_path / "b" / SCIENCE_NAME).read_bytes()


def test_timeout_reaches_every_http_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real astroquery + requests stack down to the transport adapter, which times out."""
    seen: list[Any] = []

    def send(self: Any, request: requests.PreparedRequest, **kwargs: Any) -> None:
        seen.append((request.url, kwargs.get("timeout")))
        raise requests.ConnectTimeout("connect timeout")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="failed after 2 attempts: ConnectTimeout"):
        _fetch(tmp_path / "out", sleeps, retries=1, timeout_s=7.5)
    assert [t for _, t in seen] == [7.5, 7.5] and "astrocut" in seen[0][0] and sleeps == [BACKOFF]


# ------------------------------------------------------------------ DRC/DRZ via Observations
def test_drizzled_success_picks_deepest_drc(tmp_path: Path, fake: FakeMast) -> None:
    manifest_path = _fetch(tmp_path / "out", method="drizzled")
    assert manifest_science_path(manifest_path).read_bytes() == fake.drc
    source = read_manifest(manifest_path)["file"]["source"]
    assert source == {
        "service": "mast-observations",
        "dataURI": f"mast:HST/product/{DEEP_DRC}",
        "obs_id": "j9c701010",
        "product": DEEP_DRC,
        "url": f"https://mast.stsci.edu/api/v0.1/Download/file?uri=mast:HST/product/{DEEP_DRC}",
    }
    assert "size_arcsec" not in read_manifest(manifest_path)["request"]
    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["portal"] * 4 + ["download"]  # 2 column configs, position query, products, 1 file
    query = fake.calls[1][1]
    assert "Mast.Caom.Filtered.Position" in query and "ACS/WFC" in query and "%F814W%" in query and "science" in query
    assert fake.calls[-1][1].endswith(f"uri=mast:HST/product/{DEEP_DRC}")
    assert _listing(tmp_path / "out") == [MANIFEST_NAME, SCIENCE_NAME]


def test_drizzled_transient_query_and_download_errors(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["portal"] = ["503"]
    fake.script["download"] = ["503", "conn"]
    sleeps = Sleeps()
    manifest = _fetch(tmp_path / "out", sleeps, method="drizzled")
    assert sleeps == [BACKOFF, BACKOFF, 2 * BACKOFF]
    assert manifest_science_path(manifest).read_bytes() == fake.drc


def test_drizzled_persistent_download_failure(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["download"] = ["503"] * 3
    with pytest.raises(DownloadError, match=f"download of {DEEP_DRC} failed after 3 attempts: .*503 Server Error"):
        _fetch(tmp_path / "out", method="drizzled")
    assert _listing(tmp_path / "out") == []


def test_drizzled_download_status_error_is_not_retried(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["download"] = ["404"]
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="ended with ERROR: HTTPError: 404 Client Error"):
        _fetch(tmp_path / "out", sleeps, method="drizzled")
    assert sleeps == [] and _listing(tmp_path / "out") == []


def test_drizzled_no_coverage(tmp_path: Path, fake: FakeMast) -> None:
    fake.portal_files["Mast.Caom.Filtered.Position"] = "caom_position_empty.json"
    with pytest.raises(NoCoverageError, match="no HST ACS/WFC F814W image observations"):
        _fetch(tmp_path / "out", method="drizzled")
    assert _listing(tmp_path / "out") == []


def test_drizzled_no_products(tmp_path: Path, fake: FakeMast) -> None:
    fake.portal_files["Mast.Caom.Products"] = "caom_products_undrizzled.json"
    with pytest.raises(NoProductsError, match="2 observations but no DRC/DRZ science products"):
        _fetch(tmp_path / "out", method="drizzled")
    assert [kind for kind, _ in fake.calls].count("download") == 0


def test_drizzled_corrupt_download(tmp_path: Path, fake: FakeMast) -> None:
    fake.products[DEEP_DRC] = fake.drc[: len(fake.drc) // 2]
    with pytest.raises(CorruptFitsError):
        _fetch(tmp_path / "out", method="drizzled")
    assert _listing(tmp_path / "out") == []


def test_mast_error_status_is_reported(tmp_path: Path, fake: FakeMast) -> None:
    fake.script["portal"] = ["ok", "error-json"]  # the position query answers status ERROR
    with pytest.raises(MastFetchError, match="MAST refused the request: Request Object is Malformed"):
        _fetch(tmp_path / "out", method="drizzled")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fetch method"):
        fetch_hst(LENS, tmp_path, method="ftp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size_arcsec"):
        fetch_hst(LENS, tmp_path, size_arcsec=0.0)
