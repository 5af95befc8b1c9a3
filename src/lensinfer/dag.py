"""Helpers the Snakefile uses to shape the DAG: shards simulated ten per job, and the library code a rule runs.

**Shard blocks.** Snakemake spends about 1 ms of CPU per job just building and checking the DAG, so the paper
config's ~5 000 one-shard jobs made a dry run take 11–19 s. Shards are therefore simulated ten per job: the rule
``simulate_shards`` declares the ten shards ``shard_{block}0.zarr`` … ``shard_{block}9.zarr`` (shard index
``10 · block + d`` written in decimal, so no file is renamed), and ``simulate_shard`` keeps single-shard jobs for
shards 0–9 and for the last, incomplete ten of a dataset. :func:`block_regex` is the wildcard constraint that lets
``simulate_shards`` match exactly the complete tens of every dataset (never a shard beyond ``n_shards``), so no
shard is simulated twice and none that is not asked for. A deleted shard is still regenerated (its ten-shard job
reruns; the shards are byte-identical, their seeds depend only on (seed, dataset, shard)).

**Library code.** Snakemake's ``code`` rerun trigger hashes a rule's script, which here is a thin adapter; the
science is in :mod:`lensinfer`. :func:`library_code_hash` hashes every ``lensinfer`` module a script imports,
directly or through other ``lensinfer`` modules (imports inside functions included), so that an edit of the library
reruns the rules whose code it changes, and only those.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Mapping

__all__ = [
    "SHARDS_PER_BLOCK",
    "int_range_regex",
    "block_regex",
    "single_regex",
    "block_count",
    "imported_modules",
    "library_code_hash",
]

SHARDS_PER_BLOCK = 10  # fixed: the output patterns append one decimal digit to the block index
PACKAGE = "lensinfer"


def int_range_regex(lo: int, hi: int) -> str:
    """A regex matching exactly the decimal integers ``lo`` … ``hi`` (no leading zeros, ``1 <= lo <= hi``)."""
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= lo <= hi, got {lo}, {hi}")
    if lo > 1:
        # [lo, hi] = [1, hi] minus [1, lo - 1]: a negative lookahead keeps the expression small
        return rf"(?!(?:{int_range_regex(1, lo - 1)})(?!\d))(?:{int_range_regex(1, hi)})"
    digits = str(hi)
    k = len(digits)
    parts = []
    if k >= 2:
        parts.append(r"[1-9]\d{0,%d}" % (k - 2) if k > 2 else r"[1-9]")  # every shorter number
    for i in range(k):  # same length as hi: the first i digits equal, digit i smaller, the rest free
        low = 1 if i == 0 else 0
        high = int(digits[i]) - 1
        if high < low:
            continue
        rest = k - i - 1
        parts.append(
            digits[:i]
            + (str(low) if high == low else f"[{low}-{high}]")
            + (r"\d" if rest == 1 else r"\d{%d}" % rest if rest > 1 else "")
        )
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


def block_count(n_shards: int) -> int:
    """Number of ten-shard blocks of a dataset: the complete tens after shards 0–9 (blocks 1 … n//10 − 1)."""
    return max(0, int(n_shards) // SHARDS_PER_BLOCK - 1)


def block_regex(n_shards: Mapping[str, int]) -> str:
    """Wildcard constraint of ``{block}`` in ``results/sims/{dataset}/shard_{block}{d}.zarr``: per dataset, the
    blocks 1 … ``n_shards // 10 − 1`` (a lookbehind ties each range to its dataset). Never matches if no dataset
    has a complete block."""
    alternatives = [
        rf"(?<=/{re.escape(name)}/shard_){int_range_regex(1, block_count(n))}"
        for name, n in sorted(n_shards.items())
        if block_count(n) >= 1
    ]
    return "(?:" + "|".join(alternatives) + ")" if alternatives else "(?!)"


def single_regex(n_shards: Mapping[str, int]) -> str:
    """Wildcard constraint of ``{shard}`` in ``results/sims/{dataset}/shard_{shard}.zarr`` for the single-shard
    rule: per dataset, the shards no ten-shard block holds (0–9 and the last incomplete ten), so that the two rules
    never both match a shard (Snakemake would build a candidate job of each for every shard)."""
    alternatives = []
    for name, n in sorted(n_shards.items()):
        n = int(n)
        tail = SHARDS_PER_BLOCK * (block_count(n) + 1)  # first shard after the last block
        ranges = []
        if n >= 1:
            ranges.append("0")
        if min(n, SHARDS_PER_BLOCK) - 1 >= 1:
            ranges.append(int_range_regex(1, min(n, SHARDS_PER_BLOCK) - 1))
        if n - 1 >= tail:
            ranges.append(int_range_regex(tail, n - 1))
        if ranges:
            alternatives.append(rf"(?<=/{re.escape(name)}/shard_)(?:{'|'.join(ranges)})")
    return "(?:" + "|".join(alternatives) + ")" if alternatives else "(?!)"


def _module_file(src: Path, module: str) -> Path | None:
    base = src.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


# `import a.b as c, d` and `from .x import (y, z)` statements (at any indentation: imports inside functions count)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)


def _imports_in(text: str, module: str, is_package: bool, src: Path) -> set[str]:
    """``lensinfer`` modules named by the import statements of ``text`` (source of ``module``)."""
    found: set[str] = set()
    for m in _IMPORT.finditer(text):
        for item in m.group(1).split(","):
            name = item.split()[0] if item.split() else ""
            if name.split(".")[0] == PACKAGE:
                found.add(name)
    for m in _FROM.finditer(text):
        dots, name, names = m.group(1), m.group(2), m.group(3)
        if dots:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (len(dots) - 1)]
            base = ".".join(package + ([name] if name else []))
        else:
            base = name
        if base.split(".")[0] != PACKAGE:
            continue
        found.add(base)
        for item in names.strip("()").replace("\\", " ").split(","):
            words = item.split("#")[0].split()
            if words and _module_file(src, f"{base}.{words[0]}"):
                found.add(f"{base}.{words[0]}")
    return found


@functools.lru_cache(maxsize=None)
def _direct_imports(src: Path, module: str) -> frozenset[str]:
    """``lensinfer`` modules imported anywhere in ``module``'s file (absolute or relative imports)."""
    path = _module_file(src, module)
    if path is None:
        return frozenset()
    return frozenset(_imports_in(path.read_text(), module, path.name == "__init__.py", src))


def imported_modules(script: str | Path, src: str | Path) -> list[str]:
    """Every ``lensinfer`` module (with its parent packages) that running ``script`` may import, sorted."""
    src = Path(src).resolve()
    todo = list(_imports_in(Path(script).read_text(), "__main__", False, src))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            name = ".".join(parts[:i])
            if name not in seen and _module_file(src, name) is not None:
                seen.add(name)
                todo.extend(_direct_imports(src, name))
    return sorted(seen)


def library_code_hash(script: str | Path, src: str | Path) -> str:
    """sha256 over the source of every ``lensinfer`` module ``script`` imports (see :func:`imported_modules`)."""
    src = Path(src).resolve()
    digest = hashlib.sha256()
    for module in imported_modules(script, src):
        path = _module_file(src, module)
        assert path is not None
        digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
