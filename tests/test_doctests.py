"""Run the usage examples in the docstrings of every module of the package and of the benchmarks.

One runner for both trees: every module is collected by walking the package, so a new module's
examples run without being listed, and a module listed as having none fails once it gains some.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import benchmarks
import nni_topo_pruner


def _modules(package) -> list[str]:
    return [package.__name__, *sorted(m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}."))]


MODULES = [*_modules(nni_topo_pruner), *_modules(benchmarks)]
#: modules whose docstrings hold no examples (the test fails when one gains some: move it out);
#: compat's patch modules are documented by their Patch records, compat itself has the examples;
#: the benchmark command-line modules are documented by their --help and docs/benchmarks.md
WITHOUT_EXAMPLES = {"nni_topo_pruner", "nni_topo_pruner.one_shot", "nni_topo_pruner.report",
                    *(m for m in MODULES if m.startswith("nni_topo_pruner.compat.")),
                    "benchmarks", "benchmarks.core", "benchmarks.grid", "benchmarks.bmvc", "benchmarks.speed",
                    "benchmarks.studies", "benchmarks.run", "benchmarks.grid.compare_runs", "benchmarks.grid.experiment",
                    "benchmarks.grid.plots", "benchmarks.bmvc.betti_activation_plot", "benchmarks.bmvc.betti_threshold",
                    "benchmarks.bmvc.convergence_study", "benchmarks.speed.cpu_throughput",
                    "benchmarks.speed.engine_speed", "benchmarks.speed.pruner_speed", "benchmarks.speed.tp_speed",
                    "benchmarks.studies.allocation_curves", "benchmarks.studies.recipe_check"}
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def test_every_module_is_collected():
    assert {"nni_topo_pruner.pruner", "nni_topo_pruner.topology.mst", "nni_topo_pruner.registry",
            "benchmarks.grid.summary", "benchmarks.core.executors", "benchmarks.grid.backends"} <= set(MODULES)
    assert WITHOUT_EXAMPLES <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.failed == 0
    if name in WITHOUT_EXAMPLES:
        assert result.attempted == 0, f"{name} now has examples: remove it from WITHOUT_EXAMPLES"
    else:
        assert result.attempted > 0, f"{name} has no examples"
