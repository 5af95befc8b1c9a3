#!/usr/bin/env python3
"""Dry-run time of the workflow's DAG for the paper configuration (goal: <= 10 s, >= 2000 shards).

Runs ``snakemake -n --configfile config/paper.yaml --quiet rules`` in a subprocess (``--quiet
rules`` hides the per-job listing but keeps the "Job stats" table, which gives the number of
simulate_shard jobs) a few times and reports the median wall time. By default it runs in a fresh
copy of the repository's source files (tracked + untracked-but-not-ignored, as a clean checkout
would have), so existing results/ or .snakemake/ state does not change the number;
``--in-place`` measures the checkout as it is.

The snakemake slurm plugin runs ``scontrol show config`` at import; with a slurm.conf present but
no slurmctld that costs ~9 s per call (tools/slurm_cluster.sh removes its slurm.conf link on
stop, so on a machine where the local cluster is stopped this is not measured).

Last line of the output: one JSON object with ``shards`` and ``dry_run_s`` (plus details).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default="config/paper.yaml")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
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
    cmd = [*snakemake_cmd(), "-n", "--configfile", args.configfile, "--quiet", "rules",
           "--cores", "1"]
    env = dict(os.environ)
    env.pop("SNAKEMAKE_PROFILE", None)  # a user's default profile must not change the DAG
    times: list[float] = []
    counts: dict[str, int] = {}
    try:
        for i in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=args.timeout)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
                sys.exit(f"dry-run failed (exit {proc.returncode}): {' '.join(cmd)}")
            counts = parse_job_stats(proc.stdout + "\n" + proc.stderr)
            times.append(dt)
            print(f"run {i + 1}: {dt:.2f} s, {sum(counts.values()) - counts.get('total', 0)} jobs",
                  file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()

    shards = counts.get("simulate_shard", 0)
    median = statistics.median(times)
    result = {
        "config": args.configfile,
        "shards": shards,
        "jobs": counts.get("total", 0),
        "dry_run_s": round(median, 2),
        "runs_s": [round(t, 2) for t in times],
        "goal_s": GOAL_S,
        "meets_goal": median <= GOAL_S and shards >= MIN_SHARDS,
        "clean_copy": not args.in_place,
    }
    print(json.dumps(result))
    return 1 if args.check and not result["meets_goal"] else 0


if __name__ == "__main__":
    sys.exit(main())
