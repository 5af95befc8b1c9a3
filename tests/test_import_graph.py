"""The library's modules import each other without cycles (issue 20).

The graph is built statically from every ``import`` / ``from … import`` statement in ``src/lensinfer`` — module level
and inside functions alike (a lazy import hides a cycle from the interpreter, not from the design). An edge goes to
the imported submodule when ``from package import name`` names one, else to the module or package imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lensinfer"


def _modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package (``__init__`` is the package itself)."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` (at ``path``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in modules else full for a in node.names]
        else:
            continue
        for target in targets:
            # `import lensinfer.a.b` → lensinfer.a.b; an attribute of a module → that module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
    return deps


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(src)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_graph_sees_the_library():
    graph = import_graph()
    assert {"lensinfer.infer", "lensinfer.calibrate", "lensinfer.curves", "lensinfer.train"} <= graph.keys()
    # edges the library is known to have, module-level and lazy (inside functions)
    assert "lensinfer.curves" in graph["lensinfer.calibrate"]
    assert "lensinfer.curves" in graph["lensinfer.infer"]
    assert "lensinfer.train" in graph["lensinfer.infer"]  # lazy import in infer_observations
    assert "lensinfer.calibrate" in graph["lensinfer.infer"]  # lazy import in summarise_observations


def test_cycle_detector_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import lensinfer.a\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = import_graph(tmp_path)
    assert find_cycles(graph) == [["lensinfer.a", "lensinfer.c", "lensinfer.sub.b"]]


def test_no_import_cycle_in_the_library():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among src/lensinfer modules: " + "; ".join(" ↔ ".join(c) for c in cycles)
