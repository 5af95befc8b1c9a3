"""The observation branch through Snakemake (issue 15; issue 21 item 5; issue 17 item 2).

* each ``observations.source`` runs its own rule and no other (dry-run DAGs of the paper, demo and local configs);
* no file of any config's DAG can be made by two rules (so no ``ruleorder`` can let one stand in for another);
* a run with ``source: mast`` and the HAPCut transport replaced (tests/fixtures/mast_transport/sitecustomize.py, the
  method tests/test_observe_mast.py replaces) preprocesses the downloaded frame — bit for bit, ``reference`` mode —
  and records the product and sha256 in metadata.json and summary.json;
* switching the source on an existing results/ reruns the observation branch from the new source;
* adding a lens or changing the exposure time does not re-download or re-preprocess the other lenses;
* a local frame without a celestial WCS fails naming the file, leaving no output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from lensinfer.observe.fitsio import write_hst_like_fits
from lensinfer.observe.lenses import reference_lens

from .conftest import copy_run
from .test_workflow import ROOT, SNAKEMAKE, planned_rules

pytestmark = pytest.mark.slow

TRANSPORT = ROOT / "tests" / "fixtures" / "mast_transport"
MAST_LENSES = ["J1023+4230", "J1627-0053"]
EXTRA_LENS = "J0946+1006"
MEMBER = "hst_cutout_skycell-p0000x00y00-{tag}_acs_wfc_f814w.fits"
FRAME_PIX, SCALE, NUM_PIX = 96, 0.12, 32  # test.yaml's grid: 32 × 0.12″; frames 11.5″ as a HAPCut cutout


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule → number of jobs, from the 'Job stats' table of a dry run."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def run(workdir: Path, config: Path, *args: str, env: dict | None = None, check: bool = True,
        timeout: int = 1500) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), *args]
    full_env = dict(os.environ, NUMBA_CACHE_DIR=str(ROOT / ".numba_cache"), **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def write_config(workdir: Path, name: str, edit) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    edit(cfg)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def mast_observations(lenses: list[str]) -> dict:
    return {"source": "mast", "preprocess": "reference", "lenses": list(lenses),
            "mast": {"method": "hapcut", "size_arcsec": FRAME_PIX * SCALE}}


def hapcut_fixture(folder: Path) -> dict[str, Path]:
    """HAPCut-like frames (north up, 0.12″/pix, e⁻/s, 96 px centred on each lens) and the transport's index."""
    folder.mkdir(parents=True, exist_ok=True)
    index, frames = [], {}
    rng = np.random.default_rng(15)
    for name in [*MAST_LENSES, EXTRA_LENS]:
        lens = reference_lens(name)
        data = (0.1 + rng.exponential(0.05, (FRAME_PIX, FRAME_PIX))).astype(np.float32)
        path = write_hst_like_fits(folder / f"{name}.fits", data, pixel_scale_arcsec=SCALE, ra=lens.ra_deg,
                                   dec=lens.dec_deg, exptime=2200.0, zero_point=25.94)
        index.append({"ra": lens.ra_deg, "dec": lens.dec_deg, "file": path.name,
                      "member": MEMBER.format(tag=name.replace("+", "p").replace("-", "m"))})
        frames[name] = path
    (folder / "index.json").write_text(json.dumps(index))
    return frames


