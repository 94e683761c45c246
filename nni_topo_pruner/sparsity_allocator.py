"""Sparsity allocator module (thesis 6.6): how many channels each unit keeps, and the NNI
target masks of the channels the evolutionary module chose.

How many channels each unit keeps follows NNI's own rules, so that a config list means
here what it means for ``L1NormPruner``:

1. :func:`neuron_budgets` — per layer and per dependency group, NNI's public
   ``generate_sparsity`` decides on the :func:`salience_metrics` (``sparse_ratio``,
   ``min/max_sparse_ratio``, dependency groups, ``internal_metric_block``: exactly
   ``int(n * sparse_ratio)`` channels pruned, as L1 does). A *global group* ranks neurons
   across its layers by (layer-normalised) topological salience: see :func:`global_budgets`
   for how we differ from NNI there.
2. The evolutionary module picks *which* channels each unit keeps.
3. :func:`unit_masks` writes the chosen channels straight into weight masks and gives every
   aligned target (the bias) its source's channels, by NNI's ``align`` rule.

Channels that the model's current masks already remove (an earlier step of NNI's
``AGPPruner`` / ``LinearPruner``) stay removed: :func:`without_masked_channels` takes them out
of the units' clouds (``PruningUnit.dead``); they rank below every live channel in the
budgets and their masks stay zero, so each step keeps a subset of the previous step's channels.

Example
-------
>>> import numpy as np
>>> channel_keep_mask(__import__('torch').tensor([[1., 1.], [0., 0.], [1., 0.]]))
array([ True, False,  True])
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from nni.compression.base.target_space import TargetType
from nni.compression.pruning.tools import generate_sparsity

from .data_collector import PruningUnit
from .masks_io import Masks
from .topology.ties import RTOL, tie_groups


def channel_keep_mask(mask: torch.Tensor) -> np.ndarray:
    """Which output channels (dim 0) a weight mask keeps: any non-zero entry in the row."""
    return mask.detach().reshape(mask.shape[0], -1).ne(0).any(dim=1).cpu().numpy()


def without_masked_channels(units: Sequence[PruningUnit], target_spaces) -> List[PruningUnit]:
    """Each unit without the channels that its members' current weight masks remove (moved to
    ``dead``): what the masked network computes, so that a pruned channel is never chosen again.
    Units of an unmasked model come back unchanged."""
    restricted = []
    for unit in units:
        live = np.ones(unit.n, dtype=bool)
        for module_name, target_name in unit.members:
            mask = target_spaces[module_name][target_name].mask
            if mask is not None:
                live &= channel_keep_mask(mask)[unit.channels]
        if live.all():
            restricted.append(unit)
            continue
        if not live.any():
            raise ValueError(f"{unit.name!r}: every output channel is already masked out, so none can be chosen; "
                             f"exclude the layer from the config list")
        restricted.append(replace(unit, channels=unit.channels[live], points=unit.points[live],
                                  dead=np.concatenate([unit.dead, unit.channels[~live]]).astype(np.int64)))
    return restricted


def normalised_scores(values: np.ndarray) -> np.ndarray:
    """Map scores to [0, 1) preserving order, so that layers of different scale are comparable
    in a global group: divide by the layer's largest score (all-zero stays zero)."""
    values = np.asarray(values, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if top <= 0.0:
        return np.zeros_like(values)
    return 0.999 * values / top


def salience_metrics(units: Sequence[PruningUnit], saliences: Sequence[np.ndarray], target_spaces) -> Masks:
    """NNI metrics of the units' salience: per weight target one value per output channel
    (shape ``(n, 1, ...)``, the weight's dtype), each unit's salience scaled into [0, 1) by
    :func:`normalised_scores` so that NNI's rules can rank channels of different units; a
    unit's ``dead`` channels get -1, below every live one, so NNI's rules prune them first."""
    metrics: Masks = {}
    for unit, values in zip(units, saliences):
        for module_name, target_name in unit.members:
            space = target_spaces[module_name][target_name]
            target = metrics.setdefault(module_name, {}).get(target_name)
            if target is None:
                # the weight's dtype: NNI builds masks with ones_like(metric)
                target = torch.zeros([space.shape[0]] + [1] * (len(space.shape) - 1), dtype=space.target.dtype)
                metrics[module_name][target_name] = target
            target.view(-1)[torch.as_tensor(unit.channels)] = torch.as_tensor(normalised_scores(values),
                                                                              dtype=target.dtype)
            target.view(-1)[torch.as_tensor(unit.dead)] = -1.0
    return metrics


def neuron_budgets(units: Sequence[PruningUnit], saliences: Sequence[np.ndarray], metrics: Masks,
                   target_spaces, ranks: Optional[Sequence[np.ndarray]] = None) -> List[int]:
    """How many channels each unit keeps, from the units' :func:`salience_metrics`.
    ``ranks`` (per unit, the engine's canonical rank of each channel) breaks salience ties
    in a global group; stored order when omitted."""
    masks = generate_sparsity(metrics, target_spaces)
    budgets = []
    for unit in units:
        module_name, target_name = unit.members[0]
        keep = channel_keep_mask(masks[module_name][target_name])[unit.channels]
        budgets.append(int(keep.sum()))
    grouped: Dict[object, List[int]] = {}
    for index, unit in enumerate(units):
        if unit.global_group_id is not None:
            grouped.setdefault(unit.global_group_id, []).append(index)
    for group_id, indices in grouped.items():
        group_ranks = None if ranks is None else [ranks[i] for i in indices]
        group_budgets = global_budgets([units[i] for i in indices], [saliences[i] for i in indices],
                                       target_spaces, group_id, ranks=group_ranks)
        for i, budget in zip(indices, group_budgets):
            budgets[i] = budget
    return budgets


def global_budgets(units: Sequence[PruningUnit], saliences: Sequence[np.ndarray], target_spaces, group_id,
                   ranks: Optional[Sequence[np.ndarray]] = None) -> List[int]:
    """Channels kept per unit of one global group.

    As in NNI, the group's ``sparse_ratio`` is a fraction of the group's *weights*: prune
    ``int(total_weights * sparse_ratio)`` of them, cheapest channels first. Channels are
    ranked by salience divided by their layer's largest salience, so layers of different
    scale compete fairly. Unlike NNI 3.0 (whose global threshold path ignores
    ``max_sparse_ratio`` and can empty a layer), every layer keeps at least
    ``n - int(n * max_sparse_ratio)`` channels (at least one when no maximum is set) and
    prunes at least ``int(n * min_sparse_ratio)``. A unit's ``dead`` channels count as pruned
    (``n`` and the budget include them); the returned counts are of live channels kept. Greedy: a channel is pruned only while the
    pruned weights stay within the budget, so the total is at most one channel's weights
    short of it. Scores within ``RTOL`` of each other (a chain of small gaps,
    :func:`~nni_topo_pruner.topology.ties.tie_groups`) are equal, so that rounding cannot
    reorder them; equal scores are broken by ``ranks`` (the engine's canonical rank),
    never by where a channel is stored, then by the unit's position.
    """
    if ranks is None:
        ranks = [np.arange(unit.n) for unit in units]
    ratios, lows, highs, grains = set(), [], [], []
    for unit in units:
        module_name, target_name = unit.members[0]
        space = target_spaces[module_name][target_name]
        ratios.add(space.sparse_ratio)
        n, dead = unit.n + len(unit.dead), len(unit.dead)
        # counted over the unit's live channels: the dead ones are pruned already
        lows.append(max(0, (int(n * space.min_sparse_ratio) if space.min_sparse_ratio else 0) - dead))
        highs.append(max(0, (min(n - 1, int(n * space.max_sparse_ratio)) if space.max_sparse_ratio else n - 1) - dead))
        grains.append(int(np.prod(space.shape[1:])))  # weights per output channel
    if len(ratios) != 1:
        raise ValueError(f"global group {group_id!r} mixes sparse_ratio values {sorted(ratios)}; "
                         f"all layers of one global group must share one sparse_ratio")
    ratio = ratios.pop()
    total = sum((unit.n + len(unit.dead)) * grain for unit, grain in zip(units, grains))
    budget_weights = int(total * ratio)
    pruned = list(lows)
    spent = sum((low + len(unit.dead)) * grain for unit, low, grain in zip(units, lows, grains))
    # cheapest first; among equal scores (within RTOL) the channel ranked last canonically goes first
    scores = [normalised_scores(s) for s in saliences]
    labels = np.split(tie_groups(np.concatenate(scores) if scores else np.zeros(0), RTOL),
                      np.cumsum([len(s) for s in scores])[:-1])
    order = sorted((int(labels[u][c]), -int(ranks[u][c]), u, c) for u in range(len(scores))
                   for c in range(len(scores[u])))
    taken = [np.zeros(unit.n, dtype=bool) for unit in units]
    for u, unit in enumerate(units):  # the mandatory minimum, lowest scores first
        taken[u][np.lexsort((-np.asarray(ranks[u]), tie_groups(scores[u], RTOL)))[:lows[u]]] = True
    for _, _, u, c in order:
        if taken[u][c] or pruned[u] >= highs[u] or spent + grains[u] > budget_weights:
            continue
        taken[u][c] = True
        pruned[u] += 1
        spent += grains[u]
    return [unit.n - p for unit, p in zip(units, pruned)]


def unit_masks(units: Sequence[PruningUnit], keep_masks: Sequence[np.ndarray], target_spaces) -> Masks:
    """NNI target masks of the chosen channels.

    Each member's weight mask is ones of the weight's shape and dtype with the unit's pruned
    and ``dead`` channels (output rows) zeroed; a target with NNI's ``align`` (the bias, aligned to the
    weight on dim 0) takes its source mask reduced onto the aligned dims, as NNI does.
    """
    masks: Masks = {}
    for unit, keep in zip(units, keep_masks):
        pruned = torch.as_tensor(np.concatenate([unit.channels[~np.asarray(keep, dtype=bool)], unit.dead]),
                                 dtype=torch.long)
        for module_name, target_name in unit.members:
            space = target_spaces[module_name][target_name]
            mask = masks.setdefault(module_name, {}).get(target_name)
            if mask is None:
                mask = masks[module_name][target_name] = torch.ones(space.shape, dtype=space.target.dtype)
            mask[pruned] = 0
    for module_name, targets in target_spaces.items():
        for target_name, space in targets.items():
            if space.align is None or (space.type is TargetType.PARAMETER and space.target is None):
                continue
            source = masks.get(space.align["module_name"] or module_name, {}).get(space.align["target_name"])
            if source is None:
                continue
            aligned = _aligned_mask(source, space.align["dims"])
            if space.granularity not in (None, "default", "out_channel") or list(aligned.shape) != list(space.shape):
                raise ValueError(f"{module_name}.{target_name}: an aligned target with its own granularity or "
                                 f"shape {space.shape} is not supported (aligned mask shape {list(aligned.shape)})")
            previous = masks.setdefault(module_name, {}).get(target_name)
            masks[module_name][target_name] = aligned if previous is None else (previous * aligned).bool().float()
    return masks


def _aligned_mask(source: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """NNI's align rule: 1 where any entry of ``source`` outside ``dims`` is non-zero (float32)."""
    reduce_dims = [d for d in range(source.dim()) if d not in dims and d - source.dim() not in dims]
    return source.sum(reduce_dims).bool().float()
