"""Sparsity allocator module (thesis 6.6): neuron masks -> NNI target masks.

How many channels each unit keeps follows NNI's own rules, so that a config list means
here what it means for ``L1NormPruner``:

1. :func:`neuron_budgets` — per layer and per dependency group, NNI's own
   ``generate_sparsity`` decides (``sparse_ratio``, ``min/max_sparse_ratio``, dependency
   groups, ``internal_metric_block``: exactly ``int(n * sparse_ratio)`` channels pruned, as
   L1 does). A *global group* ranks neurons across its layers by (layer-normalised)
   topological salience: see :func:`global_budgets` for how we differ from NNI there.
2. The evolutionary module picks *which* channels each unit keeps.
3. :func:`encode_neuron_masks` / :func:`to_nni_masks` turn the chosen channels into weight
   masks and let NNI align the bias masks to them (NNI's ``align`` rule).

Example
-------
>>> import numpy as np
>>> channel_keep_mask(__import__('torch').tensor([[1., 1.], [0., 0.], [1., 0.]]))
array([ True, False,  True])
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from nni.compression.pruning.tools import generate_sparsity
# NNI's own expansion and bias-alignment steps (the tail of generate_sparsity), reused as they are.
from nni.compression.pruning.tools.sparse_gen import (_expand_masks, _generate_align_sparsity,
                                                      _nested_multiply_update_masks, target_spaces_filter)

from .data_collector import PruningUnit

_METRICS = Dict[str, Dict[str, torch.Tensor]]

# Kept channels get KEPT_OFFSET + score, pruned ones score only; scores lie in [0, 1).
KEPT_OFFSET = 2.0


def channel_keep_mask(mask: torch.Tensor) -> np.ndarray:
    """Which output channels (dim 0) a weight mask keeps: any non-zero entry in the row."""
    return mask.detach().reshape(mask.shape[0], -1).ne(0).any(dim=1).cpu().numpy()


def normalised_scores(values: np.ndarray) -> np.ndarray:
    """Map scores to [0, 1) preserving order, so that layers of different scale are comparable
    in a global group: divide by the layer's largest score (all-zero stays zero)."""
    values = np.asarray(values, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if top <= 0.0:
        return np.zeros_like(values)
    return 0.999 * values / top


def _metric_tensors(units: Sequence[PruningUnit], per_unit_values: Sequence[np.ndarray],
                    data: Mapping[str, Mapping[str, torch.Tensor]]) -> _METRICS:
    metrics: _METRICS = {}
    for unit, values in zip(units, per_unit_values):
        for module_name, target_name in unit.members:
            weight = data[module_name][target_name]
            n = weight.shape[0]
            target = metrics.setdefault(module_name, {}).get(target_name)
            if target is None:
                # the weight's dtype: NNI builds masks with ones_like(metric)
                target = torch.zeros([n] + [1] * (weight.dim() - 1), dtype=weight.dtype)
                metrics[module_name][target_name] = target
            target.view(-1)[torch.as_tensor(unit.channels)] = torch.as_tensor(values, dtype=target.dtype)
    return metrics


def neuron_budgets(units: Sequence[PruningUnit], saliences: Sequence[np.ndarray],
                   data: Mapping[str, Mapping[str, torch.Tensor]], target_spaces,
                   ranks: Optional[Sequence[np.ndarray]] = None) -> List[int]:
    """How many channels each unit keeps. ``ranks`` (per unit, the engine's canonical rank
    of each channel) breaks salience ties in a global group; stored order when omitted."""
    metrics = _metric_tensors(units, [normalised_scores(s) for s in saliences], data)
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
        group_budgets = global_budgets([units[i] for i in indices], [saliences[i] for i in indices], data,
                                       target_spaces, group_id, ranks=group_ranks)
        for i, budget in zip(indices, group_budgets):
            budgets[i] = budget
    return budgets


def global_budgets(units: Sequence[PruningUnit], saliences: Sequence[np.ndarray],
                   data: Mapping[str, Mapping[str, torch.Tensor]], target_spaces, group_id,
                   ranks: Optional[Sequence[np.ndarray]] = None) -> List[int]:
    """Channels kept per unit of one global group.

    As in NNI, the group's ``sparse_ratio`` is a fraction of the group's *weights*: prune
    ``int(total_weights * sparse_ratio)`` of them, cheapest channels first. Channels are
    ranked by salience divided by their layer's largest salience, so layers of different
    scale compete fairly. Unlike NNI 3.0 (whose global threshold path ignores
    ``max_sparse_ratio`` and can empty a layer), every layer keeps at least
    ``n - int(n * max_sparse_ratio)`` channels (at least one when no maximum is set) and
    prunes at least ``int(n * min_sparse_ratio)``. Greedy: a channel is pruned only while the
    pruned weights stay within the budget, so the total is at most one channel's weights
    short of it. Equal scores are broken by ``ranks`` (the engine's canonical rank: larger
    norm first), never by where a channel is stored, then by the unit's position.
    """
    if ranks is None:
        ranks = [np.arange(unit.n) for unit in units]
    ratios, lows, highs, grains = set(), [], [], []
    for unit in units:
        module_name, target_name = unit.members[0]
        space = target_spaces[module_name][target_name]
        ratios.add(space.sparse_ratio)
        n = unit.n
        lows.append(int(n * space.min_sparse_ratio) if space.min_sparse_ratio else 0)
        highs.append(min(n - 1, int(n * space.max_sparse_ratio)) if space.max_sparse_ratio else n - 1)
        weight = data[module_name][target_name]
        grains.append(weight.numel() // weight.shape[0])
    if len(ratios) != 1:
        raise ValueError(f"global group {group_id!r} mixes sparse_ratio values {sorted(ratios)}; "
                         f"all layers of one global group must share one sparse_ratio")
    ratio = ratios.pop()
    total = sum(unit.n * grain for unit, grain in zip(units, grains))
    budget_weights = int(total * ratio)
    pruned = list(lows)
    spent = sum(low * grain for low, grain in zip(lows, grains))
    # cheapest first; among equal scores the channel ranked last canonically goes first
    order = sorted(((float(score), -int(ranks[u][c]), u, c) for u, s in enumerate(saliences)
                    for c, score in enumerate(normalised_scores(s))))
    taken = [np.zeros(unit.n, dtype=bool) for unit in units]
    for u, unit in enumerate(units):  # the mandatory minimum, lowest scores first
        taken[u][np.lexsort((-np.asarray(ranks[u]), normalised_scores(saliences[u])))[:lows[u]]] = True
    for _, _, u, c in order:
        if taken[u][c] or pruned[u] >= highs[u] or spent + grains[u] > budget_weights:
            continue
        taken[u][c] = True
        pruned[u] += 1
        spent += grains[u]
    return [unit.n - p for unit, p in zip(units, pruned)]


def encode_neuron_masks(units: Sequence[PruningUnit], keep_masks: Sequence[np.ndarray],
                        saliences: Sequence[np.ndarray], data: Mapping[str, Mapping[str, torch.Tensor]]) -> _METRICS:
    """Metrics that carry the chosen channels: kept ones score ``KEPT_OFFSET`` + salience,
    pruned ones their salience only (in [0, 1))."""
    values = []
    for keep, salience in zip(keep_masks, saliences):
        values.append(np.where(keep, KEPT_OFFSET, 0.0) + normalised_scores(salience))
    return _metric_tensors(units, values, data)


def to_nni_masks(metrics: _METRICS, target_spaces) -> Dict[str, Dict[str, torch.Tensor]]:
    """Weight masks from the encoded metrics; bias (and other aligned targets) masks by NNI's align rule."""
    channel_masks: Dict[str, Dict[str, torch.Tensor]] = defaultdict(dict)
    for module_name, targets in metrics.items():
        for target_name, metric in targets.items():
            channel_masks[module_name][target_name] = (metric >= KEPT_OFFSET).to(metric.dtype)
    weight_spaces, _ = target_spaces_filter(target_spaces, lambda space: space.sparse_ratio is not None)
    masks = _expand_masks(channel_masks, weight_spaces)
    align_spaces, _ = target_spaces_filter(target_spaces, lambda space: space.align is not None)
    aligned = _expand_masks(_generate_align_sparsity(masks, align_spaces), align_spaces)
    _nested_multiply_update_masks(masks, aligned)
    return masks


def check_masks_match(units: Sequence[PruningUnit], keep_masks: Sequence[np.ndarray],
                      masks: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise RuntimeError if NNI's masks disagree with the evolutionary module's choice."""
    for unit, keep in zip(units, keep_masks):
        for module_name, target_name in unit.members:
            got = channel_keep_mask(masks[module_name][target_name])[unit.channels]
            if not np.array_equal(got, keep):
                raise RuntimeError(
                    f"internal error: NNI's sparsity generator kept {int(got.sum())} channels of {unit.name!r} "
                    f"({module_name}.{target_name}) where the evolutionary module chose {int(keep.sum())}; "
                    f"please report this with your config list")
