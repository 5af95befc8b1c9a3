#!/usr/bin/env python3
"""CPU seconds per image of whole paper-config images through the simulator (lensinfer.simulate.shard), the
measurement behind lensinfer.resources.simulate_shard_runtime_min's margin.

config/paper.yaml as is (torch backend, DG19 line-of-sight halos, N_sub ~ randint[0, 3000) for ``train``) except the
source: a Sérsic source instead of COSMOS galaxies (the catalogue is not on the test machine). One thread. Renders a
shard of ``n`` images (first: includes imports and the compile warm-up), then one of ``2n`` images; the second
shard's CPU time per image is the steady cost (``cpu_s_per_image``). Usage:
``python bench/simulate_paper_shard.py N DATASET`` (e.g. ``4 train``). Last line: one JSON object.
"""
import time, sys, json, tempfile
from pathlib import Path
import yaml
from snakemake.utils import validate
from lensinfer.simulate.shard import simulate_shard
import torch
torch.set_num_threads(1)
cfg = yaml.safe_load(Path("config/paper.yaml").read_text())
src = cfg["lens"]["source"]
cfg["lens"]["source"] = {"type": "sersic", "magnitude": {"uniform": [21.0, 23.0]}, "R_sersic": {"uniform": [0.1, 0.4]},
                         "n_sersic": {"uniform": [0.8, 2.0]}, "e1": {"uniform": [-0.2, 0.2]}, "e2": {"uniform": [-0.2, 0.2]},
                         "center_x": src["center_x"], "center_y": src["center_y"]}
validate(cfg, "schemas/config.schema.yaml")
n = int(sys.argv[1]); ds = sys.argv[2]
cfg["datasets"][ds]["shard_size"] = n
out = Path(tempfile.mkdtemp()) / "s.zarr"
t0 = time.perf_counter(); c0 = time.process_time()
simulate_shard(cfg, ds, 0, out, progress=False)
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
cfg["datasets"][ds]["shard_size"] = 2 * n
out2 = out.with_name("s2.zarr")
t1 = time.perf_counter(); c1 = time.process_time()
simulate_shard(cfg, ds, 1, out2, progress=False)
wall2 = time.perf_counter() - t1; cpu2 = time.process_time() - c1
print(json.dumps({"dataset": ds, "n": n, "wall_s": wall, "cpu_s": cpu, "n2": 2 * n, "wall2_s": wall2, "cpu2_s": cpu2,
                  "cpu_s_per_image": cpu2 / (2 * n), "warmup_cpu_s": cpu}))
