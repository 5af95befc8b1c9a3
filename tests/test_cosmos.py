"""COSMOS sources through paltas (project fixture and, when present, the shared 10-galaxy catalog) and the download."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import requests

from lensinfer.simulate.cosmos_download import VERIFIED_NAME, CosmosDownloadError, download_cosmos
from lensinfer.simulate.sources import CosmosSource, read_split_lists

from .cosmos_fixture import make_cosmos_fixture

ROOT = Path(__file__).resolve().parents[1]
SHARED_CATALOG = ROOT.parent / "shared" / "data" / "cosmos_test_catalog"


def _cfg(folder: Path) -> dict:
    return {"type": "cosmos", "catalog_dir": str(folder), "split_lists": str(ROOT / "resources" / "cosmos"),
            "minimum_size_in_pixels": 64, "faintest_apparent_mag": 20.0, "max_z": 1.0, "min_flux_radius": 10.0,
            "smoothing_sigma": 0.0, "random_rotation": True, "center_x": {"uniform": [-0.1, 0.1]},
            "center_y": {"uniform": [-0.1, 0.1]}}


def test_split_lists_match_the_reference():
    bad, val = read_split_lists(ROOT / "resources" / "cosmos")
    assert len(bad) == 110 and len(val) == 99 and bad[0] == 79 and val[0] == 548
    assert not set(bad) & set(val)


def test_fixture_draws_are_deterministic_and_lens(tmp_path):
    src = CosmosSource(_cfg(make_cosmos_fixture(tmp_path / "cat")), "train", 25.127)
    assert list(src.eligible) == list(range(6))
    a = src.draw(np.random.default_rng(1), 0.6, 0.05, -0.02)
    b = src.draw(np.random.default_rng(1), 0.6, 0.05, -0.02)
    assert a[0] == ["INTERPOL"] and a[2] == b[2]
    np.testing.assert_array_equal(a[1][0]["image"], b[1][0]["image"])
    assert a[1][0]["center_x"] == 0.05 and 0 <= a[2]["source_phi"] < 2 * np.pi
    with pytest.raises(ValueError, match="no COSMOS galaxy"):
        CosmosSource(_cfg(tmp_path / "cat"), "val", 25.127)  # none of the fixture galaxies is a validation galaxy


def test_shard_with_cosmos_sources(tmp_path, root):
    from lensinfer.config import load_config
    from lensinfer.data.store import read_shard_table
    from lensinfer.simulate.shard import simulate_shard

    cfg = load_config(root / "config" / "test.yaml")
    cfg["lens"]["source"] = _cfg(make_cosmos_fixture(tmp_path / "cat"))
    cfg["datasets"]["train"]["shard_size"] = 3
    data = simulate_shard(cfg, "train", 0, tmp_path / "s.zarr", progress=False)
    params, columns, _, _ = read_shard_table(tmp_path / "s.zarr")
    assert "source_catalog_index" in columns and np.isfinite(data.images).all()
    assert data.images.max() > 10 * data.images.std() / 10  # lensed light present


@pytest.mark.skipif(not SHARED_CATALOG.exists(), reason="shared 10-galaxy COSMOS catalog not present")
def test_shared_ten_galaxy_catalog(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    for f in SHARED_CATALOG.glob("*.fits"):
        shutil.copy(f, folder / f.name)
    src = CosmosSource(dict(_cfg(folder), minimum_size_in_pixels=None, faintest_apparent_mag=None,
                            min_flux_radius=None, max_z=None), "all", 25.127)
    assert len(src.catalog) == 10
    models, kwargs, extra = src.draw(np.random.default_rng(0), 0.6, 0.0, 0.0)
    from lenstronomy.LightModel.light_model import LightModel

    x, y = np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-1, 1, 21))
    flux = LightModel(models).surface_brightness(x.ravel(), y.ravel(), kwargs)
    assert np.isfinite(flux).all() and flux.max() > 0


# --- download, through requests' real Session with only the transport adapter replaced -------------------------

def _tarball(tmp_path: Path, corrupt: bool = False) -> bytes:
    cat = make_cosmos_fixture(tmp_path / "COSMOS_23.5_training_sample")
    if corrupt:
        raw = bytearray((cat / "real_galaxy_images_23.5_n1.fits").read_bytes())
        raw[3000:3010] = b"XXXXXXXXXX"
        (cat / "real_galaxy_images_23.5_n1.fits").write_bytes(bytes(raw))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(cat, arcname="COSMOS_23.5_training_sample")
    return buf.getvalue()


class FakeAdapter(requests.adapters.HTTPAdapter):
    """Answers from a script of (status, body | exception) and counts the calls."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.calls = 0

    def send(self, request, **kwargs):
        self.calls += 1
        status, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(body, Exception):
            raise body
        resp = requests.Response()
        resp.status_code, resp.raw, resp.url, resp.request = status, io.BytesIO(body), request.url, request
        resp.headers["Content-Length"] = str(len(body))
        return resp


def _session(adapter):
    s = requests.Session()
    s.mount("https://", adapter)
    return s


URL = "https://example.invalid/COSMOS_23.5_training_sample.tar.gz"


def test_download_retries_then_verifies(tmp_path):
    body = _tarball(tmp_path)
    adapter = FakeAdapter([(503, b""), (200, body)])
    sleeps = []
    record = download_cosmos(URL, tmp_path / "cosmos", session=_session(adapter), sleep=sleeps.append, backoff_s=1)
    assert adapter.calls == 2 and sleeps == [1]
    info = json.loads(record.read_text())
    assert info["image_files"] == 1 and len(info["sha256"]) == 64
    assert (tmp_path / "cosmos" / "real_galaxy_catalog_23.5.fits").exists()
    # verified already: no network at all
    again = FakeAdapter([(500, b"")])
    download_cosmos(URL, tmp_path / "cosmos", session=_session(again), sleep=sleeps.append)
    assert again.calls == 0


def test_download_persistent_failure_leaves_nothing(tmp_path):
    adapter = FakeAdapter([(None, requests.ConnectionError("reset"))])
    with pytest.raises(CosmosDownloadError, match="after 3 attempt"):
        download_cosmos(URL, tmp_path / "cosmos", session=_session(adapter), sleep=lambda s: None, retries=2)
    assert not (tmp_path / "cosmos").exists() and not list(tmp_path.glob("cosmos.partial*"))


def test_download_checksum_and_corruption_are_refused(tmp_path):
    body = _tarball(tmp_path)
    with pytest.raises(CosmosDownloadError, match="sha256"):
        download_cosmos(URL, tmp_path / "a", sha256="0" * 64, session=_session(FakeAdapter([(200, body)])))
    with pytest.raises(CosmosDownloadError, match="not a readable tar"):
        download_cosmos(URL, tmp_path / "b", session=_session(FakeAdapter([(200, body[: len(body) // 2] + b"junk")])))
    bad = _tarball(tmp_path / "x", corrupt=True)
    with pytest.raises(CosmosDownloadError, match="unreadable FITS"):
        download_cosmos(URL, tmp_path / "c", session=_session(FakeAdapter([(200, bad)])))
    with pytest.raises(CosmosDownloadError, match="404"):
        download_cosmos(URL, tmp_path / "d", session=_session(FakeAdapter([(404, b"")])), sleep=lambda s: None)
    assert not any((tmp_path / d / VERIFIED_NAME).exists() for d in "abcd")
