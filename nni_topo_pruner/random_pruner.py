"""A random-mask control pruner: the same NNI pipeline and config-list semantics as
``L1NormPruner``, but every output channel gets a random score.

Benchmarks need it: a pruner that does not beat random masks beyond noise has shown nothing.

Example
-------
>>> import torch
>>> from nni_topo_pruner.random_pruner import RandomPruner
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> _, masks = RandomPruner(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}], seed=0).compress()
>>> int(masks['0']['weight'].sum(dim=(1, 2, 3)).count_nonzero())
4
"""
from __future__ import annotations

from typing import Dict, List

import torch
from nni.compression.pruning import L1NormPruner
from nni.compression.pruning.tools import norm_metrics

from . import compat
from .checks import check_config_list
from .masks_io import Masks
from .scheduled import ScheduledMasks, dead_channels_last
from .topology.validation import check_int


class RandomPruner(ScheduledMasks, L1NormPruner):
    """Prunes uniformly random output channels; ``seed`` makes the masks reproducible.

    The global torch RNG is not touched: scores come from a private ``torch.Generator``.
    Under NNI's ``AGPPruner`` / ``LinearPruner`` every step draws the same scores and channels
    already masked out rank last, so each step keeps a subset of the previous step's channels.
    """

    def __init__(self, model: torch.nn.Module, config_list: List[Dict], *, seed: int = 0, **kwargs):
        self.seed = check_int(seed, "seed")  # np.int64(1) -> 1
        compat.apply()  # before NNI parses the config list and wraps the model
        check_config_list(model, config_list)  # NNI's own errors for these are bare asserts / KeyErrors / silence
        super().__init__(model, config_list, **kwargs)

    def _calculate_metrics(self, data: Masks) -> Masks:
        # Same metric shapes as L1 (one value per output channel after NNI's scaler), random values.
        shaped = norm_metrics(p=1, data=data, target_spaces=self._target_spaces)
        generator = torch.Generator().manual_seed(self.seed)
        metrics: Masks = {}
        for module_name in sorted(shaped):
            metrics[module_name] = {}
            for target_name in sorted(shaped[module_name]):
                metric = shaped[module_name][target_name]
                metrics[module_name][target_name] = torch.rand(metric.shape, generator=generator).to(metric)
        return dead_channels_last(metrics, self._target_spaces)
