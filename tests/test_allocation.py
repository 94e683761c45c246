"""Topology-driven per-layer sparse ratios (nni_topo_pruner.allocation)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nni_topo_pruner.allocation import (channel_producers, kept_macs, layer_damage_curve, layer_macs,
                                        topological_config_list)
from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.registry import create_pruner
from nni_topo_pruner.speedup import speedup_model

UNIFORM = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


def chain(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10)).eval()


def dummy() -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_cost_model_equals_the_macs_of_the_physically_pruned_model():
    model = chain()
    configs, layers = topological_config_list(model, UNIFORM, dummy(), progress=False)
    names = [layer.name for layer in layers]
    predicted = kept_macs(layer_macs(model, dummy()), channel_producers(model, names),
                          {layer.name: 1 - layer.pruned(layer.sparse_ratio) / layer.n for layer in layers})
    pruned = copy.deepcopy(model)
    pruner = create_pruner("l1", pruned, [entry for entry in configs if entry["sparse_ratio"] > 0])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    speedup_model(pruned, dummy(), masks)
    assert sum(layer_macs(pruned, dummy()).values()) == pytest.approx(predicted)


@pytest.mark.parametrize("budget", ["flops", "channels"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_budget_is_met_within_one_grid_step_and_ratios_are_grid_points(budget, ratio):
    model = chain(1)
    uniform = [{"op_types": ["Conv2d"], "sparse_ratio": ratio}]
    configs, layers = topological_config_list(model, uniform, dummy(), budget=budget, max_layer_ratio=0.8,
                                              grid_step=0.1, progress=False)
    if budget == "flops":
        macs, producers = layer_macs(model, dummy()), channel_producers(model, [layer.name for layer in layers])

        def cost(keep):
            return kept_macs(macs, producers, keep)
    else:
        def cost(keep):
            return sum(layer.n * keep[layer.name] for layer in layers)
    target = cost({layer.name: 1 - int(layer.n * ratio) / layer.n for layer in layers})
    got = cost({layer.name: 1 - layer.pruned(layer.sparse_ratio) / layer.n for layer in layers})
    assert got <= target + 1e-9
    # one grid step less on the last-raised layer would not meet it: at most one step of slack
    largest_step = max(cost({**{l.name: 1.0 for l in layers}}) - cost({**{l.name: 1.0 for l in layers},
                                                                      layer.name: 1 - layer.pruned(0.1) / layer.n})
                       for layer in layers)
    assert target - got <= 2 * largest_step
    for entry, layer in zip(configs, layers):
        assert entry == {"op_names": [layer.name], "sparse_ratio": layer.sparse_ratio}
        assert 0.0 <= layer.sparse_ratio <= 0.8 + 1e-12
        assert np.isclose(layer.sparse_ratio * 10, round(layer.sparse_ratio * 10))


def test_permuting_a_layers_filters_does_not_change_the_allocation():
    model = chain(2)
    _, layers = topological_config_list(model, UNIFORM, dummy(), progress=False)
    permuted = copy.deepcopy(model)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    conv, bn, nxt = permuted[4], permuted[5], permuted[7]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[perm]); conv.bias.copy_(conv.bias[perm])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(getattr(bn, name)[perm])
        nxt.weight.copy_(nxt.weight[:, perm])
    assert torch.allclose(model(dummy()), permuted(dummy()), atol=1e-5)
    _, layers_permuted = topological_config_list(permuted, UNIFORM, dummy(), progress=False)
    assert [l.sparse_ratio for l in layers] == [l.sparse_ratio for l in layers_permuted]
    for a, b in zip(layers, layers_permuted):
        np.testing.assert_allclose(a.damage, b.damage, rtol=1e-9, atol=1e-12)


def test_a_layer_of_near_duplicate_filters_is_pruned_first():
    """Two layers of equal size and cost: one holds 4 distinct directions, each repeated 4 times
    (with tiny noise), the other 16 distinct filters of the same norms. Pruning the redundant
    layer moves its diagram least, so with a channels budget it takes the pruning."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 1), nn.Conv2d(8, 16, 1))  # two independent clouds
    base = rng.normal(size=(4, 8))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    redundant = np.repeat(base, 4, axis=0) + 1e-3 * rng.normal(size=(16, 8))
    distinct = rng.normal(size=(16, 8))
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(redundant, dtype=torch.float32).view(16, 8, 1, 1))
        model[1].weight.copy_(torch.tensor(distinct, dtype=torch.float32).view(16, 8, 1, 1))
    for anchored in (True, False):
        _, layers = topological_config_list(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.375}], None,
                                            budget="channels", zero_anchor=anchored, progress=False)
        by_name = {layer.name: layer for layer in layers}
        assert by_name["0"].damage[5] < by_name["1"].damage[5]  # at ratio 0.25
        assert by_name["0"].sparse_ratio > by_name["1"].sparse_ratio


