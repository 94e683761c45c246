"""The import rules of docs/architecture.md: the topology code needs neither torch nor NNI,
and topology/ uses nothing of the package outside itself (imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_topo_pruner"
NUMPY_ONLY = sorted([*(PACKAGE / "topology").glob("*.py"), PACKAGE / "metric_calculator.py",
                     PACKAGE / "evolutionary.py", PACKAGE / "engine.py", PACKAGE / "bmvc" / "scoring.py"])


def imported(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of every module ``path`` (a file of the package at ``root``) imports, relative
    imports resolved; ``from x import name`` also counts ``x.name`` (``name`` may be a module)."""
    package = [root.name, *path.parent.relative_to(root).parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", NUMPY_ONLY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_topology_rooms_import_neither_torch_nor_nni(path):
    bad = sorted(n for n in imported(path) if n.split(".")[0] in ("torch", "nni", "torchvision", "torch_pruning"))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "topology").glob("*.py")), ids=lambda p: p.name)
def test_topology_imports_nothing_of_the_package_outside_itself(path):
    outside = sorted(n for n in imported(path)
                     if n.startswith("nni_topo_pruner") and not n.startswith("nni_topo_pruner.topology"))
    assert not outside, f"topology/{path.name} imports {outside}"


def test_the_resolver_sees_relative_imports():
    assert "nni_topo_pruner.metric_calculator" in imported(PACKAGE / "engine.py")
    assert "nni_topo_pruner.topology.mst" in imported(PACKAGE / "topology" / "persistence.py")


def test_modules_import_only_public_names_of_each_other():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = ["nni_topo_pruner", *path.parent.relative_to(PACKAGE).parts]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("nni_topo_pruner")):
                private += [f"{path.relative_to(PACKAGE)}: {alias.name}" for alias in node.names
                            if alias.name.startswith("_")]
    assert not private, f"private names imported across modules: {private}"


# ------------------------------------------------------------------------------ the benchmarks floor
BENCHMARKS = PACKAGE.parent / "benchmarks"


def benchmark_module(path: Path) -> str:
    """``benchmarks/grid/run.py`` -> ``benchmarks.grid.run``; a package's ``__init__.py`` -> the package."""
    parts = path.with_suffix("").relative_to(BENCHMARKS.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


BENCHMARK_MODULES = {benchmark_module(p): p for p in sorted(BENCHMARKS.rglob("*.py")) if "results" not in p.parts}


def benchmark_imports(path: Path) -> set[str]:
    """The benchmark modules ``path`` imports, imports inside functions included."""
    return {name for name in imported(path, BENCHMARKS) if name in BENCHMARK_MODULES} - {benchmark_module(path)}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_benchmark_modules_import_no_circle():
    graph = {name: benchmark_imports(path) for name, path in BENCHMARK_MODULES.items()}
    assert not import_cycles(graph), f"import circles in benchmarks/: {import_cycles(graph)}"


def test_the_cycle_finder_finds_one():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: the floors of benchmarks/ (docs/architecture.md): what each part may import besides itself;
#: an arrow runs down only, so the shared core imports no experiment and no experiment another's
BENCHMARK_FLOORS = {
    "benchmarks.core": set(),
    "benchmarks.grid": {"benchmarks.core"},
    "benchmarks.speed": {"benchmarks.core"},
    "benchmarks.bmvc": {"benchmarks.core", "benchmarks.grid"},
    "benchmarks.studies": {"benchmarks.core", "benchmarks.grid"},
    "benchmarks.run": {"benchmarks.core", "benchmarks.grid"},  # the grid's documented command line
    "benchmarks": set(),
}


def benchmark_part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_benchmarks_has_no_flat_pile():
    flat = sorted(p.name for p in BENCHMARKS.glob("*.py"))
    assert flat == ["__init__.py", "run.py"], flat
    assert {benchmark_part(m) for m in BENCHMARK_MODULES} == set(BENCHMARK_FLOORS)


@pytest.mark.parametrize("module", sorted(BENCHMARK_MODULES))
def test_benchmark_imports_run_down_the_floors(module):
    part = benchmark_part(module)
    upward = sorted(name for name in benchmark_imports(BENCHMARK_MODULES[module])
                    if benchmark_part(name) != part and benchmark_part(name) not in BENCHMARK_FLOORS[part])
    assert not upward, f"{module} ({part}) may import only {sorted(BENCHMARK_FLOORS[part])}, imports {upward}"


def test_the_floor_check_sees_an_upward_arrow():
    assert "benchmarks.grid.runner" in benchmark_imports(BENCHMARK_MODULES["benchmarks.bmvc.betti_threshold"])
    assert "benchmarks.grid" not in BENCHMARK_FLOORS["benchmarks.core"]


def documented_benchmark_parts() -> dict[str, set[str]]:
    """docs/architecture.md's table of the benchmarks floor: part -> the modules its row lists."""
    rows = {}
    for line in (PACKAGE.parent / "docs" / "architecture.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith("/`"):
            rows[f"benchmarks.{cells[0].strip('`/')}"] = set(cells[1].replace("`", "").replace(" ", "").split(","))
    return rows


def test_the_map_lists_every_benchmark_module_where_it_is():
    """The map stays true: every module of a part is in that part's row, and nothing else is."""
    actual = {part: {module.rsplit(".", 1)[1] for module in BENCHMARK_MODULES
                     if benchmark_part(module) == part and module != part}
              for part in BENCHMARK_FLOORS if part.count(".") == 1 and part != "benchmarks.run"}
    assert documented_benchmark_parts() == actual
