"""The TopologicalPruner's hooks form one straight pipeline: units -> salience metrics ->
budgets, the GA's choice and the masks, each hook handing its result to the next."""
from __future__ import annotations

import copy

import numpy as np
import torch

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.data_collector import PruningUnit
from nni_topo_pruner.pruner import UnitMetrics
from nni_topo_pruner.sparsity_allocator import channel_keep_mask, unit_masks

FAST = dict(population_size=8, generations=4, progress=False)
CONFIG = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["fc2"], "sparse_ratio": 0.5}]


def test_hooks_hand_their_results_on(small_cnn):
    pruner = TopologicalPruner(copy.deepcopy(small_cnn), copy.deepcopy(CONFIG), seed=0, **FAST)
    units = pruner._collect_data()
    assert [u.name for u in units] == ["conv1", "conv2", "conv3", "fc1"]
    assert all(isinstance(u, PruningUnit) for u in units)
    metrics = pruner._calculate_metrics(units)
    assert isinstance(metrics, UnitMetrics) and metrics.units is units
    conv2 = metrics.salience["conv2"]["weight"]
    assert conv2.shape == (24, 1, 1, 1) and conv2.dtype == torch.float32
    assert float(conv2.min()) >= 0.0 and float(conv2.max()) < 1.0  # scaled per unit, order kept
    assert np.array_equal(np.argsort(conv2.view(-1).numpy(), kind="stable"),
                          np.argsort(metrics.analysed[1].salience.astype(np.float32), kind="stable"))
    masks = pruner._generate_sparsity(metrics)
    pruner.unwrap_model()
    _, again = TopologicalPruner(copy.deepcopy(small_cnn), copy.deepcopy(CONFIG), seed=0, **FAST).compress()
    for module, targets in masks.items():
        for target, mask in targets.items():
            assert torch.equal(mask, again[module][target]), f"{module}.{target}"
    assert [int(channel_keep_mask(masks[m]["weight"]).sum()) for m in ("conv1", "conv2", "conv3", "fc1")] \
        == [8, 12, 5, 6]


def test_masks_keep_the_weight_dtype_and_align_the_bias(small_cnn):
    model = copy.deepcopy(small_cnn).double()
    pruner = TopologicalPruner(model, [{"op_names": ["conv2"], "sparse_ratio": 0.25}], seed=0, **FAST)
    masks = pruner._generate_sparsity(pruner._calculate_metrics(pruner._collect_data()))
    pruner.unwrap_model()
    weight, bias = masks["conv2"]["weight"], masks["conv2"]["bias"]
    assert weight.shape == model.conv2.weight.shape and weight.dtype == torch.float64
    assert bias.shape == (24,) and bias.dtype == torch.float32  # NNI's align rule gives float masks
    assert torch.equal(bias.bool(), torch.as_tensor(channel_keep_mask(weight))) and int(bias.sum()) == 18


def test_unit_masks_of_blocks_share_one_target(small_cnn):
    pruner = TopologicalPruner(copy.deepcopy(small_cnn), [{"op_names": ["conv1"], "sparse_ratio": 0.5}], **FAST)
    spaces = pruner._target_spaces
    pruner.unwrap_model()
    points = np.zeros((8, 27))
    blocks = [PruningUnit(f"conv1[block {b}/2]", [("conv1", "weight")], np.arange(8 * b, 8 * b + 8), points)
              for b in range(2)]
    keeps = [np.arange(8) < 3, np.arange(8) >= 6]
    masks = unit_masks(blocks, keeps, spaces)
    assert np.flatnonzero(channel_keep_mask(masks["conv1"]["weight"])).tolist() == [0, 1, 2, 14, 15]
    assert masks["conv1"]["bias"].tolist() == channel_keep_mask(masks["conv1"]["weight"]).astype(float).tolist()
