#!/usr/bin/env python3
"""Write envs/<family>.yaml: one pinned conda env per rule family, generated from requirements.lock.

Each family lists the distributions its scripts import (directly or through lensinfer); the env file pins the
whole dependency closure of those distributions exactly as the lock does (version and sha256 hashes; the closure
follows the lock's ``# via`` annotations, so nothing depends on what an environment or the registry holds today)
and installs them with ``--no-deps --require-hashes`` — paltas 0.2.0's wrong numpy cap (spec/stack.md pitfall 1)
is thus never consulted, as in the lock itself. ``make lock`` runs this after regenerating the lock; by hand:

    .venv/bin/python tools/make_envs.py
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"

#: top-level distributions each rule family needs (tests/test_envs.py checks them against the scripts' imports)
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "simulate": ("Simulation, merge, mask, COSMOS and mock-observation rules",
                 ["numpy", "scipy", "astropy", "lenstronomy", "paltas", "colossus", "numba", "zarr", "tqdm", "pyyaml",
                  "requests", "matplotlib", "scikit-learn", "torch"]),
    "train": ("Training, curves, calibration, NPE diagnostics and inference rules (GPU rules)",
              ["numpy", "scipy", "astropy", "lenstronomy", "zarr", "torch", "zuko", "numba", "tarp", "scikit-learn",
               "pyyaml", "tqdm", "matplotlib", "paltas", "colossus", "reproject"]),
    "observe": ("Observation rules: mock frames, MAST download (astroquery) and preprocessing (reproject)",
                ["numpy", "scipy", "astropy", "astroquery", "reproject", "requests", "matplotlib", "lenstronomy",
                 "paltas", "colossus", "numba", "zarr", "torch", "pyyaml", "tqdm", "scikit-learn"]),
    "plot": ("Figure rules", ["numpy", "matplotlib", "corner", "tarp", "zarr", "torch", "zuko", "astropy", "pyyaml",
                              "scipy", "lenstronomy", "scikit-learn", "tqdm"]),
}

#: families whose rules request a GPU (``resources: gpu=1``): their env gets a CUDA build of pytorch
GPU_FAMILIES = {"train"}

#: never pinned into the pip section: build tools, the workflow engine, and torch, which comes from conda-forge
#: (``pytorch``) so that GPU nodes get a CUDA build with its runtime libraries (the pip closure of the CPU wheel
#: installed here would miss them)
EXCLUDE = re.compile(r"^(pip|setuptools|wheel|snakemake.*|nvidia-.*|triton|lensinfer|torch)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    """One distribution of the lock: exact version, its hashes, and the distributions that require it."""

    version: str
    hashes: list[str] = field(default_factory=list)
    required_by: set[str] = field(default_factory=set)


def read_lock(path: Path = LOCK) -> dict[str, Pin]:
    """Parse a ``uv pip compile --generate-hashes --annotation-style split`` lock into {name: Pin}."""
    pins: dict[str, Pin] = {}
    current: str | None = None
    in_via = False
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            current, in_via = _norm(m.group(1)), False
            pins[current] = Pin(m.group(2))
            continue
        if current is None:
            continue
        stripped = line.strip()
        h = re.match(r"--hash=(sha256:[0-9a-f]{64})", stripped)
        if h:
            pins[current].hashes.append(h.group(1))
        elif stripped.startswith("# via"):
            rest = stripped[len("# via"):].strip()
            in_via = not rest
            if rest:
                pins[current].required_by.add(rest)
        elif in_via and stripped.startswith("#   "):
            pins[current].required_by.add(stripped[4:].strip())
        elif stripped and not stripped.startswith("#"):
            in_via = False
    for pin in pins.values():  # keep distributions only ("-r requirements.in", "--override ..." are sources)
        pin.required_by = {_norm(d) for d in pin.required_by if not d.startswith("-")}
    return pins


def closure(roots: list[str], pins: dict[str, Pin]) -> dict[str, Pin]:
    """{distribution: Pin} of ``roots`` and everything the lock says they require (excluded names stop the walk)."""
    requires: dict[str, set[str]] = {name: set() for name in pins}
    for name, pin in pins.items():
        for parent in pin.required_by:
            requires.setdefault(parent, set()).add(name)
    seen: dict[str, Pin] = {}
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or EXCLUDE.match(name):
            continue
        if name not in pins:
            sys.exit(f"{name} is not in {LOCK.name}: add it to requirements.in and run `make lock`")
        seen[name] = pins[name]
        todo.extend(requires.get(name, ()))
    return dict(sorted(seen.items()))


def render(family: str, title: str, pins: dict[str, Pin], torch: str | None) -> str:
    """The conda env file of one rule family (``torch``: the conda-forge match spec of pytorch, or None)."""
    lines = [f"# {title}.",
             "# Generated by tools/make_envs.py from requirements.lock (do not edit); the lock's closure, hash-checked.",
             "channels: [conda-forge, nodefaults]", "dependencies:", "  - python=3.11"]
    if torch:
        lines.append(f"  - {torch}")
    lines += ["  - pip", "  - pip:", "      - --no-deps", "      - --require-hashes"]
    lines += [f"      - {name}=={pin.version} " + " ".join(f"--hash={h}" for h in pin.hashes)
              for name, pin in pins.items()]
    return "\n".join(lines) + "\n"


def torch_spec(family: str, pins: dict[str, Pin]) -> str:
    """conda-forge pytorch at the lock's version: a CUDA build for the GPU rules' env, the CPU build elsewhere."""
    version = pins["torch"].version.split("+")[0]
    return f"pytorch={version}={'cuda*' if family in GPU_FAMILIES else 'cpu*'}"


def expected_envs(lock: Path = LOCK) -> dict[str, str]:
    """{env file name: its text} as generated from ``lock``."""
    pins = read_lock(lock)
    return {f"{family}.yaml": render(family, title, closure(roots, pins),
                                      torch_spec(family, pins) if "torch" in roots else None)
            for family, (title, roots) in FAMILIES.items()}


def main() -> None:
    for name, text in expected_envs().items():
        path = ROOT / "envs" / name
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
