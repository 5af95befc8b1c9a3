"""The SLURM profile asks for a GPU for exactly the rules that declare one, and only via `gpu` (never also `gres`);
every profile's effective settings, parsed as Snakemake parses them, are what the profile says."""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def gpu_rules_declared() -> set[str]:
    rules = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+gpu=[1-9]", block, re.M):
                rules.add(m.group(1))
    return rules


def test_gpu_rules_match_profile() -> None:
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.v8+.yaml").read_text())
    declared = gpu_rules_declared()
    assert {"train_nre", "train_flow", "curves", "posterior_samples"} <= declared
    tagged = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
    assert tagged == declared
    for rule, res in profile["set-resources"].items():
        assert not ("gpu" in res and "gres" in res), f"{rule}: gpu and gres together"


# --- the effective settings of each profile, parsed as Snakemake does (issue 21 item 1) ---------------------------

# a partition time limit many sites have; the profile documents that its simulation group jobs ask for far less
PARTITION_LIMIT_MIN = 24 * 60
GROUP_RUNTIME_GOAL_MIN = 16 * 60  # the profile's documented request of a full simulation group job


def effective(*argv: str):
    """snakemake's parsed options for ``snakemake <argv>`` run from the repository root: the --profile and the
    workflow profile (profiles/default, loaded automatically) merged exactly as the snakemake CLI merges them."""
    from snakemake.cli import parse_args

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _, args = parse_args(list(argv))
    finally:
        os.chdir(cwd)
    return args


def triggers(args) -> set[str]:
    return {t.name.lower().replace("_", "-") for t in args.rerun_triggers}


def test_slurm_profile_settings_take_effect() -> None:
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    args = effective("--profile", "profiles/slurm", "-n")
    assert args.executor == "slurm"
    assert args.cores == 8 and args.keep_going is True
    assert args.jobs == 100 and args.retries == 1 and args.rerun_incomplete is True
    assert DeploymentMethod.CONDA in args.software_deployment_method
    assert args.configfile and str(args.configfile[0]) == "config/paper.yaml"
    # the shared workflow profile still applies
    assert triggers(args) == {"mtime", "params", "input", "software-env", "code"}


def test_plain_run_uses_snakemake_defaults() -> None:
    args = effective("-n")
    assert args.cores is None and args.keep_going is False and not args.software_deployment_method
    assert triggers(args) == {"mtime", "params", "input", "software-env", "code"} and args.rerun_incomplete is True


def test_workflow_profile_overrides_no_other_profile() -> None:
    """profiles/default is loaded with every --profile and wins: it may hold only keys that every other profile
    leaves unset or sets to the same value."""
    default = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert not {"cores", "keep-going", "executor", "jobs", "default-resources", "set-resources"} & set(default)
    others = [p for p in (ROOT / "profiles").glob("*/config*.yaml") if p.parent.name != "default"]
    assert others
    for path in others:
        profile = yaml.safe_load(path.read_text())
        for key, value in default.items():
            assert profile.get(key, value) == value, f"{path}: {key} is overridden by profiles/default"


def _group_request(cores: int, jobs: list[dict]) -> dict:
    """The resources snakemake requests for a group job of ``jobs`` (snakemake.resources.GroupResources, as
    GroupJob.resources calls it)."""
    from snakemake.resources import GroupResources
    from snakemake.settings.types import ResourceSettings

    settings = ResourceSettings(cores=cores, nodes=100)
    constraints = settings._parsed_resources
    constraints["_cores"] = settings.cores
    constraints["_nodes"] = settings.nodes
    return GroupResources.basic_layered(
        toposorted_jobs=[[SimpleNamespace(resources=r, pipe_group=None) for r in jobs]],
        constraints=constraints, run_local=False, additive_resources=["runtime"], sortby=["runtime"])


@pytest.mark.slow
def test_simulation_group_request_within_limit() -> None:
    """A full simulation group job of the paper config under --profile profiles/slurm: its runtime request, from the
    rules' own resources (read from the profile's dry run) and the profile's effective cores and group size."""
    args = effective("--profile", "profiles/slurm", "-n")
    groups = dict(args.groups) if isinstance(args.groups, dict) else dict(g.split("=") for g in args.groups)
    components = dict(args.group_components) if isinstance(args.group_components, dict) else {
        k: int(v) for k, v in (g.split("=") for g in args.group_components)}
    assert groups.get("simulate_shards") == groups.get("simulate_shard") == "sim"
    size = int(components["sim"])
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n",
                           "--sdm", "env-modules"],  # no conda on the test machine: the profile's opt-out
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    start = text.index("rule simulate_shards:")
    job_text = text[start:text.index("\n\n", start)]
    threads = re.search(r"threads: (\d+)", job_text)  # printed only when > 1
    resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", job_text).group(1).split(", "))
    job = {"_cores": int(threads.group(1)) if threads else 1, "_nodes": 1,
           "mem_mb": int(resources["mem_mb"]), "runtime": int(resources["runtime"])}
    full = _group_request(int(args.cores), [job] * size)
    assert full["_cores"] == args.cores == 8
    assert full["runtime"] <= GROUP_RUNTIME_GOAL_MIN <= PARTITION_LIMIT_MIN, full
    # what the overridden profile asked for before (cores 2 from profiles/default): 4x the layers
    assert _group_request(2, [job] * size)["runtime"] == 4 * full["runtime"]