def transport_env(folder: Path) -> dict[str, str]:
    return {"LENSINFER_TEST_HAPCUT_DIR": str(folder),
            "PYTHONPATH": os.pathsep.join([str(TRANSPORT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def downloads(folder: Path) -> list[str]:
    log = folder / "requests.log"
    return log.read_text().splitlines() if log.exists() else []


#: what the observation branch feeds: the inference summaries of both estimators and the observations figure
TARGETS = ["results/inference/nre/summary.json", "results/inference/npe/summary.json", "results/plots/observations.png"]


@pytest.fixture(scope="module")
def mast_run(tmp_path_factory: pytest.TempPathFactory, finished_test_run: Path) -> dict:
    """The test DAG up to the inference summaries with source: mast (reference preprocessing), the HAPCut transport
    replaced — on a copy of the session's finished mock run, so only the observation branch and what reads it run
    (the switch from mock to mast is itself the rerun a user's results/ sees)."""
    wd = copy_run(finished_test_run, tmp_path_factory.mktemp("mast") / "run")
    frames = hapcut_fixture(wd / "hapcut")
    config = write_config(wd, "mast", lambda c: c.update(observations=mast_observations(MAST_LENSES)))
    env = transport_env(wd / "hapcut")
    proc = run(wd, config, "--cores", "2", *TARGETS, env=env)
    return {"wd": wd, "config": config, "env": env, "frames": frames, "log": proc.stdout + proc.stderr}


def _read_frame(path: Path) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return np.asarray(hdul["SCI"].data)


def _check_mast_outputs(wd: Path, frames: dict[str, Path], lenses: list[str]) -> None:
    lo = (FRAME_PIX - NUM_PIX) // 2  # the lens at frame pixel 47.5 → cutout columns/rows 32..63
    for name in lenses:
        served = frames[name].read_bytes()
        image = np.load(wd / f"results/observations/processed/{name}/image.npy")
        cut = _read_frame(frames[name])[lo:lo + NUM_PIX, lo:lo + NUM_PIX].astype(np.float32)  # FITS is big-endian
        assert image.dtype == np.float32 and image.tobytes() == cut.tobytes()  # bit for bit
        meta = json.loads((wd / f"results/observations/processed/{name}/metadata.json").read_text())
        obs = meta["observation"]
        assert meta["preprocess"] == "reference"
        assert obs["source"] == "mast" and obs["file"] == f"results/observations/mast/{name}/science.fits"
        assert obs["product"].endswith("_acs_wfc_f814w.fits") and obs["mast"]["service"] == "hapcut"
        assert obs["sha256"] == hashlib.sha256(served).hexdigest()
    for est in ("nre", "npe"):
        summary = json.loads((wd / f"results/inference/{est}/summary.json").read_text())
        block = summary["observations"]
        assert block["source"] == "mast" and block["preprocess"] == "reference"
        # reference mode feeds the frames' raw e⁻/s at their own zero point (25.94) to a model trained at 25.127,
        # as the published run did — let through, and said in the summary for every lens
        notes = summary["input_notes"]
        assert len(notes) == len(lenses) and all("zero point 25.94" in n and "25.127" in n for n in notes)
        assert sorted(block["per_lens"]) == sorted(lenses)
        for name in lenses:
            assert block["per_lens"][name]["sha256"] == hashlib.sha256(frames[name].read_bytes()).hexdigest()
            assert block["per_lens"][name]["product"].endswith("_acs_wfc_f814w.fits")


def test_mast_run_preprocesses_the_download(mast_run: dict) -> None:
    wd, frames = mast_run["wd"], mast_run["frames"]
    log = mast_run["log"]  # the switch from the finished mock run: the downloads feed preprocess, nothing else runs
    assert log.count("rule fetch_hst:") == len(MAST_LENSES) and log.count("rule preprocess:") == len(MAST_LENSES)
    assert not re.search(r"^(local)?rule (observe_mock|simulate_shard|merge|train_nre|train_flow):", log, re.M)
    assert len(downloads(wd / "hapcut")) == len(MAST_LENSES)
    _check_mast_outputs(wd, frames, MAST_LENSES)
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(run(wd, mast_run["config"], "-n", *TARGETS))


def test_report_names_the_source_and_preprocessing(mast_run: dict) -> None:
    wd = mast_run["wd"]
    run(wd, mast_run["config"], "--report", str(wd / "report.html"), *TARGETS)
    html = (wd / "report.html").read_text(errors="ignore")
    literal = '<tt class=\\"docutils literal\\">{}</tt>'  # captions are embedded as JSON strings
    assert "Observations (source " + literal.format("mast") + ")" in html
    assert "Preprocessing " + literal.format("reference") + ", the published input" in html
    assert "preprocessing " + literal.format("reference") in html  # the per-lens diagnostic caption


def test_adding_a_lens_or_changing_the_exposure_leaves_the_other_lenses_alone(mast_run: dict) -> None:
    wd = mast_run["wd"]
    more = write_config(wd, "more", lambda c: c.update(observations=mast_observations([*MAST_LENSES, EXTRA_LENS])))
    counts = job_counts(run(wd, more, "-n", *TARGETS))
    assert counts["fetch_hst"] == 1 and counts["preprocess"] == 1 and "observe_mock" not in counts
    exposure = write_config(wd, "exposure", lambda c: (c.update(observations=mast_observations(MAST_LENSES)),
                                                       c["instrument"].update(exposure_time=1000)))
    planned = planned_rules(run(wd, exposure, "-n", *TARGETS))
    assert "simulate_shard" in planned  # the simulations do depend on it
    assert not planned & {"fetch_hst", "preprocess", "observe_mock"}


def test_switching_source_reruns_the_observation_branch(mast_run: dict) -> None:
    wd, env = mast_run["wd"], mast_run["env"]
    mock = write_config(wd, "mock", lambda c: None)  # test.yaml: source mock
    targets = TARGETS
    planned = planned_rules(run(wd, mock, "-n", *targets))
    assert {"preprocess", "infer", "infer_flow", "plot_observations"} <= planned
    # the mock frames of the finished mock run are kept in their own folder: switching back re-preprocesses them
    assert not planned & {"observe_mock", "fetch_hst", "simulate_shard", "merge", "train_nre", "train_flow"}
    run(wd, mock, "--cores", "2", *targets, env=env)
    truths = sorted((wd / "results/observations/mock").glob("*/truth.json"))
    mock_lenses = [json.loads(p.read_text())["name"] for p in truths]
    summary = json.loads((wd / "results/inference/nre/summary.json").read_text())
    assert summary["observations"]["source"] == "mock"
    assert sorted(summary["observations"]["per_lens"]) == sorted(mock_lenses)
    for name in mock_lenses:
        meta = json.loads((wd / f"results/observations/processed/{name}/metadata.json").read_text())
        assert meta["observation"]["source"] == "mock"
        assert meta["observation"]["file"].startswith("results/observations/mock/")
    # the preprocessing mode is not a simulation setting: switching it re-preprocesses the mocks, never re-simulates
    ref = write_config(wd, "mock_reference", lambda c: c["observations"].update(preprocess="reference"))
    counts = job_counts(run(wd, ref, "-n", *targets))
    assert counts.get("preprocess") == len(mock_lenses) and "observe_mock" not in counts
    # back to MAST: the verified downloads are kept (same request), only preprocessing and what follows rerun
    counts = job_counts(run(wd, mast_run["config"], "-n", *targets))
    assert counts.get("preprocess") == len(MAST_LENSES) and "fetch_hst" not in counts and "observe_mock" not in counts
    n_before = len(downloads(wd / "hapcut"))
    run(wd, mast_run["config"], "--cores", "2", *targets, env=env)
    assert len(downloads(wd / "hapcut")) == n_before
    _check_mast_outputs(wd, mast_run["frames"], MAST_LENSES)


# ------------------------------------------------------------------ dry runs: each source runs its own rule
@pytest.fixture(scope="module")
def dry_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with the repository's resources (PSF, COSMOS lists) and a local FITS folder."""
    wd = tmp_path_factory.mktemp("dry")
    (wd / "resources").symlink_to(ROOT / "resources")
    local = wd / "local_fits"
    local.mkdir()
    for name in MAST_LENSES:
        lens = reference_lens(name)
        write_hst_like_fits(local / f"{name}.fits", np.full((96, 96), 0.1), pixel_scale_arcsec=SCALE, ra=lens.ra_deg,
                            dec=lens.dec_deg, exptime=2200.0, zero_point=25.94)
    return wd


def local_observations(lenses: list[str]) -> dict:
    return {"source": "local", "local_dir": "local_fits", "preprocess": "reference",
            "lenses": [{"name": n, "file": f"{n}.fits"} for n in lenses]}


def test_each_source_runs_its_own_rule(dry_workdir: Path) -> None:
    wd = dry_workdir
    paper = job_counts(run(wd, ROOT / "config" / "paper.yaml", "-n", "--nolock"))
    assert paper["fetch_hst"] == 13 and paper["preprocess"] == 13 and "observe_mock" not in paper
    demo = job_counts(run(wd, ROOT / "config" / "config.yaml", "-n", "--nolock"))
    assert demo["observe_mock"] == 1 and demo["preprocess"] == 13 and "fetch_hst" not in demo
    local = write_config(wd, "local", lambda c: c.update(observations=local_observations(MAST_LENSES)))
    counts = job_counts(run(wd, local, "-n", "--nolock"))
    assert counts["preprocess"] == 2 and "fetch_hst" not in counts and "observe_mock" not in counts
    # the observation branch alone holds exactly its source's rule and preprocess
    processed = [f"results/observations/processed/{n}/metadata.json" for n in MAST_LENSES]
    mast = write_config(wd, "mast", lambda c: c.update(observations=mast_observations(MAST_LENSES)))
    mock = write_config(wd, "mock", lambda c: c["observations"]["mock"].update(n_lenses=2))
    assert job_counts(run(wd, mast, "-n", "--nolock", *processed)) == {"fetch_hst": 2, "preprocess": 2}
    assert job_counts(run(wd, mock, "-n", "--nolock", *processed)) == {"observe_mock": 1, "preprocess": 2}
    assert job_counts(run(wd, local, "-n", "--nolock", *processed)) == {"preprocess": 2}


def _producers(workdir: Path, configfile: Path) -> dict[str, list[str]]:
    """Every output file of the config's whole DAG (all jobs, as with --forceall) → the rules able to make it
    (Snakemake's own ``Rule.is_producer``: output patterns with their wildcard constraints)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    cwd = Path.cwd()
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                        config_settings=ConfigSettings(configfiles=[configfile]),
                                        storage_settings=StorageSettings(), snakefile=ROOT / "Snakefile",
                                        workdir=workdir)
            dag_api = workflow_api.dag(DAGSettings())
            wf = dag_api.workflow_api._workflow
            wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            wf._build_dag()
            files = {str(f) for job in wf.dag.jobs for f in job.output}
            return {f: [r.name for r in wf.rules if r.is_producer(f)] for f in files}
    finally:
        os.chdir(cwd)


def test_no_file_can_be_made_by_two_rules(dry_workdir: Path) -> None:
    sources = [p for p in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]]
    assert not [p.name for p in sources if re.search(r"^\s*ruleorder\s*:", p.read_text(), re.M)]
    wd = dry_workdir
    configs = [ROOT / "config" / n for n in ("config.yaml", "test.yaml", "survey.yaml", "paper.yaml")]
    configs += [write_config(wd, "local", lambda c: c.update(observations=local_observations(MAST_LENSES))),
                write_config(wd, "mast", lambda c: c.update(observations=mast_observations(MAST_LENSES)))]
    for config in configs:
        producers = _producers(wd, config)
        assert len(producers) > 20, config.name
        shared = {f: rules for f, rules in producers.items() if len(rules) != 1}
        assert not shared, f"{config.name}: files more than one rule can make: {shared}"


# ------------------------------------------------------------------ a bad frame through the workflow
def test_frame_without_wcs_fails_naming_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    from astropy.io import fits

    local = tmp_path / "local_fits"
    local.mkdir()
    lens = reference_lens(MAST_LENSES[0])
    good = write_hst_like_fits(local / "good.fits", np.full((96, 96), 0.1), pixel_scale_arcsec=SCALE, ra=lens.ra_deg,
                               dec=lens.dec_deg, exptime=2200.0, zero_point=25.94)
    with fits.open(good) as hdul:
        sci = hdul["SCI"].header
        for key in [k for k in sci if k[:5] in ("CTYPE", "CRVAL", "CRPIX") or k.startswith("CD")]:
            del sci[key]
        for hdu in hdul:
            hdu.add_checksum(when="HDU checksum")
        hdul.writeto(local / "nowcs.fits")
    config = write_config(tmp_path, "local", lambda c: c.update(observations={
        "source": "local", "local_dir": "local_fits", "preprocess": "reference",
        "lenses": [{"name": lens.name, "file": "nowcs.fits"}]}))
    out = tmp_path / f"results/observations/processed/{lens.name}"
    proc = run(tmp_path, config, "--cores", "1", f"results/observations/processed/{lens.name}/metadata.json", check=False)
    assert proc.returncode != 0
    log = (tmp_path / f"logs/observe/preprocess_{lens.name}.log").read_text()
    assert "nowcs.fits: the science image has no celestial WCS" in log
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(tmp_path / "local_fits")
