"""Issue 15, items 2, 3, 4 and 6 (speed-up part): what nni_topo_pruner.speedup.speedup_model
adds to NNI's ModelSpeedup. Real NNI pruners and ModelSpeedup, small models."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from nni.compression.pruning import L1NormPruner
from torch import nn

from nni_topo_pruner.masks_io import save_masks
from nni_topo_pruner.speedup import speedup_model

QUIET = logging.getLogger("tests.quiet_speedup")
QUIET.setLevel(logging.CRITICAL)


def _l1(model: nn.Module, config: list) -> dict:
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


def _masked_output(model: nn.Module, masks: dict, dummy: torch.Tensor) -> torch.Tensor:
    """The output of ``model`` with the masks multiplied into its weights (what speed-up must preserve)."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, targets in masks.items():
            module = masked.get_submodule(name)
            for target, mask in targets.items():
                getattr(module, target).mul_(mask)
        return masked(dummy)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


# ----------------------------------------------------------------------------------------
# item 2: Conv3d shrinks; a masked layer that kept its size is an error
# ----------------------------------------------------------------------------------------

class Net3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(8)
        self.conv2 = nn.Conv3d(8, 6, 3)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool3d(x, 2)
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def _net3d() -> nn.Module:
    torch.manual_seed(0)
    model = Net3d().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def test_conv3d_layers_shrink_and_keep_the_masked_output():
    model, dummy = _net3d(), torch.rand(2, 2, 6, 6, 6)
    masks = _l1(model, [{"op_types": ["Conv3d"], "sparse_ratio": 0.5}])
    # a removed channel no longer feeds its BatchNorm's shift forward: zero the BatchNorm there too
    removed = ~masks["conv1"]["weight"].flatten(1).any(dim=1)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in (reference.bn1.weight, reference.bn1.bias, reference.bn1.running_mean):
            tensor[removed] = 0
    expected = _masked_output(reference, masks, dummy)
    params_before = sum(p.numel() for p in model.parameters())
    speedup_model(model, dummy, masks, logger=QUIET)
    assert (model.conv1.out_channels, model.bn1.num_features, model.conv2.in_channels) == (4, 4, 4)
    assert (model.conv2.out_channels, model.fc.in_features) == (3, 3)
    assert sum(p.numel() for p in model.parameters()) < params_before
    with torch.no_grad():
        torch.testing.assert_close(model(dummy), expected, rtol=1e-4, atol=1e-5)


def test_depthwise_conv3d_shrinks_with_its_input_layer():
    # NNI's auto_set_denpendency_group_ids does not group Conv3d, so the aligned masks that a
    # dependency group would give are written here: '0' and the depthwise '2' keep the same channels
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 8, 1), nn.ReLU(), nn.Conv3d(8, 8, 3, groups=8), nn.ReLU(),
                          nn.Conv3d(8, 4, 1)).eval()
    dummy = torch.rand(2, 2, 5, 5, 5)
    keep = torch.tensor([0., 1., 1., 0., 1., 0., 0., 1.])
    masks = {name: {"weight": keep.view(8, 1, 1, 1, 1).expand_as(model[int(name)].weight).clone(), "bias": keep.clone()}
             for name in ("0", "2")}
    expected = _masked_output(model, masks, dummy)
    speedup_model(model, dummy, masks, logger=QUIET)
    assert (model[0].out_channels, model[2].in_channels, model[2].out_channels, model[2].groups) == (4, 4, 4, 4)
    assert model[4].in_channels == 4
    with torch.no_grad():
        torch.testing.assert_close(model(dummy), expected, rtol=1e-4, atol=1e-5)


