"""Run the usage examples in the engine modules' docstrings."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "nni_topo_pruner.topology",
    "nni_topo_pruner.topology.distances",
    "nni_topo_pruner.topology.mst",
    "nni_topo_pruner.topology.persistence",
    "nni_topo_pruner.topology.diagram_distance",
    "nni_topo_pruner.topology.salience",
    "nni_topo_pruner.topology.bounds",
    "nni_topo_pruner.metric_calculator",
    "nni_topo_pruner.evolutionary",
    "nni_topo_pruner.engine",
    "nni_topo_pruner.feature_collector",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
