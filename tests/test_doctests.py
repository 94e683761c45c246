"""Run the usage examples in the docstrings of every module of the package."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nni_topo_pruner

MODULES = ["nni_topo_pruner", *sorted(m.name for m in pkgutil.walk_packages(nni_topo_pruner.__path__,
                                                                            "nni_topo_pruner."))]
#: modules whose docstrings hold no examples (the test fails when one gains some: move it out);
#: compat's patch modules are documented by their Patch records, compat itself has the examples
WITHOUT_EXAMPLES = {"nni_topo_pruner", "nni_topo_pruner.one_shot", "nni_topo_pruner.report",
                    *(m for m in MODULES if m.startswith("nni_topo_pruner.compat."))}


def test_every_module_is_collected():
    assert {"nni_topo_pruner.pruner", "nni_topo_pruner.topology.mst", "nni_topo_pruner.registry"} <= set(MODULES)
    assert WITHOUT_EXAMPLES <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name in WITHOUT_EXAMPLES:
        assert result.attempted == 0, f"{name} now has examples: remove it from WITHOUT_EXAMPLES"
    else:
        assert result.attempted > 0, f"{name} has no examples"