def test_damage_curve_starts_at_zero_and_reaches_the_whole_diagram():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(20, 6))
    calc = MetricCalculator(distance="wasserstein")
    curve = layer_damage_curve(calc, points, [0.0, 0.5, 0.95], zero_anchor=True)
    assert curve[0] == 0.0
    assert 0 < curve[1] < curve[2] <= 1.0 + 1e-12
    # everything pruned but the anchor: the whole diagram is gone
    assert layer_damage_curve(calc, points, [1.0], zero_anchor=True)[0] == pytest.approx(1.0)


def test_the_config_list_drives_every_pruner_to_the_same_widths():
    model = chain(4)
    configs, layers = topological_config_list(model, UNIFORM, dummy(), progress=False)
    widths = []
    for name in ("l1", "random", "topological"):
        pruned = copy.deepcopy(model)
        options = {"progress": False} if name == "topological" else {}
        pruner = create_pruner(name, pruned, configs, **options)
        _, masks = pruner.compress()
        widths.append({layer: int(mask["weight"].flatten(1).any(1).sum()) for layer, mask in masks.items()})
    assert widths[0] == widths[1] == widths[2]
    assert widths[0] == {layer.name: layer.n - layer.pruned(layer.sparse_ratio) for layer in layers}


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": "params"}, "budget must be one of"),
    ({"max_layer_ratio": 1.0}, "max_layer_ratio must lie strictly between 0 and 1"),
    ({"grid_step": 0.0}, "grid_step must lie in"),
    ({"max_layer_ratio": "0.5"}, "max_layer_ratio must be a finite number"),
    ({"grid_step": True}, "grid_step must be a finite number"),
    ({"grid_step": 0.95}, r"grid_step must be a finite number >= 0 and <= 0.9, got 0.95"),
    ({"budget": "FLOPS", "grid_step": float("nan")}, "grid_step must be a finite number"),
    ({"distnce": "wasserstein"}, "unknown criterion option"),
    ({"distance": "earth"}, "distance"),
])
def test_bad_options_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        topological_config_list(chain(), UNIFORM, dummy(), progress=False, **kwargs)


def test_bad_config_lists_and_layers_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="does not support"):
        topological_config_list(chain(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "global_group_id": 1}],
                                dummy(), progress=False)
    with pytest.raises(ValueError, match="supports Conv1d/2d/3d and Linear"):
        topological_config_list(chain(), [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}], dummy(),
                                progress=False)
    with pytest.raises(ValueError, match="selects no layer"):
        topological_config_list(chain(), [{"op_types": ["Conv3d"], "sparse_ratio": 0.5}], dummy(), progress=False)
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    with pytest.raises(ValueError, match="grouped convolution"):
        topological_config_list(grouped, UNIFORM, torch.rand(1, 4, 8, 8), progress=False)
    broken = chain()
    with torch.no_grad():
        broken[4].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf weight"):
        topological_config_list(broken, UNIFORM, dummy(), progress=False)
    with pytest.raises(ValueError, match="sparse_ratio"):
        topological_config_list(chain(), [{"op_types": ["Conv2d"], "sparse_ratio": 1.5}], dummy(), progress=False)


def test_untraceable_models_get_the_channels_budget_advice():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.conv(x)
            return self.conv(-x)

    with pytest.raises(ValueError, match="budget='channels'"):
        topological_config_list(Dynamic(), UNIFORM, dummy(), progress=False)
    configs, _ = topological_config_list(Dynamic(), UNIFORM, None, budget="channels", progress=False)
    assert configs[0]["sparse_ratio"] == 0.5


def test_allocation_curves_cli_prints_every_layer_and_refuses_a_missing_file(tmp_path, capsys):
    from benchmarks.studies.allocation_curves import main
    from benchmarks.core.models import build_vgg16

    torch.manual_seed(0)
    torch.save(build_vgg16(width=0.125).state_dict(), tmp_path / "model.pt")
    assert main(["--weights", str(tmp_path / "model.pt"), "--width", "0.125", "--sparsities", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.count("| features.") == 2 * 13 and "allocated at 0.5" in out
    assert main(["--weights", str(tmp_path / "missing.pt")]) == 2
    assert "is not a file" in capsys.readouterr().err
