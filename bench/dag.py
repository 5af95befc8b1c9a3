#!/usr/bin/env python3
"""Dry-run time of the workflow's DAG for the paper configuration, plain and through the SLURM profile (goal: <= 10 s
each, >= 2000 shards).

Times, side by side (alternating, ``--repeat`` runs each, median reported), the two commands a user types first:

* ``snakemake -n --configfile config/paper.yaml --quiet rules`` (plain: local settings, ``profiles/default``), and
* ``snakemake --profile profiles/slurm -n --quiet rules`` (the cluster user's command; the profile selects
  ``config/paper.yaml``, the SLURM executor, grouped shard jobs and conda envs).

``--quiet rules`` hides the per-job listing but keeps the "Job stats" table, which gives the number of simulation
jobs (``simulate_shard``: one shard, ``simulate_shards``: ten) and so the number of shards. By default it runs in a
fresh copy of the repository's source files (tracked + untracked-but-not-ignored, as a clean checkout would have), so
existing results/ or .snakemake/ state does not change the number; ``--in-place`` measures the checkout as it is.

The SLURM profile enables conda (``software-deployment-method: conda``), and snakemake then runs ``conda info``
before building the DAG; where no ``conda`` is on PATH (this machine) that fails, so the bench adds ``--sdm
env-modules`` (the profile's documented opt-out) and reports ``"conda": false``.

The snakemake slurm plugin runs ``scontrol show config`` at import; with a slurm.conf present but
no slurmctld that costs ~9 s per call (tools/slurm_cluster.sh removes its slurm.conf link on
stop, so on a machine where the local cluster is stopped this is not measured).

Last line of the output: one JSON object with ``shards``, ``dry_run_s`` and ``dry_run_slurm_profile_s`` (plus
details: jobs, every run, the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 10.0
MIN_SHARDS = 2000
SHARDS_PER_BLOCK = 10  # shards of one simulate_shards job (lensinfer.dag.SHARDS_PER_BLOCK)


def snakemake_cmd() -> list[str]:
    """The snakemake of the interpreter running this script (the project venv), else PATH."""
    try:
        import snakemake  # noqa: F401
    except ImportError:
        exe = shutil.which("snakemake")
        if exe is None:
            sys.exit("snakemake not found: run with the project's venv python")
        return [exe]
    return [sys.executable, "-m", "snakemake"]


def source_copy(dest: Path) -> None:
    """Copy the repository's source files (what a clean checkout has) into dest."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, check=True, capture_output=True, timeout=60,
        ).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", ".snakemake", "results", "logs", "__pycache__"}
        files = [
            str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)
        ]
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def parse_job_stats(text: str) -> dict[str, int]:
    """The first "Job stats" table of a dry-run: rule -> job count."""
    counts: dict[str, int] = {}
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 3:]:  # skip "job count" header and the dashes
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def shard_count(counts: dict[str, int]) -> int:
    """Shards of a dry-run's job stats: one per simulate_shard job, ten per simulate_shards job."""
    return counts.get("simulate_shard", 0) + SHARDS_PER_BLOCK * counts.get("simulate_shards", 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default="config/paper.yaml")
    ap.add_argument("--profile", default="profiles/slurm", help="the cluster profile timed beside the plain run")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each command (median reported)")
    ap.add_argument("--in-place", action="store_true", help="run in the checkout, not a clean copy")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per dry-run")
    ap.add_argument("--check", action="store_true", help="exit 1 if the goal is missed")
    args = ap.parse_args()

    tmp = None
    if args.in_place:
        workdir = REPO
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lensinfer-dag-")
        workdir = Path(tmp.name)
        source_copy(workdir)
    conda = shutil.which("conda") is not None
    commands = {
        "plain": [*snakemake_cmd(), "-n", "--configfile", args.configfile, "--quiet", "rules"],
        "slurm_profile": [*snakemake_cmd(), "--profile", args.profile, "-n", "--configfile", args.configfile,
                          "--quiet", "rules", *([] if conda else ["--sdm", "env-modules"])],
    }
    env = dict(os.environ)
    env.pop("SNAKEMAKE_PROFILE", None)  # a user's default profile must not change the DAG
    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}  # user + sys CPU seconds: less sensitive to load
    counts: dict[str, dict[str, int]] = {}
    loads: list[float] = []
    try:
        for i in range(max(1, args.repeat)):
            for name, cmd in commands.items():  # alternate, so that both see the same machine load
                loads.append(os.getloadavg()[0])
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                                      timeout=args.timeout)
                dt = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
                    sys.exit(f"dry-run failed (exit {proc.returncode}): {' '.join(cmd)}")
                counts[name] = parse_job_stats(proc.stdout + "\n" + proc.stderr)
                times[name].append(dt)
                print(f"run {i + 1} {name}: {dt:.2f} s ({cpu[name][-1]:.2f} s CPU), {counts[name].get('total', 0)} jobs, "
                      f"{shard_count(counts[name])} shards", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()

    shards = shard_count(counts["plain"])
    plain = statistics.median(times["plain"])
    slurm = statistics.median(times["slurm_profile"])
    result = {
        "config": args.configfile,
        "profile": args.profile,
        "shards": shards,
        "shards_slurm_profile": shard_count(counts["slurm_profile"]),
        "jobs": counts["plain"].get("total", 0),
        "simulation_jobs": counts["plain"].get("simulate_shard", 0) + counts["plain"].get("simulate_shards", 0),
        "dry_run_s": round(plain, 2),
        "dry_run_slurm_profile_s": round(slurm, 2),
        "runs_s": [round(t, 2) for t in times["plain"]],
        "runs_slurm_profile_s": [round(t, 2) for t in times["slurm_profile"]],
        "cpu_s": round(statistics.median(cpu["plain"]), 2),
        "cpu_slurm_profile_s": round(statistics.median(cpu["slurm_profile"]), 2),
        "conda": conda,
        "load_avg_1min": round(statistics.median(loads), 2),
        "goal_s": GOAL_S,
        "meets_goal": max(plain, slurm) <= GOAL_S and shards >= MIN_SHARDS,
        "clean_copy": not args.in_place,
    }
    print(json.dumps(result))
    return 1 if args.check and not result["meets_goal"] else 0


if __name__ == "__main__":
    sys.exit(main())
