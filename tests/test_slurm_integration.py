"""The workflow on a real single-node SLURM cluster (tests/cluster/run_slurm_integration.sh).

Opt-in: runs only with LENSINFER_SLURM_TESTS=1, as root, with SLURM installed (`sinfo` on PATH;
`bash tools/slurm_cluster.sh install` installs it). Everywhere else it is skipped with the reason,
so a plain `pytest` never starts daemons or calls apt-get.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "cluster" / "run_slurm_integration.sh"
# the script bounds its snakemake run (LENSINFER_SLURM_RUN_TIMEOUT, default 600 s) and every
# daemon wait; this is the outer bound including cluster start/stop and the checks
TIMEOUT_S = int(os.environ.get("LENSINFER_SLURM_RUN_TIMEOUT", "1200")) + 300

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("LENSINFER_SLURM_TESTS") != "1",
        reason="real-SLURM integration test: set LENSINFER_SLURM_TESTS=1 to run it",
    ),
    pytest.mark.skipif(
        shutil.which("sinfo") is None,
        reason="SLURM is not installed (no sinfo); see tools/slurm_cluster.sh install",
    ),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="the local SLURM cluster needs root",
    ),
]


#: the DAG up to both estimators' inference summaries: every GPU rule (train_nre, train_flow, curves), the grouped
#: simulation, calibration and the observation branch — the plots and report (cheap CPU jobs whose SLURM
#: overhead would double the test's time) are left to the local end-to-end tests
TARGETS = "results/inference/nre/summary.json results/inference/npe/summary.json"


def test_workflow_runs_on_slurm_with_gpu_request() -> None:
    env = dict(os.environ)
    env.setdefault("LENSINFER_SLURM_TARGETS", TARGETS)
    # the snakemake next to this interpreter (the project venv), unless the caller chose one
    here = Path(sys.executable).parent / "snakemake"
    if "SNAKEMAKE" not in env and here.exists():
        env["SNAKEMAKE"] = str(here)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # TERM to bash lets its EXIT trap stop snakemake and the daemons; KILL if that hangs
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"integration script exceeded {TIMEOUT_S}s:\n{out[-8000:]}")
    # the script's own report (timings, sacct lines) is useful in CI logs either way
    print(out[-20000:])
    assert proc.returncode == 0, f"integration script failed (exit {proc.returncode}):\n{out[-8000:]}"
    assert "accounting: all jobs COMPLETED, GPU only on the GPU rules" in out
