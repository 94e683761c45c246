"""Data collector module (thesis 6.3): layer weights -> point clouds, one point per output
neuron (Linear) or filter (ConvNd), and the *pruning units* the evolutionary module works on.

A pruning unit is a set of output channels that must be chosen together:

* a single layer, when it has no dependency group;
* a dependency group (layers whose output channels are tied, e.g. by a residual add):
  one shared channel mask, so one cloud whose point ``i`` concatenates every member's
  filter ``i`` (the "connector" view of thesis 6.6.1);
* one block of channels, when NNI sets ``internal_metric_block`` (grouped convolutions):
  NNI prunes the same fraction inside each block, so each block is its own unit.

Example
-------
>>> import torch
>>> w = torch.arange(24.).reshape(4, 2, 3)           # 4 filters of a Conv1d, fan-in 6
>>> weight_point_cloud(w).shape
(4, 6)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import reduce
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch

_logger = logging.getLogger(__name__)

#: Module types whose weight rows are output neurons / filters (dim 0 = output channel).
SUPPORTED_MODULE_TYPES: Tuple[type, ...] = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


@dataclass
class PruningUnit:
    """Output channels chosen together: ``members`` share one channel mask over ``channels``."""

    name: str
    members: List[Tuple[str, str]]          # (module_name, target_name)
    channels: np.ndarray                    # indices into the layers' output channels
    points: np.ndarray                      # (len(channels), features) float64
    global_group_id: object = None          # units of one global group share one budget
    # channels of this unit already masked out (a scheduled pruner's earlier step): not in
    # ``channels``/``points``, and pruned again by the unit's mask
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n(self) -> int:
        return int(self.points.shape[0])


def weight_point_cloud(weight: torch.Tensor) -> np.ndarray:
    """One point per output channel: the weight reshaped to ``(out, fan_in)``, as float64."""
    if weight.dim() < 2:
        raise ValueError(f"a weight point cloud needs a weight with at least 2 dims, got shape {tuple(weight.shape)}")
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64).cpu().numpy()


def check_module_supported(module_name: str, module: torch.nn.Module, target_space) -> None:
    """Raise a ValueError that names the layer and the fix when we cannot prune it topologically."""
    if not isinstance(module, SUPPORTED_MODULE_TYPES):
        raise ValueError(
            f"TopologicalPruner cannot prune layer {module_name!r} of type {type(module).__name__}: supported types are "
            f"{', '.join(t.__name__ for t in SUPPORTED_MODULE_TYPES)}. Exclude it with 'exclude_op_names' or "
            f"'exclude_op_types' in the config list.")
    groups = getattr(module, "groups", 1)
    is_depthwise = groups == getattr(module, "in_channels", None) == getattr(module, "out_channels", None)
    if groups > 1 and not is_depthwise and not target_space.internal_metric_block:
        raise ValueError(
            f"layer {module_name!r} is a grouped convolution (groups={groups}): its output channels must be pruned "
            f"evenly per group. Set dependency groups with nni.compression.utils.auto_set_denpendency_group_ids "
            f"(which sets 'internal_metric_block'), or exclude the layer.")


def check_finite_weights(name: str, weight: torch.Tensor) -> None:
    """Raise ``ValueError`` naming layer ``name`` if its weight holds NaN or Inf values."""
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"layer {name!r} has {bad} NaN/Inf weight value(s): a point cloud needs finite coordinates. "
            f"Fix the checkpoint (or exclude the layer with 'exclude_op_names') before pruning.")


def collect_pruning_units(data: Mapping[str, Mapping[str, torch.Tensor]], target_spaces) -> List[PruningUnit]:
    """Group the active weight targets (NNI's ``active_sparse_targets_filter`` output) into units.

    ``target_spaces`` is the pruner's ``{module_name: {target_name: PruningTargetSpace}}``.
    """
    singles: List[Tuple[str, str]] = []
    groups: Dict[object, List[Tuple[str, str]]] = {}
    for module_name in sorted(data):
        for target_name in sorted(data[module_name]):
            space = target_spaces[module_name][target_name]
            check_finite_weights(module_name, data[module_name][target_name])
            if space.dependency_group_id is not None:
                groups.setdefault(space.dependency_group_id, []).append((module_name, target_name))
            else:
                singles.append((module_name, target_name))

    units: List[PruningUnit] = []
    for module_name, target_name in singles:
        space = target_spaces[module_name][target_name]
        units.extend(_split_blocks(module_name, [(module_name, target_name)],
                                   weight_point_cloud(data[module_name][target_name]),
                                   block_count=int(space.internal_metric_block or 1),
                                   global_group_id=space.global_group_id))
    for group_id, members in groups.items():
        clouds = [weight_point_cloud(data[m][t]) for m, t in members]
        sizes = {c.shape[0] for c in clouds}
        if len(sizes) != 1:
            detail = ", ".join(f"{m}: {c.shape[0]}" for (m, _), c in zip(members, clouds))
            raise ValueError(f"dependency group {group_id!r} mixes layers with different output sizes ({detail}); "
                             f"layers in one dependency group must have the same number of output channels")
        blocks = [int(target_spaces[m][t].internal_metric_block or 1) for m, t in members]
        block_count = int(reduce(np.lcm, blocks, 1))
        name = "+".join(m for m, _ in members)
        units.extend(_split_blocks(name, members, np.concatenate(clouds, axis=1), block_count=block_count,
                                   global_group_id=None))
    return units


def _split_blocks(name: str, members: List[Tuple[str, str]], points: np.ndarray, *, block_count: int,
                  global_group_id: object) -> List[PruningUnit]:
    n = points.shape[0]
    if n % block_count:
        raise ValueError(f"{name!r}: {n} output channels cannot be split into internal_metric_block={block_count} "
                         f"equal blocks")
    size = n // block_count
    units = []
    for b in range(block_count):
        channels = np.arange(b * size, (b + 1) * size)
        unit_name = name if block_count == 1 else f"{name}[block {b}/{block_count}]"
        units.append(PruningUnit(unit_name, list(members), channels, points[channels],
                                 global_group_id=global_group_id))
    return units
