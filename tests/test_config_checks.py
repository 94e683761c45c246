"""Issue 26, items 4, 9, 10, 18, 19 and 20 (library part): config lists that select nothing or
do not fit the model, NumPy seeds, a bare tensor as calibration data, weights on the meta
device, non-bool progress. Each error names the entry or the option and the fix, and leaves
the model unwrapped."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from torch import nn

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.random_pruner import RandomPruner
from nni_topo_pruner.registry import create_pruner


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()


def _unwrapped(model: nn.Module) -> bool:
    return not any("Wrapper" in type(m).__name__ for m in model.modules())


def _build(name: str, model: nn.Module, config_list: list, **options):
    if name == "topological":
        return TopologicalPruner(model, config_list, progress=False, **options)
    if name == "random":
        return RandomPruner(model, config_list, **options)
    return create_pruner(name, model, config_list, **options)


PRUNERS = ["topological", "random", "l1"]


# item 4 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize(("op_types", "message"), [
    (["conv2d"], r"config_list\[0\]: op_types 'conv2d' is not a layer type.*did you mean 'Conv2d'"),
    (["Conv5d"], r"selects no layer: config_list\[0\].*no layer of type 'Conv5d'.*did you mean 'Conv2d'"),
    ([], r"selects no layer: config_list\[0\].*op_types is empty"),
])
def test_config_list_selecting_nothing_is_refused_naming_the_entry(pruner, op_types, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        _build(pruner, model, [{"op_types": op_types, "sparse_ratio": 0.5}])
    assert _unwrapped(model)


def test_betti_pruner_case_typo_in_op_types_is_named():
    from nni_topo_pruner.bmvc.pruner import BettiPruner

    with pytest.raises(ValueError, match=r"did you mean 'Conv2d'"):
        BettiPruner(_model(), [{"op_types": ["conv2d"], "sparse_ratio": 0.5}],
                    calibration_loader=[torch.rand(4, 3, 8, 8)], num_images=4, progress=False)


# item 19 -----------------------------------------------------------------------------------

class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.rnn = nn.LSTM(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.conv(x).mean(dim=(2, 3)).unsqueeze(0))[0]


@pytest.mark.parametrize("pruner", PRUNERS)
@pytest.mark.parametrize(("config_list", "message"), [
    ([{"op_types": ["Conv2d"]}],
     r"selects no layer to prune: config_list\[0\] selects '0.weight', '2.weight' but gives no 'sparse_ratio'"),
    ([{"op_names": ["0"], "sparse_ratio": 0.5}, {"op_names": ["2"]}],
     r"config_list\[1\] selects '2.weight' but gives no 'sparse_ratio': add 'sparse_ratio'"),
    ([{"op_names": ["nope"], "sparse_ratio": 0.5}], r"config_list\[0\]: op_names 'nope' is not a layer of the model"),
    ([{"op_names": ["0"], "sparse_ratio": 0.5, "global_group_id": 1},
      {"op_names": ["2"], "sparse_ratio": 0.3, "global_group_id": 1}],
     r"global group 1 mixes sparse_ratio values: 0.3 \(config_list\[1\]: '2'\); 0.5 \(config_list\[0\]: '0'\).*"
     r"same sparse_ratio"),
    ([{"op_names": ["0"], "sparse_ratio": 0.5, "dependency_group_id": "a"},
      {"op_names": ["2"], "sparse_ratio": 0.3, "dependency_group_id": "a"}],
     r"dependency group 'a' mixes sparse_ratio values.*same sparse_ratio"),
])
def test_config_list_errors_nni_leaves_bare_name_the_entry(pruner, config_list, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        _build(pruner, model, config_list)
    assert _unwrapped(model)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_layer_type_nni_cannot_prune_is_named_with_the_fix(pruner):
    model = WithLSTM()
    with pytest.raises(ValueError, match=r"config_list\[0\] selects 'rnn' \(LSTM\).*exclude_op_types"):
        _build(pruner, model, [{"op_types": ["LSTM", "Conv2d"], "sparse_ratio": 0.5}])
    assert _unwrapped(model)


def test_topological_config_list_unknown_op_names_is_named():
    from nni_topo_pruner.allocation import topological_config_list

    with pytest.raises(ValueError, match=r"config_list\[0\]: op_names 'nope' is not a layer"):
        topological_config_list(_model(), [{"op_names": ["nope"], "sparse_ratio": 0.5}], torch.rand(1, 3, 8, 8))


def test_valid_and_legacy_config_lists_still_pass():
    for config_list in ([{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                        [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names": ["0"]}],
                        [{"total_sparsity": 0.5, "op_types": ["Conv2d"]}],
                        [{"op_types": ["Conv2d"], "target_names": ["weight"],
                          "target_settings": {"weight": {"sparse_ratio": 0.5}}}]):
        model = _model()
        with contextlib.redirect_stdout(io.StringIO()):
            _, masks = _build("topological", model, config_list).compress()
        assert masks


# item 18 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pruner", PRUNERS)
def test_meta_model_is_refused_saying_to_materialise_it(pruner):
    model = _model().to("meta")
    with pytest.raises(ValueError, match=r"'meta' device.*materialise.*to_empty"):
        _build(pruner, model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])


# item 9 ------------------------------------------------------------------------------------

def test_numpy_integer_seed_is_normalised():
    masks = {}
    for seed in (1, np.int64(1)):
        pruner = TopologicalPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], seed=seed,
                                   progress=False)
        _, masks[type(seed).__name__] = pruner.compress()
        assert type(pruner.ga_config.seed) is int
    assert all(torch.equal(masks["int"][n]["weight"], masks["int64"][n]["weight"]) for n in masks["int"])
    _, random_masks = RandomPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                                   seed=np.int32(1)).compress()
    assert random_masks


def test_numpy_integer_seed_in_torch_pruning_importance():
    tp = pytest.importorskip("torch_pruning")
    from nni_topo_pruner.torch_pruning import TopologicalImportance

    model = _model()
    imp = TopologicalImportance(seed=np.int64(1))
    tp.pruner.BasePruner(model, torch.rand(1, 3, 8, 8), importance=imp, pruning_ratio=0.5,
                         ignored_layers=[model[2]]).step()
    assert model[0].out_channels == 4


# item 10 -----------------------------------------------------------------------------------

def test_bare_tensor_as_calibration_loader_is_refused():
    model = _model()
    with pytest.raises(ValueError, match=r"calibration_loader must be an iterable of batches.*\[tensor\]"):
        TopologicalPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], cloud="activations",
                          calibration_loader=torch.rand(8, 3, 8, 8), num_images=8, progress=False)
    assert _unwrapped(model)


# item 20 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["no", 0, None])
def test_progress_must_be_a_bool(value):
    from nni_topo_pruner.bmvc.pruner import BettiPruner

    with pytest.raises(ValueError, match=r"progress must be True or False, got"):
        TopologicalPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], progress=value)
    with pytest.raises(ValueError, match=r"progress must be True or False, got"):
        BettiPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                    calibration_loader=[torch.rand(4, 3, 8, 8)], num_images=4, progress=value)
