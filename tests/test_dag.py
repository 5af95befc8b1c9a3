"""The DAG helpers (lensinfer.dag): ten-shard jobs that cover every shard exactly once, the library-code hash of a
rule's script, and bench/dag.py's output keys."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lensinfer.dag import (
    SHARDS_PER_BLOCK,
    block_count,
    block_regex,
    imported_modules,
    int_range_regex,
    library_code_hash,
    single_regex,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lo,hi", [(1, 1), (1, 9), (1, 10), (1, 99), (1, 100), (1, 499), (1, 1234), (3, 17),
                                   (10, 99), (50, 1200), (5000, 5009)])
def test_int_range_regex_matches_exactly_the_range(lo, hi):
    pattern = re.compile(r"shard_" + int_range_regex(lo, hi) + r"\.zarr")
    for x in range(0, 2 * hi + 20):
        assert bool(pattern.fullmatch(f"shard_{x}.zarr")) == (lo <= x <= hi), x
    assert not pattern.fullmatch(f"shard_0{hi}.zarr")  # no leading zeros


def test_blocks_and_singles_cover_every_shard_once():
    """The output patterns of simulate_shards (shard_{block}{d}) and simulate_shard (shard_{shard}) with these
    constraints match every shard of every dataset exactly once, and no shard beyond n_shards."""
    n_shards = {"train": 5000, "val": 20, "test": 5, "two": 2, "odd": 57, "ten": 10, "y": 19, "one": 1, "a.b": 33}
    block = re.compile(r"results/sims/(?P<dataset>[\w.]+)/shard_(?P<block>" + block_regex(n_shards) + r")(?P<d>\d)\.zarr")
    single = re.compile(r"results/sims/(?P<dataset>[\w.]+)/shard_(?P<shard>" + single_regex(n_shards) + r")\.zarr")
    for name, n in n_shards.items():
        blocks = set()
        for i in range(n + 25):
            path = f"results/sims/{name}/shard_{i}.zarr"
            b, s = block.fullmatch(path), single.fullmatch(path)
            assert (b is not None or s is not None) == (i < n) and not (b and s), (name, i)
            if b:
                blocks.add(int(b["block"]))
                assert SHARDS_PER_BLOCK * int(b["block"]) + int(b["d"]) == i
        assert blocks == set(range(1, block_count(n) + 1))
    assert block_count(5000) == 499 and block_count(20) == 1 and block_count(19) == 0


def test_library_code_hash_follows_the_imports(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "lensinfer", src / "lensinfer", ignore=shutil.ignore_patterns("__pycache__"))
    sim = ROOT / "workflow/scripts/simulate_shard.py"
    cal = ROOT / "workflow/scripts/calibrate.py"
    modules = imported_modules(sim, src)
    # direct import, a module it imports in turn, and the packages on the way
    assert {"lensinfer", "lensinfer.simulate", "lensinfer.simulate.shard", "lensinfer.workflow"} <= set(modules)
    assert "lensinfer.calibrate" not in modules and "lensinfer.calibrate" in imported_modules(cal, src)
    before = library_code_hash(sim, src), library_code_hash(cal, src)
    path = src / "lensinfer" / "calibrate.py"
    path.write_text(path.read_text() + "\n# edited\n")
    after = library_code_hash(sim, src), library_code_hash(cal, src)
    assert after[0] == before[0] and after[1] != before[1]


@pytest.mark.slow
def test_bench_dag_reports_both_dry_runs():
    """bench/dag.py on the tiny config (the keys and the shard count; no timing is asserted)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench/dag.py"), "--configfile", "config/test.yaml",
                           "--repeat", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shards"] == result["shards_slurm_profile"] == 5  # test.yaml: 2 + 1 + 1 + 1 shards
    assert result["dry_run_s"] > 0 and result["dry_run_slurm_profile_s"] > 0
    assert {"cpu_s", "cpu_slurm_profile_s", "jobs", "conda", "load_avg_1min"} <= set(result)
