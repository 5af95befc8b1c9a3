"""The SLURM profile asks for a GPU for exactly the rules that declare one, and only via `gpu` (never also `gres`)."""

import re
from pathlib import Path

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
