"""The calibration forward pass in float64 (``calibration_precision``, issue 25).

A float32 convolution's last bits depend on the CPU (instruction set, library, threads); deep in
a network those differences reach an activation cloud at ~1e-6 of its scale and can move a mask.
In float64 they are ~1e-15. These tests state what the option promises: the pass really runs
in float64, the model comes back bit for bit (same Parameter objects, same storage), even when
the pass fails, and a bad value is refused with a message that names the option.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.bmvc import BettiPruner
from nni_topo_pruner.feature_collector import FeatureCollector, computing_in, feed_calibration_loader
from nni_topo_pruner.topology.validation import InvalidParameterError


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU()).eval()


def images(count: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 3, 12, 12, generator=generator) for _ in range(count)]


def collected(model: nn.Module, precision: str, loader=None) -> torch.Tensor:
    collector = FeatureCollector({"3": model[3]}, num_images=16, max_feature_dim=1, reduction="avgpool", seed=0)
    with collector.hooked():
        feed_calibration_loader(model, loader if loader is not None else images(), collector, precision)
    return collector.result()["3"]


def snapshot(model: nn.Module):
    return {name: (tensor, tensor.data_ptr(), tensor.dtype, tensor.detach().clone())
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]}


def assert_restored(model: nn.Module, before) -> None:
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert after.keys() == before.keys()
    for name, (tensor, pointer, dtype, values) in before.items():
        if isinstance(tensor, nn.Parameter):
            assert after[name] is tensor, name  # the same Parameter object: optimisers still hold it
        assert after[name].data_ptr() == pointer and after[name].dtype == dtype, name
        assert torch.equal(after[name], values), name


def test_float64_pass_equals_a_float64_copy_of_the_model_bit_for_bit():
    model = small_net()
    reference = copy.deepcopy(model).double()
    collector = FeatureCollector({"3": reference[3]}, num_images=16, max_feature_dim=1, reduction="avgpool", seed=0)
    with collector.hooked():
        feed_calibration_loader(reference, [x.double() for x in images()], collector, "model")
    assert torch.equal(collected(model, "float64"), collector.result()["3"])


def test_model_precision_is_the_float32_pass_and_differs_from_float64():
    model = small_net()
    in_float32 = collected(model, "model")
    in_float64 = collected(model, "float64")
    assert not torch.equal(in_float32, in_float64)  # otherwise the option would decide nothing
    torch.testing.assert_close(in_float32, in_float64, rtol=1e-5, atol=1e-6)


def test_the_model_is_restored_bit_for_bit():
    model = small_net().train()
    before = snapshot(model)
    collected(model, "float64")
    assert_restored(model, before)
    assert model.training  # the mode too


def test_a_failing_float64_pass_restores_the_model_and_names_the_fix():
    class Float32Only(nn.Module):  # builds a float32 tensor in forward: cannot run in float64
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.register_buffer("offset", torch.ones(4, 1, 1))

        def forward(self, x):
            return (self.conv(x) + self.offset).flatten(1) @ torch.ones(4 * 10 * 10, 2)  # a float32 matrix

    model = Float32Only().eval()
    before = snapshot(model)
    collector = FeatureCollector({"conv": model.conv}, 8, max_feature_dim=1, reduction="avgpool", seed=0)
    with pytest.raises(RuntimeError, match="calibration_precision='model'"), collector.hooked():
        feed_calibration_loader(model, images(), collector, "float64")
    assert_restored(model, before)


def test_shared_parameters_are_converted_once_and_restored():
    conv = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    with computing_in(model, torch.float64):
        assert model[0].weight is model[2].weight and model[0].weight.dtype == torch.float64
        out = model(torch.rand(1, 3, 4, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert model[0].weight is model[2].weight and model[0].weight.dtype == torch.float32


@pytest.mark.parametrize("build", [
    lambda m, p: TopologicalPruner(m, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], cloud="activations",
                                   calibration_loader=images(), calibration_precision=p, progress=False),
    lambda m, p: BettiPruner(m, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=images(),
                             calibration_precision=p, progress=False),
])
@pytest.mark.parametrize("value", ["float32", "double", 64, None])
def test_bad_calibration_precision_names_the_option(build, value):
    with pytest.raises(InvalidParameterError, match="calibration_precision"):
        build(small_net(), value)


def test_betti_importance_checks_calibration_precision():
    from nni_topo_pruner.torch_pruning import BettiImportance

    with pytest.raises(InvalidParameterError, match="calibration_precision"):
        BettiImportance(images(), calibration_precision="half")


@pytest.mark.parametrize("precision", ["float64", "model"])
def test_activation_masks_leave_the_model_unchanged(precision):
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = TopologicalPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], cloud="activations",
                               calibration_loader=images(), calibration_precision=precision, progress=False)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    assert masks["0"]["weight"].sum(dim=(1, 2, 3)).gt(0).sum() == 4
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key


def test_the_report_records_the_calibration_precision():
    pruner = TopologicalPruner(small_net(), [{"op_names": ["0"], "sparse_ratio": 0.5}], cloud="activations",
                               calibration_loader=images(), calibration_precision="model", num_images=12,
                               progress=False)
    pruner.compress()
    assert pruner.report.options["calibration_precision"] == "model" and pruner.report.options["num_images"] == 12
