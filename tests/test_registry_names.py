"""Issue 15, item 7: a name registered with register_pruner either wins or is refused; it is
never accepted and then ignored (aliases of built-ins included)."""
from __future__ import annotations

import pytest
from nni.compression.pruning import L1NormPruner

from nni_topo_pruner import registry
from nni_topo_pruner.pruner import TopologicalPruner


class Mine(L1NormPruner):
    pass


@pytest.fixture(autouse=True)
def clean_runtime_registry():
    saved = dict(registry._RUNTIME)
    yield
    registry._RUNTIME.clear()
    registry._RUNTIME.update(saved)


@pytest.mark.parametrize(("name", "builtin"), [("topology", "topological"), ("L1Norm", "l1"), ("l2norm", "l2"),
                                               ("Topological", "topological"), ("L1", "l1")])
def test_taken_names_and_aliases_are_refused(name, builtin):
    with pytest.raises(ValueError, match=rf"{name!r}.*built-in pruner {builtin!r}.*overwrite=True"):
        registry.register_pruner(name, Mine)
    assert registry.get_pruner(name) is not Mine


@pytest.mark.parametrize(("name", "others"), [("topology", ["topological", "TOPOLOGY"]),
                                              ("L1Norm", ["l1", "l1norm"])])
def test_overwrite_makes_the_registered_class_win_for_the_name_and_its_aliases(name, others):
    registry.register_pruner(name, Mine, overwrite=True)
    assert registry.get_pruner(name) is Mine
    for other in others:
        assert registry.get_pruner(other) is Mine


def test_builtins_come_back_when_the_registration_is_removed():
    registry.register_pruner("topology", Mine, overwrite=True)
    registry._RUNTIME.clear()
    assert registry.get_pruner("topology") is TopologicalPruner
