"""The import graph of the repository: no module imports itself back through others, and the
packages stay layered (a package never imports one that imports it)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "crd", "dataset", "distiller_zoo", "helper", "models", "recipes", "reporting", "training")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Repository modules imported anywhere in ``path`` (top level or inside functions)."""
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    modules = {_module_name(path): path for path in files}
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_import_cycles() -> None:
    graph = import_graph()
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {name: {dep for dep in deps if not (name.startswith(dep + ".") and "." not in dep)}
             for name, deps in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_package_import_cycles() -> None:
    packages: dict[str, set[str]] = {}
    for name, deps in import_graph().items():
        top = name.split(".")[0]
        packages.setdefault(top, set()).update(dep.split(".")[0] for dep in deps if dep.split(".")[0] != top)
    assert _cycle(packages) is None, " -> ".join(_cycle(packages) or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _package_graph() -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for name, deps in import_graph().items():
        top = name.split(".")[0]
        packages[top].update(dep.split(".")[0] for dep in deps if dep.split(".")[0] != top)
    return packages


def test_layers_point_one_way() -> None:
    """training/ (what the entry scripts run) sits above the methods, models and recipes, which sit
    above the shared loop and data (helper/, dataset/); the offline tools (analysis/, reporting/)
    sit beside the entry scripts and nothing imports them or training/."""
    packages = _package_graph()
    assert packages["training"] <= {"crd", "dataset", "distiller_zoo", "helper", "models", "recipes"}
    for below in ("crd", "dataset", "distiller_zoo", "helper", "models", "recipes"):
        assert not packages[below] & {"training", "analysis", "reporting"}, below
    for loop_and_data in ("helper", "dataset"):
        assert not packages[loop_and_data] & {"distiller_zoo", "crd"}, loop_and_data
