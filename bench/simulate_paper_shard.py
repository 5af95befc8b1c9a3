#!/usr/bin/env python3
"""CPU seconds per image of whole paper-config images through the simulator (lensinfer.simulate.shard), the
measurement behind lensinfer.resources.simulate_shard_runtime_min's margin.

config/paper.yaml as is (torch backend, DG19 line-of-sight halos, N_sub ~ randint[0, 3000) for ``train``) except the
source: a Sérsic source instead of COSMOS galaxies (the catalogue is not on the test machine). One thread. Renders a
shard of ``n`` images (first: includes imports and the compile warm-up), then one of ``2n`` images; the second
shard's CPU time per image is the steady cost (``cpu_s_per_image``). Usage:
``python bench/simulate_paper_shard.py N DATASET`` (e.g. ``4 train``). Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from snakemake.utils import validate

from lensinfer.simulate.shard import simulate_shard

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.set_num_threads(1)
    n, ds = int(sys.argv[1]), sys.argv[2]
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    src = cfg["lens"]["source"]
    cfg["lens"]["source"] = {"type": "sersic", "magnitude": {"uniform": [21.0, 23.0]},
                             "R_sersic": {"uniform": [0.1, 0.4]}, "n_sersic": {"uniform": [0.8, 2.0]},
                             "e1": {"uniform": [-0.2, 0.2]}, "e2": {"uniform": [-0.2, 0.2]},
                             "center_x": src["center_x"], "center_y": src["center_y"]}
    validate(cfg, str(ROOT / "schemas" / "config.schema.yaml"))
    out = Path(tempfile.mkdtemp(prefix="bench_paper_shard_"))
    times = []
    for shard, size in ((0, n), (1, 2 * n)):
        cfg["datasets"][ds]["shard_size"] = size
        t0, c0 = time.perf_counter(), time.process_time()
        simulate_shard(cfg, ds, shard, out / f"s{shard}.zarr", progress=False)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    print(json.dumps({"dataset": ds, "n": n, "wall_s": times[0][0], "warmup_cpu_s": times[0][1], "n2": 2 * n,
                      "wall2_s": times[1][0], "cpu2_s": times[1][1], "cpu_s_per_image": times[1][1] / (2 * n)}))


if __name__ == "__main__":
    main()
