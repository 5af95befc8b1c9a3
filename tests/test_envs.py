"""The install is the lock: every rule's conda env provides what its script imports (through lensinfer too), the envs,
pyproject.toml and the installed environment agree with requirements.lock, and every import is declared."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "tools"))
import make_envs  # noqa: E402


def rules() -> list[tuple[str, str, str]]:
    """(rule, env file, script) of every rule with a script."""
    out = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if not m:
                continue
            env = re.search(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./(workflow/scripts/[\w.]+)"', block)
            assert env, f"rule {m.group(1)} has no conda env"
            if script:
                out.append((m.group(1), env.group(1), script.group(1)))
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            pkg = path.relative_to(SRC).with_suffix("").parts[: -node.level if path.name != "__init__.py" else None]
            base = ".".join(pkg if path.name != "__init__.py" else path.relative_to(SRC).parent.parts)
            if path.name == "__init__.py" and node.level > 1:
                base = ".".join(base.split(".")[: -(node.level - 1)])
            names.add(f"{base}.{node.module}" if node.module else base)
            for a in node.names:
                names.add(f"{base}.{node.module}.{a.name}" if node.module else f"{base}.{a.name}")
    return names


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def third_party_modules(script: Path) -> set[str]:
    """Top-level third-party modules imported by a script, following lensinfer modules (all their imports)."""
    todo, seen, found = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "lensinfer":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the package __init__ files run too
                    f = _module_file(".".join(parts[:i]))
                    if f is not None:
                        todo.append(f)
            elif top not in sys.stdlib_module_names and top != "snakemake":
                found.add(top)
    return found


def env_pins(env: str) -> tuple[dict[str, str], bool]:
    spec = yaml.safe_load((ROOT / env).read_text())
    pins, conda_torch = {}, False
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if "==" in line:
                    name, version = line.split()[0].split("==")
                    pins[make_envs._norm(name)] = version
        elif str(dep).startswith("pytorch="):
            conda_torch = True
    return pins, conda_torch


DISTS = metadata.packages_distributions()


@pytest.mark.parametrize("rule,env,script", rules())
def test_env_provides_the_scripts_imports(rule, env, script):
    pins, conda_torch = env_pins(env)
    missing = []
    for module in sorted(third_party_modules(ROOT / script)):
        dists = {make_envs._norm(d) for d in DISTS.get(module, [module])}
        if module == "torch" and conda_torch:
            continue
        if not dists & set(pins):
            missing.append(f"{module} ({'/'.join(sorted(dists))})")
    assert not missing, f"rule {rule}: {env} lacks {missing}"


LOCK = make_envs.read_lock()


def test_lock_pins_every_distribution_with_hashes():
    assert len(LOCK) > 100  # the whole closure, not the top-level list
    for name, pin in LOCK.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pin.version), f"{name}: not an exact version ({pin.version})"
        assert pin.hashes, f"{name} has no hash in requirements.lock"
    assert LOCK["torch"].version == "2.13.0+cpu"  # the CPU build, never the multi-GB CUDA default
    assert LOCK["paltas"].version == "0.2.0" and LOCK["lenstronomy"].version == "1.14.0"  # spec/stack.md


def test_installed_environment_is_the_lock():
    """What the tests run on is exactly what `make` installs on a fresh machine (lensinfer itself aside)."""
    installed = {make_envs._norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop("lensinfer", None)
    locked = {name: pin.version for name, pin in LOCK.items()}
    extra = sorted(set(installed) - set(locked))
    missing = sorted(set(locked) - set(installed))
    differ = sorted(n for n in set(locked) & set(installed) if installed[n] != locked[n])
    assert not (extra or missing or differ), (
        f"the environment is not requirements.lock: not in the lock {extra}, not installed {missing}, "
        f"other version {[(n, installed[n], locked[n]) for n in differ]} — install with `make`, never `pip install`")


def test_env_files_are_generated_from_the_lock():
    for name, text in make_envs.expected_envs().items():
        assert (ROOT / "envs" / name).read_text() == text, f"envs/{name} is stale: run tools/make_envs.py"


def test_gpu_env_pins_a_cuda_build_of_pytorch():
    train = yaml.safe_load((ROOT / "envs" / "train.yaml").read_text())["dependencies"]
    assert f"pytorch={LOCK['torch'].version.split('+')[0]}=cuda*" in train
    for env in ("simulate", "observe", "plot"):
        deps = yaml.safe_load((ROOT / "envs" / f"{env}.yaml").read_text())["dependencies"]
        assert not any(str(d).endswith("=cuda*") for d in deps), env


def test_env_pins_carry_the_locks_hashes():
    for env in (ROOT / "envs").glob("*.yaml"):
        pip = next(d["pip"] for d in yaml.safe_load(env.read_text())["dependencies"] if isinstance(d, dict))
        assert "--require-hashes" in pip and "--no-deps" in pip
        for line in pip:
            if "==" in line:
                name, version = line.split()[0].split("==")
                hashes = [h.removeprefix("--hash=") for h in line.split()[1:]]
                assert version == LOCK[name].version and hashes == LOCK[name].hashes, f"{env.name}: {name}"


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(*extras: str) -> dict[str, str]:
    from packaging.requirements import Requirement

    project = _pyproject()
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    out = {}
    for raw in reqs:
        req = Requirement(raw)
        out[make_envs._norm(req.name)] = str(req.specifier)
    return out


def test_pyproject_pins_agree_with_the_lock():
    for name, spec in _declared("test", "bench").items():
        assert spec.startswith("=="), f"pyproject.toml: {name} {spec} is not pinned"
        assert LOCK[name].version.split("+")[0] == spec[2:], f"{name}: pyproject {spec} vs lock {LOCK[name].version}"


def undeclared_imports(paths: list[Path], declared: set[str]) -> dict[str, set[str]]:
    """{top-level module: files} of third-party imports under ``paths`` whose distribution is not in ``declared``.

    A module maps to its distribution(s) through the installed metadata (``packages_distributions``); a module no
    installed distribution provides is undeclared by definition.
    """
    out: dict[str, set[str]] = {}
    for root in paths:
        # the folder's own modules (a bench script importing its sibling) and the project's test helpers
        local = {p.stem for p in root.rglob("*.py")} | {"tests"} if root.is_dir() else set()
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("lensinfer", "__future__") or top in local:
                        continue
                    dists = {make_envs._norm(d) for d in DISTS.get(top, [])}
                    if not dists & declared:
                        out.setdefault(top, set()).add(str(path.relative_to(root.parent)))
    return out


@pytest.mark.parametrize("where,extras", [("src", ()), ("workflow/scripts", ()), ("bench", ("bench",))])
def test_every_import_is_declared_in_pyproject(where, extras):
    assert not undeclared_imports([ROOT / where], set(_declared(*extras))), "declare it in pyproject.toml"


def test_undeclared_import_check_fails_on_a_new_import(tmp_path):
    """The check is live: a module importing an undeclared (even an installed) distribution is reported."""
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "new.py").write_text("import numpy\nimport json\nfrom sbi.inference import NPE\nimport not_a_dist_xyz\n")
    found = undeclared_imports([pkg], set(_declared()))
    assert found == {"sbi": {"src/new.py"}, "not_a_dist_xyz": {"src/new.py"}}
