"""Issue 26, items 3, 4, 6, 7, 8 and 18 (speed-up part): models and masks that speedup_model
used to turn into a wrong model or an obscure error. Real NNI pruners and ModelSpeedup."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from nni_topo_pruner.speedup import speedup_model
from tests.test_speedup_checks import QUIET, _l1  # one helper for both speed-up test files



def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


# item 3 ------------------------------------------------------------------------------------

def test_float64_model_keeps_float64_layers_and_exact_weights():
    model = _cnn().double()
    dummy = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    kept = masks["0"]["weight"].flatten(1).any(dim=1)
    expected = model[0].weight.detach()[kept].clone()
    speedup_model(model, dummy, masks, logger=QUIET)
    assert model[0].out_channels == 4
    assert {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()} == {torch.float64}
    assert torch.equal(model[0].weight.detach(), expected)  # no float32 round trip
    assert model(dummy).dtype == torch.float64


# item 4 ------------------------------------------------------------------------------------

def test_empty_masks_are_refused_with_the_likely_cause():
    model = _cnn()
    with pytest.raises(ValueError, match=r"masks are empty.*config list.*select"):
        speedup_model(model, torch.rand(2, 3, 8, 8), {}, logger=QUIET)
    assert model[0].out_channels == 8


# item 6 ------------------------------------------------------------------------------------

class InputResidual(nn.Module):
    """A pruned conv added to the network input: the add ties the conv's channels to the input's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x) + x)


def test_sped_up_model_that_cannot_run_is_an_error_naming_the_fix():
    torch.manual_seed(0)
    model = InputResidual().eval()
    masks = _l1(model, [{"op_names": ["conv"], "sparse_ratio": 0.5}])
    with pytest.raises(ValueError, match=r"cannot run on dummy_input.*size.*auto_set_denpendency_group_ids"):
        speedup_model(model, torch.rand(1, 3, 8, 8), masks, logger=QUIET)


# item 7 ------------------------------------------------------------------------------------

def test_masks_of_a_compiled_model_are_keyed_orig_mod_and_accepted():
    model = _cnn()
    compiled = torch.compile(model)
    masks = _l1(compiled, [{"op_names": ["_orig_mod.0"], "sparse_ratio": 0.5}])
    assert set(masks) == {"_orig_mod.0"}
    dummy = torch.rand(2, 3, 8, 8)
    result = speedup_model(compiled, dummy, masks, logger=QUIET)
    assert result is model and model[0].out_channels == 4 and model[1].num_features == 4
    assert model(dummy).shape == (2, 5)


def test_topological_pruner_on_a_compiled_model_speeds_up():
    from nni_topo_pruner import TopologicalPruner

    model = _cnn()
    compiled = torch.compile(model)
    pruner = TopologicalPruner(compiled, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], progress=False)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    result = speedup_model(compiled, torch.rand(2, 3, 8, 8), masks, logger=QUIET)
    assert result is model and (model[0].out_channels, model[3].out_channels) == (4, 2)


# item 8 ------------------------------------------------------------------------------------

def test_data_parallel_model_is_unwrapped_and_its_masks_accepted():
    model = _cnn()
    parallel = nn.DataParallel(model)
    masks = _l1(parallel, [{"op_names": ["module.0"], "sparse_ratio": 0.5}])
    assert set(masks) == {"module.0"}
    dummy = torch.rand(2, 3, 8, 8)
    result = speedup_model(parallel, dummy, masks, logger=QUIET)
    assert result is parallel and model[0].out_channels == 4
    assert parallel(dummy).shape == (2, 5)


def test_unwrapped_masks_on_a_data_parallel_model_are_accepted():
    model = _cnn()
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    speedup_model(nn.DataParallel(model), torch.rand(2, 3, 8, 8), masks, logger=QUIET)
    assert model[0].out_channels == 4


# item 18 -----------------------------------------------------------------------------------

def test_meta_model_is_refused_saying_to_materialise_the_weights():
    model = _cnn()
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    meta = _cnn().to("meta")
    with pytest.raises(ValueError, match=r"'meta' device.*materialise.*to_empty.*load_state_dict"):
        speedup_model(meta, torch.rand(2, 3, 8, 8), masks, logger=QUIET)


def test_the_run_check_does_not_touch_batchnorm_statistics():
    """The forward pass after the speed-up runs in eval mode (NNI builds replacement layers in training mode)."""
    model = _cnn()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    kept = masks["0"]["weight"].flatten(1).any(dim=1)
    expected = model[1].running_mean[kept].clone()
    speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)
    assert torch.equal(model[1].running_mean, expected)
