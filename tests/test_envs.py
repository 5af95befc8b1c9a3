"""Every rule's conda env provides what its script imports (through lensinfer too); pins agree everywhere."""

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
                    name, version = line.split("==")
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


def test_env_files_are_regenerated_from_the_tested_venv():
    for family, (title, roots) in make_envs.FAMILIES.items():
        torch_version = metadata.version("torch").split("+")[0] if "torch" in roots else None
        expected = make_envs.render(family, title, make_envs.closure(roots), torch_version)
        assert (ROOT / "envs" / f"{family}.yaml").read_text() == expected, f"run tools/make_envs.py ({family})"


def test_pins_agree_with_pyproject_and_requirements():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
               if "==" in line and not line.startswith("#"))
    req = {make_envs._norm(k): v.split("#")[0].strip() for k, v in req.items()}
    for dep in pyproject:
        if "==" not in dep:
            continue
        name, version = dep.split("==")
        name = make_envs._norm(name)
        if name != "torch":
            assert req.get(name) == version, f"{name}: pyproject {version} vs requirements.txt {req.get(name)}"
        assert metadata.version(name).split("+")[0] == version, f"{name}: installed {metadata.version(name)}"
        for env in (ROOT / "envs").glob("*.yaml"):
            pins, _ = env_pins(f"envs/{env.name}")
            if name in pins:
                assert pins[name] == version, f"{env.name}: {name} {pins[name]} vs pyproject {version}"
