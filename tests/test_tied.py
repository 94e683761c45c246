"""Issue 15, item 11: tied weights among pruning targets are refused (NNI unties them)."""
from __future__ import annotations

import doctest
import logging

import pytest
import torch
from nni.compression.pruning import L1NormPruner
from torch import nn

from nni_topo_pruner import registry, tied
from nni_topo_pruner.speedup import speedup_model
from nni_topo_pruner.tied import check_no_tied_targets, shared_parameter_groups, target_module_names


def _tied_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    model[2].weight = model[0].weight
    return model


CONFIG = [{"op_names": ["2"], "sparse_ratio": 0.5}]


def test_nni_wrapping_unties_shared_weights():
    """Why we refuse: NNI's own L1 pruner leaves the layers untied after compress/unwrap."""
    model = _tied_model()
    pruner = L1NormPruner(model, CONFIG)
    pruner.compress()
    pruner.unwrap_model()
    assert model[2].weight is not model[0].weight


def test_shared_parameter_groups_and_targets():
    model = _tied_model()
    assert shared_parameter_groups(model) == [["0.weight", "2.weight"]]
    assert target_module_names(model, [{"op_types": ["Linear"], "exclude_op_names": ["4"], "sparse_ratio": 0.5}]) \
        == {"0", "2"}


@pytest.mark.parametrize("targets", [CONFIG, [{"op_types": ["Linear"], "sparse_ratio": 0.5}], ["0"], {"2": {}}])
def test_tied_targets_are_refused_naming_the_parameters(targets):
    with pytest.raises(ValueError, match=r"'0\.weight' = '2\.weight'.*untie shared parameters.*exclude_op_names"):
        check_no_tied_targets(_tied_model(), targets)


def test_untied_targets_pass():
    check_no_tied_targets(_tied_model(), [{"op_names": ["4"], "sparse_ratio": 0.5}])
    check_no_tied_targets(_tied_model(), [{"op_types": ["Linear"], "exclude_op_names": ["0", "2"], "sparse_ratio": 0.5}])
    model = _tied_model()
    model[2].weight = nn.Parameter(model[0].weight.detach().clone())
    check_no_tied_targets(model, CONFIG)


def test_create_pruner_refuses_tied_targets_before_wrapping():
    model = _tied_model()
    with pytest.raises(ValueError, match=r"'0\.weight' = '2\.weight'"):
        registry.create_pruner("l1", model, CONFIG)
    assert model[2].weight is model[0].weight
    assert not any("Wrapper" in type(m).__name__ for m in model.modules())


def test_speedup_model_refuses_masks_on_tied_layers():
    model = _tied_model()
    mask = torch.ones(6, 6)
    mask[:3] = 0
    with pytest.raises(ValueError, match=r"'0\.weight' = '2\.weight'"):
        speedup_model(model, torch.rand(2, 6), {"2": {"weight": mask}}, logger=logging.getLogger("quiet"))
    assert model[2].weight is model[0].weight


def test_docstring_example():
    result = doctest.testmod(tied, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
