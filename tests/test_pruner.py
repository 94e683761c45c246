"""TopologicalPruner as an NNI pruner: config-list semantics, determinism, speed-up, bad input."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from nni.compression.pruning import L1NormPruner
from nni.compression.utils import auto_set_denpendency_group_ids

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.sparsity_allocator import channel_keep_mask
from nni_topo_pruner.speedup import speedup_model

FAST = dict(population_size=8, generations=4, progress=False)


def kept_counts(masks):
    return {name: int(channel_keep_mask(targets["weight"]).sum()) for name, targets in masks.items()
            if "weight" in targets}


def run_pruner(pruner_class, model, config_list, **options):
    model = copy.deepcopy(model)
    pruner = pruner_class(model, copy.deepcopy(config_list), **options)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return model, masks, pruner


CONFIG_LISTS = {
    "ratio": [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["fc2"], "sparse_ratio": 0.5}],
    "op_names": [{"op_names": ["conv1", "conv3"], "sparse_ratio": 0.3}, {"op_names": ["fc1"], "sparse_ratio": 0.75}],
    "op_names_re": [{"op_names_re": ["conv[12]"], "sparse_ratio": 0.6}],
    "exclude_types": [{"op_types": ["Conv2d", "Linear"], "exclude_op_types": ["Linear"], "sparse_ratio": 0.4}],
    "exclude_re": [{"op_types": ["Conv2d"], "exclude_op_names_re": [".*3"], "sparse_ratio": 0.45}],
    "max_sparse_ratio_global": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "max_sparse_ratio": 0.6,
                                 "global_group_id": "g"}],
    "legacy_total_global": [{"op_types": ["Conv2d"], "total_sparsity": 0.5, "max_sparsity_per_layer": 0.6}],
    "legacy_sparsity": [{"op_types": ["Conv2d"], "sparsity_per_layer": 0.5}, {"exclude": True, "op_names": ["conv2"]}],
}


@pytest.mark.parametrize("name", sorted(CONFIG_LISTS))
def test_same_per_layer_sparsity_as_l1(small_cnn, name):
    config_list = CONFIG_LISTS[name]
    _, l1_masks, _ = run_pruner(L1NormPruner, small_cnn, config_list)
    _, topo_masks, pruner = run_pruner(TopologicalPruner, small_cnn, config_list, seed=0, **FAST)
    assert set(topo_masks) == set(l1_masks)
    if "global" in name:
        check_global_group(small_cnn, topo_masks, ratio=0.5, max_sparse_ratio=0.6)
    else:
        assert kept_counts(topo_masks) == kept_counts(l1_masks)
    for module, targets in topo_masks.items():
        if "bias" in targets:  # the bias mask follows the weight's channels, as in NNI
            assert torch.equal(targets["bias"].bool(), torch.as_tensor(channel_keep_mask(targets["weight"])))
    # the report states what the masks say
    for unit in pruner.report.units:
        module = unit.members[0].rsplit(".", 1)[0]
        assert np.flatnonzero(channel_keep_mask(topo_masks[module]["weight"])).tolist() == sorted(unit.kept_channels)


def check_global_group(model, masks, ratio, max_sparse_ratio):
    """A global group prunes int(total weights * ratio) weights, greedily within one channel's weights,
    and never more than max_sparse_ratio of a layer."""
    modules = dict(model.named_modules())
    total = sum(modules[m].weight.numel() for m in masks)
    pruned = 0
    largest_channel = 0
    for module, count in kept_counts(masks).items():
        weight = modules[module].weight
        n, grain = weight.shape[0], weight[0].numel()
        assert count >= n - int(n * max_sparse_ratio), f"{module}: max_sparse_ratio not honoured"
        pruned += (n - count) * grain
        largest_channel = max(largest_channel, grain)
    assert int(total * ratio) - largest_channel < pruned <= int(total * ratio)


def test_global_group_differs_from_nni_where_nni_empties_layers(small_cnn):
    # NNI 3.0's L1 global path ignores max_sparse_ratio here and removes conv1 and conv2 entirely.
    config = CONFIG_LISTS["max_sparse_ratio_global"]
    _, l1_masks, _ = run_pruner(L1NormPruner, small_cnn, config)
    assert kept_counts(l1_masks)["conv1"] == 0
    _, masks, _ = run_pruner(TopologicalPruner, small_cnn, config, **FAST)
    assert min(kept_counts(masks).values()) > 0
    # without max_sparse_ratio every layer still keeps at least one channel
    _, masks, _ = run_pruner(TopologicalPruner, small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": 0.9,
                                                            "global_group_id": 0}], **FAST)
    assert min(kept_counts(masks).values()) >= 1


def test_exact_count_formula(small_cnn):
    # NNI prunes int(n * sparse_ratio) channels: conv2 has 24 channels -> 24 - int(24 * 0.3) = 17 kept
    _, masks, _ = run_pruner(TopologicalPruner, small_cnn, [{"op_names": ["conv2"], "sparse_ratio": 0.3}], **FAST)
    assert kept_counts(masks) == {"conv2": 17}


def test_dependency_group_of_different_sizes_is_rejected(small_cnn):
    # conv1 (16 channels) and conv2 (24) cannot share one channel mask
    config = [{"op_names": ["conv1", "conv2"], "sparse_ratio": 0.5, "dependency_group_id": 1}]
    pruner = TopologicalPruner(small_cnn, config, **FAST)
    with pytest.raises(ValueError, match="dependency group 1 mixes layers with different output sizes"):
        pruner.compress()


def test_same_seed_same_masks_different_seed_valid(small_cnn):
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    _, first, _ = run_pruner(TopologicalPruner, small_cnn, config, seed=3, **FAST)
    _, again, _ = run_pruner(TopologicalPruner, small_cnn, config, seed=3, **FAST)
    _, other, _ = run_pruner(TopologicalPruner, small_cnn, config, seed=4, **FAST)
    for module in first:
        assert torch.equal(first[module]["weight"], again[module]["weight"])
    assert kept_counts(other) == kept_counts(first)


def test_caller_rng_untouched(small_cnn):
    random.seed(123); np.random.seed(123); torch.manual_seed(123)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123); np.random.seed(123); torch.manual_seed(123)
    run_pruner(TopologicalPruner, small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], seed=0, **FAST)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_workers_give_the_same_masks(small_cnn):
    config = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["fc2"], "sparse_ratio": 0.5}]
    _, serial, _ = run_pruner(TopologicalPruner, small_cnn, config, seed=1, workers=1, **FAST)
    _, parallel, _ = run_pruner(TopologicalPruner, small_cnn, config, seed=1, workers=2, **FAST)
    for module in serial:
        assert torch.equal(serial[module]["weight"], parallel[module]["weight"])


def test_speedup_cifar_vgg16():
    from benchmarks.core.models import build_vgg16

    torch.manual_seed(0)
    model = build_vgg16(width=0.125).eval()
    dummy = torch.rand(2, 3, 32, 32)
    params_before = sum(p.numel() for p in model.parameters())
    pruner = TopologicalPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], seed=0, **FAST)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    speedup_model(model, dummy, masks)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [n - n // 2 for n in (8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64)]
    assert model(dummy).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < params_before


def test_speedup_resnet18_with_dependency_groups():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    dummy = torch.rand(1, 3, 64, 64)
    expected_shape = model(dummy).shape
    params_before = sum(p.numel() for p in model.parameters())
    config = auto_set_denpendency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy)
    pruner = TopologicalPruner(model, config, seed=0, **FAST)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    groups = [u for u in pruner.report.units if len(u.members) > 1]
    assert groups, "resnet18 has residual adds: some units must be dependency groups"
    for unit in groups:  # every member of a group keeps the same channels
        first = channel_keep_mask(masks[unit.members[0].rsplit(".", 1)[0]]["weight"])
        for member in unit.members[1:]:
            assert np.array_equal(channel_keep_mask(masks[member.rsplit(".", 1)[0]]["weight"]), first)
    speedup_model(model, dummy, masks)
    assert model(dummy).shape == expected_shape
    assert sum(p.numel() for p in model.parameters()) < params_before


def test_residual_dependency_group(residual_cnn):
    dummy = torch.rand(1, 3, 16, 16)
    model = copy.deepcopy(residual_cnn)
    config = auto_set_denpendency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy)
    pruner = TopologicalPruner(model, config, seed=0, **FAST)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    assert np.array_equal(channel_keep_mask(masks["conv1"]["weight"]), channel_keep_mask(masks["conv3"]["weight"]))
    unit = pruner.report.unit("conv1")
    assert sorted(unit.members) == ["conv1.weight", "conv3.weight"] and unit.neurons == 12 and unit.kept == 6
    speedup_model(model, dummy, masks)
    assert model.conv1.out_channels == model.conv3.out_channels == 6
    assert model(dummy).shape == (1, 4)


def test_grouped_conv_needs_dependency_setting_and_then_works():
    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.depthwise = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            x = self.depthwise(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
            return self.head(x.mean(dim=(2, 3)))

    model = Grouped().eval()
    with pytest.raises(ValueError, match="grouped convolution.*groups=4"):
        TopologicalPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], **FAST)
    assert not any("Wrapper" in type(m).__name__ for m in model.modules()), "model must be left unwrapped"
    dummy = torch.rand(1, 3, 8, 8)
    config = auto_set_denpendency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], dummy)
    pruner = TopologicalPruner(model, config, seed=0, **FAST)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    keep = channel_keep_mask(masks["conv2"]["weight"]).reshape(4, 4)
    assert keep.sum(axis=1).tolist() == [2, 2, 2, 2], "each of the 4 groups keeps half of its channels"
    speedup_model(model, dummy, masks)
    assert model(dummy).shape == (1, 3)


# ----------------------------------------------------------------------------- bad input
def test_nan_weights_named(small_cnn):
    with torch.no_grad():
        small_cnn.conv2.weight[3, 0, 0, 0] = float("nan")
        small_cnn.conv1.weight[0, 0, 0, 0] = float("inf")
    pruner = TopologicalPruner(small_cnn, [{"op_names": ["conv2"], "sparse_ratio": 0.5}], **FAST)
    with pytest.raises(ValueError, match=r"'conv2'.*1 NaN/Inf"):
        pruner.compress()
    pruner.unwrap_model()
    inf_pruner = TopologicalPruner(small_cnn, [{"op_names": ["conv1"], "sparse_ratio": 0.5}], **FAST)
    with pytest.raises(ValueError, match=r"'conv1'.*NaN/Inf"):
        inf_pruner.compress()


def test_layer_with_one_neuron_is_kept_whole():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1))
    _, masks, pruner = run_pruner(TopologicalPruner, model, [{"op_types": ["Linear"], "sparse_ratio": 0.5}], **FAST)
    # NNI prunes int(1 * 0.5) = 0 of a single neuron: it stays, documented behaviour
    assert kept_counts(masks) == {"0": 3, "2": 1}
    assert pruner.report.unit("2").kept == 1


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_sparse_ratio_outside_range(small_cnn, ratio):
    with pytest.raises(ValueError, match="sparse_ratio"):
        TopologicalPruner(small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": ratio}], **FAST)
    assert not any("Wrapper" in type(m).__name__ for m in small_cnn.modules())


def test_all_identical_filters(small_cnn):
    with torch.no_grad():
        small_cnn.conv2.weight.copy_(small_cnn.conv2.weight[:1].expand_as(small_cnn.conv2.weight))
    _, masks, pruner = run_pruner(TopologicalPruner, small_cnn, [{"op_names": ["conv2"], "sparse_ratio": 0.5}],
                                  seed=0, **FAST)
    assert kept_counts(masks) == {"conv2": 12}
    unit = pruner.report.unit("conv2")
    assert unit.final_distance == 0.0 and max(unit.salience) == 0.0
    _, again, _ = run_pruner(TopologicalPruner, small_cnn, [{"op_names": ["conv2"], "sparse_ratio": 0.5}],
                             seed=0, **FAST)
    assert torch.equal(masks["conv2"]["weight"], again["conv2"]["weight"])


@pytest.mark.parametrize("op_type, module", [("BatchNorm2d", "bn"), ("ConvTranspose2d", "up")])
def test_unsupported_module_type(op_type, module):
    model = torch.nn.Module()
    model.bn = torch.nn.BatchNorm2d(4)
    model.up = torch.nn.ConvTranspose2d(4, 4, 2)
    with pytest.raises(ValueError, match=rf"'{module}' of type {op_type}.*exclude"):
        TopologicalPruner(model, [{"op_types": [op_type], "sparse_ratio": 0.5}], **FAST)
    assert not any("Wrapper" in type(m).__name__ for m in model.modules())


@pytest.mark.parametrize("config, match", [
    ({"op_types": ["Conv2d"], "sparse_threshold": 0.5}, "sparse_threshold"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "granularity": "in_channel"}, "granularity"),
    ({"op_types": ["Conv2d"], "sparse_ration": 0.5}, "sparse_ration"),
    ({"op_types": ["Conv2d"], "sparse_ratio": "half"}, "sparse_ratio"),
])
def test_config_values_we_cannot_honour(small_cnn, config, match):
    with pytest.raises(ValueError, match=match):
        TopologicalPruner(small_cnn, [config], **FAST)


@pytest.mark.parametrize("option, value", [
    ("homology_dims", (-1,)), ("homology_dims", ()), ("distance", "euclid"), ("cloud_metric", "nonsense"), ("population_size", 0),
    ("generations", -1), ("crossover_probability", 1.5), ("mutation_probability", -0.1), ("workers", 0),
])
def test_options_validated_at_construction(small_cnn, option, value):
    with pytest.raises(ValueError, match=option):
        TopologicalPruner(small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], **{**FAST, option: value})
    assert not any("Wrapper" in type(m).__name__ for m in small_cnn.modules())


def test_one_shot_only(small_cnn):
    pruner = TopologicalPruner(small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], **FAST)
    with pytest.raises(ValueError, match="TopologicalPruner is a one-shot pruner"):
        pruner.compress(max_steps=10, max_epochs=None)
    pruner.unwrap_model()


@pytest.mark.parametrize("ratio, kept", [(np.float32(0.5), 8), (0, 16), (np.float64(0.25), 12), (1 / 2, 8)])
def test_any_real_sparse_ratio_in_range_is_accepted(small_cnn, ratio, kept):
    config_list = [{"op_names": ["conv1"], "sparse_ratio": ratio}]
    _, masks, _ = run_pruner(TopologicalPruner, small_cnn, config_list, seed=0, **FAST)
    assert kept_counts(masks) == {"conv1": kept}
    assert config_list[0]["sparse_ratio"] is ratio  # the caller's config list is not modified


def test_tied_targets_are_refused_before_wrapping():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    model[2].weight = model[0].weight
    with pytest.raises(ValueError, match="share parameters"):
        TopologicalPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5}], **FAST)
    assert model[2].weight is model[0].weight and not any("Wrapper" in type(m).__name__ for m in model.modules())


def test_the_docstring_states_todays_defaults():
    """The class docstring names the defaults that engine.DEFAULT_* and GAConfig really have (issue 28)."""
    import inspect

    from nni_topo_pruner import engine
    from nni_topo_pruner.evolutionary import GAConfig

    doc = " ".join(inspect.getdoc(TopologicalPruner).split())
    assert f"``{engine.DEFAULT_DISTANCE!r}`` (default)" in doc
    assert f"``{engine.DEFAULT_CLOUD_METRIC!r}`` (default)" in doc
    assert f"``{engine.DEFAULT_HOMOLOGY_DIMS!r}`` (default)" in doc
    assert f"(default ``{engine.DEFAULT_WASSERSTEIN_ORDER!r}``)" in doc
    assert f"{GAConfig().population_size} individuals, {GAConfig().generations} generations" in doc
    assert "bottleneck distance by default" not in doc and "1-Wasserstein" in doc
    assert engine.DEFAULT_DISTANCE == "wasserstein" and engine.DEFAULT_WASSERSTEIN_ORDER == 1.0
    params = inspect.signature(TopologicalPruner.__init__).parameters
    assert params["seed"].default == 0 and "(default ``0``" in doc
