"""Masks at an evaluator's optimizer steps: what NNI 3.0's scheduled pruners (``AGPPruner``,
``LinearPruner``) and its fused compression ask of a bound pruner, for our three pruners.

NNI's contract, read from ``_NormPruner`` and ``_ComboPruner`` (``scheduled_pruner.py``):

* the bound pruner has ``interval_steps`` and ``total_times`` (``_ComboPruner`` asserts it and
  overwrites them with its own schedule) and ``first_step_gen``;
* ``_fuse_preprocess(evaluator)`` registers a task after every optimizer step that, every
  ``interval_steps`` steps and ``total_times`` times, calls ``generate_masks()`` and
  ``update_masks()``; ``_fuse_postprocess`` does nothing. The scheduler's own task runs first
  and rewrites the target spaces' ``sparse_ratio`` (and ``min/max_sparse_ratio``) in place, so
  each call of ``generate_masks`` sees that step's ratios and the current trained weights.

:class:`ScheduledMasks` takes those three methods from ``_NormPruner`` itself, so masks are
generated at exactly the steps where L1NormPruner's would be, and keeps one
:class:`StepRecord` per ``generate_masks`` call (``pruner.steps``: ratios, channels kept,
seconds).

Each step keeps a subset of the previous step's channels, by construction: a channel that
the model's masks already remove is excluded from the criterion and pruned again
(:func:`dead_channels_last` for metric-ranking pruners,
:func:`~nni_topo_pruner.sparsity_allocator.without_masked_channels` for the topological one).
NNI's norm pruners do not promise this (they rank the raw weights, in which a masked channel
keeps the values it had when it was masked). Reviving a channel would bring back weights that
received no gradient since they were masked, and for the two feature-based criteria a masked
channel is no evidence at all: its output is zero, the lowest possible Betti score (kept first
by BettiPruner) and the zero anchor itself in the topological cloud.

Under a schedule the masked model trains for many steps, and NNI masks only the selected
layers' weight and bias: a pruned channel's BatchNorm still adds its shift, a constant the next
layer learns to use and that ``ModelSpeedup`` then removes (on the whole CIFAR-10, VGG-16 at 0.5,
the sped-up model scored 0.1-20 points below the masked one: docs/benchmarks.md).
:func:`with_batchnorm_masks` adds NNI ``align`` entries that mask those BatchNorms with their
layer, so that the masked model computes what the sped-up one will.

Example
-------
>>> import torch
>>> from nni_topo_pruner.random_pruner import RandomPruner
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> pruner = RandomPruner(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}], seed=0)
>>> (pruner.interval_steps, pruner.total_times)       # what AGPPruner / LinearPruner look for
(-1, 1)
>>> _, masks = pruner.compress()
>>> pruner.steps[0].kept
{'0': 4, '2': 2}
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Union

import torch
from nni.compression.pruning.basic_pruner import _NormPruner

from .masks_io import Masks
from .sparsity_allocator import channel_keep_mask

_logger = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """One ``generate_masks`` call: a scheduled step, or the single step of ``compress()``."""

    index: int                                   # 0, 1, ... in call order
    seconds: float                               # wall time of the whole call (criterion + masks)
    sparse_ratios: Dict[str, float] = field(default_factory=dict)   # module -> the step's weight sparse_ratio
    kept: Dict[str, int] = field(default_factory=dict)              # module -> output channels kept
    channels: Dict[str, int] = field(default_factory=dict)          # module -> output channels in all


def dead_channels_last(metrics: Masks, target_spaces) -> Masks:
    """``metrics`` with every output channel that its target's current mask removes set below
    the smallest metric of its target, so that NNI's ``generate_sparsity`` (ratio, dependency
    and global rules) prunes it first: masks stay nested along a schedule. Metrics are changed
    in place and returned; targets without a mask are left as they are.

    >>> from types import SimpleNamespace
    >>> spaces = {'fc': {'weight': SimpleNamespace(mask=torch.tensor([[1., 1.], [0., 0.], [1., 1.]]))}}
    >>> dead_channels_last({'fc': {'weight': torch.tensor([[3.], [9.], [5.]])}}, spaces)['fc']['weight'].flatten().tolist()
    [3.0, 2.0, 5.0]
    """
    for module_name, targets in metrics.items():
        for target_name, metric in targets.items():
            mask = target_spaces[module_name][target_name].mask
            if mask is None or metric.shape[0] != mask.shape[0]:
                continue  # no mask yet, or a metric that is not one row per output channel
            dead = torch.from_numpy(~channel_keep_mask(mask)).to(metric.device)
            if bool(dead.any()):
                metric[dead] = metric.min() - 1.0
    return metrics


class ScheduledMasks:
    """Mixin (before the NNI ``Pruner`` base) that makes a pruner a valid bound pruner of NNI's
    ``AGPPruner`` / ``LinearPruner`` and of fused compression, by ``_NormPruner``'s own
    trigger; and records every ``generate_masks`` call in ``steps``.

    On its own the pruner stays one-shot: ``_single_compress`` is the host class's.
    """

    # _ComboPruner checks these with hasattr and overwrites them; _NormPruner's defaults
    # (never triggered unless a scheduler or the user sets interval_steps)
    interval_steps: int = -1
    total_times: Union[int, Literal["unlimited"]] = 1
    first_step_gen: bool = False

    _register_trigger = _NormPruner._register_trigger
    _fuse_preprocess = _NormPruner._fuse_preprocess
    _fuse_postprocess = _NormPruner._fuse_postprocess

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: one record per generate_masks() call (a one-shot compress() makes one)
        self.steps: List[StepRecord] = []
        super().__init__(*args, **kwargs)

    def generate_masks(self) -> Masks:
        started = time.perf_counter()
        masks = super().generate_masks()  # type: ignore[misc]
        record = StepRecord(index=len(self.steps), seconds=time.perf_counter() - started)
        for module_name in sorted(self._target_spaces):  # type: ignore[attr-defined]
            space = self._target_spaces[module_name].get("weight")  # type: ignore[attr-defined]
            mask = masks.get(module_name, {}).get("weight")
            if space is None or mask is None or space.align is not None:
                continue  # an aligned target (with_batchnorm_masks' BatchNorms) follows its layer's mask
            if space.sparse_ratio is not None:
                record.sparse_ratios[module_name] = float(space.sparse_ratio)
            record.kept[module_name] = int(channel_keep_mask(mask).sum())
            record.channels[module_name] = int(mask.shape[0])
        self.steps.append(record)
        _logger.info("%s: masks of step %d in %.2f s (kept %s)", type(self).__name__, record.index, record.seconds,
                     ", ".join(f"{m} {k}/{record.channels[m]}" for m, k in record.kept.items()))
        return masks


def with_batchnorm_masks(model: torch.nn.Module, config_list: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``config_list`` plus, for every BatchNorm whose input is the output of a layer the config
    list prunes, an entry that masks its ``weight`` and ``bias`` with that layer's output channels
    (NNI's ``align`` on dim 0). A pruned channel then leaves the masked model at once, BatchNorm
    shift included, as ``ModelSpeedup`` will remove it: what gradual pruning trains is what it
    ships. BatchNorms that an entry already selects are left as they are. The graph is read with
    ``torch.fx``; a model it cannot trace gets a ``ValueError`` that shows the entry to add by hand.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    >>> with_batchnorm_masks(net, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}])[1]['op_names']
    ['1']
    """
    import torch.fx
    from nni.compression.base.config import select_modules_by_config

    from .compat import apply

    apply()
    pruned, selected = set(), set()
    for entry in config_list:
        modules, _, _ = select_modules_by_config(model, entry)
        selected.update(modules)
        pruned.update(name for name, module in modules.items()
                      if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)))
    example = ("{'op_names': [BN], 'target_names': ['weight', 'bias'], 'target_settings': {t: {'align': "
               "{'module_name': LAYER, 'target_name': 'weight', 'dims': [0]}} for t in ('weight', 'bias')}}")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # noqa: BLE001 - any tracing failure gets the same advice
        raise ValueError(f"with_batchnorm_masks: torch.fx cannot trace {type(model).__name__} "
                         f"({type(error).__name__}: {error}); add one entry per BatchNorm that follows a pruned "
                         f"layer by hand: {example}") from error
    modules = dict(model.named_modules())
    extra = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], torch.nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if getattr(source, "op", None) != "call_module" or source.target not in pruned or node.target in selected:
            continue
        align = {"module_name": source.target, "target_name": "weight", "dims": [0]}
        extra.append({"op_names": [node.target], "target_names": ["weight", "bias"],
                      "target_settings": {"weight": {"align": dict(align)}, "bias": {"align": dict(align)}}})
    return [*config_list, *extra]