def test_conv3d_all_ones_masks_keep_outputs():
    model, dummy = _net3d(), torch.rand(2, 2, 6, 6, 6)
    with torch.no_grad():
        original = model(dummy)
    masks = {name: {"weight": torch.ones_like(m.weight), "bias": torch.ones_like(m.bias)}
             for name, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    speedup_model(model, dummy, masks, logger=QUIET)
    assert model.conv1.out_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(model(dummy), original, rtol=1e-4, atol=1e-5)


class MyLinear(nn.Linear):
    """A Linear subclass: NNI's ModelSpeedup does not know its type name and keeps it as is."""


def test_masked_layer_nni_cannot_replace_is_an_error_naming_it():
    torch.manual_seed(0)
    model = nn.Sequential(MyLinear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    mask = torch.ones(6, 4)
    mask[:2] = 0
    with pytest.raises(ValueError, match=r"layer '0' \(MyLinear\) has 2 of 6 output channels masked.*"
                                         r"cannot replace MyLinear.*customized_replacers"):
        speedup_model(model, torch.rand(2, 4), {"0": {"weight": mask}}, logger=QUIET)


def test_masked_channels_restored_by_a_mask_conflict_are_an_error(residual_cnn):
    # conv1 and conv3 meet in an add; without dependency groups their masks differ and NNI
    # unions them: every channel stays
    first, second = torch.ones(12, 3, 3, 3), torch.ones(12, 8, 3, 3)
    first[:6], second[6:] = 0, 0
    masks = {"conv1": {"weight": first}, "conv3": {"weight": second}}
    with pytest.raises(ValueError, match=r"layer 'conv1' \(Conv2d\) has 6 of 12 output channels masked.*"
                                         r"auto_set_denpendency_group_ids"):
        speedup_model(residual_cnn, torch.rand(2, 3, 16, 16), masks, logger=QUIET)


# ----------------------------------------------------------------------------------------
# item 3: float16 / bfloat16 / torch.compile
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dummy_dtype", ["same", "float32"])
def test_low_precision_model_is_sped_up_and_keeps_its_dtype(dtype, dummy_dtype):
    model = _cnn()
    dummy = torch.rand(2, 3, 8, 8)
    masks = _l1(model, [{"op_names": ["0", "3"], "sparse_ratio": 0.5}])
    expected = _masked_output(model, masks, dummy)
    model = model.to(dtype)
    masks = {n: {t: m.to(dtype) for t, m in targets.items()} for n, targets in masks.items()}
    speedup_model(model, dummy.to(dtype) if dummy_dtype == "same" else dummy, masks, logger=QUIET)
    assert (model[0].out_channels, model[1].num_features, model[3].out_channels, model[5].in_features) == (4, 4, 2, 32)
    assert {p.dtype for p in [*model.parameters(), *model.buffers()] if p.is_floating_point()} == {dtype}
    with torch.no_grad():
        output = model(dummy.to(dtype))
    assert output.dtype == dtype
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)


def test_mixed_precision_model_is_refused_with_the_fix():
    model = _cnn()
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    model[0].half()
    with pytest.raises(ValueError, match=r"mixes floating dtypes.*model\.float\(\)"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)
    assert model[0].weight.dtype == torch.float16 and model[0].out_channels == 8  # left as it was


def test_torch_compiled_model_speeds_up_its_original_module():
    model = _cnn()
    dummy = torch.rand(2, 3, 8, 8)
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    compiled = torch.compile(model)
    result = speedup_model(compiled, dummy, masks, logger=QUIET)
    assert result is model and model[0].out_channels == 4
    assert model(dummy).shape == (2, 5)


# ----------------------------------------------------------------------------------------
# item 4: what NNI's speed-up crashes on, caught before it, naming the layer
# ----------------------------------------------------------------------------------------

def test_one_neuron_layer_is_refused_naming_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1), nn.ReLU(), nn.Linear(1, 3)).eval()
    masks = _l1(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5}])  # int(1 * 0.5) = 0: '2' keeps its neuron
    assert bool(masks["2"]["weight"].all())
    with pytest.raises(ValueError, match=r"layer '2' \(Linear, output shape \(2, 1\)\) outputs a single value"):
        speedup_model(model, torch.rand(2, 4), masks, logger=QUIET)
    assert model[0].out_features == 6  # nothing sped up


def test_all_zero_layer_is_refused_naming_it():
    model = _cnn()
    with torch.no_grad():
        model[3].weight.zero_()
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    with pytest.raises(ValueError, match=r"layer '3' \(Conv2d\) has all-zero weights"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)


def test_masks_removing_every_channel_are_refused_naming_the_layer():
    model = _cnn()
    masks = {"3": {"weight": torch.zeros_like(model[3].weight), "bias": torch.zeros_like(model[3].bias)}}
    with pytest.raises(ValueError, match=r"masks remove every output channel of layer '3'.*sparse_ratio"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)


def test_nan_in_a_non_target_bias_is_refused_naming_the_layer():
    model = _cnn()
    masks = _l1(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    with torch.no_grad():
        model[5].bias[1] = float("nan")
    with pytest.raises(ValueError, match=r"layer '5' \(Linear\): bias holds NaN or Inf"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)
    assert model[0].out_channels == 8


# ----------------------------------------------------------------------------------------
# item 6: masks checked against the model before the speed-up
# ----------------------------------------------------------------------------------------

def test_masks_naming_a_missing_layer_are_refused():
    model = _cnn()
    masks = {"features.0": {"weight": torch.ones(8, 3, 3, 3)}}
    with pytest.raises(ValueError, match=r"masks name layer 'features\.0', which the model does not have"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)


@pytest.mark.parametrize("index", [2, 6])
def test_masks_on_a_module_without_weights_are_refused(index):
    torch.manual_seed(0)
    model = nn.Sequential(*_cnn(), nn.Identity()).eval()  # '2' is a ReLU, '6' an Identity
    masks = {str(index): {"weight": torch.ones(8)}}
    kind = type(model[index]).__name__
    with pytest.raises(ValueError, match=rf"mask {index}\.weight: layer '{index}' \({kind}\) has no parameter 'weight'"):
        speedup_model(model, torch.rand(2, 3, 8, 8), masks, logger=QUIET)


def test_masks_of_another_shape_are_refused(tmp_path):
    model = _cnn()
    path = tmp_path / "masks.pth"
    save_masks({"0": {"weight": torch.ones(16, 3, 3, 3)}}, path)
    with pytest.raises(ValueError, match=r"mask 0\.weight has shape \(16, 3, 3, 3\) but layer '0' \(Conv2d\) has "
                                         r"weight of shape \(8, 3, 3, 3\)"):
        speedup_model(model, torch.rand(2, 3, 8, 8), path, logger=QUIET)


def test_replacers_docstring_example():
    import doctest

    from nni_topo_pruner import replacers

    result = doctest.testmod(replacers, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
