"""Speedup module (thesis 6.7): masks -> a physically smaller model, through NNI's ``ModelSpeedup``.

Any NNI pruner's masks work here, ours included. The compat layer (applied on
``import nni_topo_pruner``) is what lets NNI 3.0's tracer run on current PyTorch.

Example
-------
>>> import torch
>>> from nni.compression.pruning import L1NormPruner
>>> from nni_topo_pruner.speedup import speedup_model
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> pruner = L1NormPruner(model, [{'op_names': ['0'], 'sparse_ratio': 0.5}])
>>> _, masks = pruner.compress(); pruner.unwrap_model()
>>> speedup_model(model, torch.rand(1, 3, 16, 16), masks)[0].out_channels
4
"""
from __future__ import annotations

import logging
from typing import Any, Dict

import torch

from . import compat

_logger = logging.getLogger(__name__)


def speedup_model(model: torch.nn.Module, dummy_input: Any, masks: Dict[str, Dict[str, torch.Tensor]],
                  **speedup_options: Any) -> torch.nn.Module:
    """Replace masked channels by physically smaller layers, in place; returns ``model``.

    ``model`` must be unwrapped (``pruner.unwrap_model()``) first. Extra keyword arguments go
    to ``nni.compression.speedup.ModelSpeedup``.
    """
    from nni.compression.speedup import ModelSpeedup

    compat.apply()  # idempotent; in case NNI was imported and patched-out elsewhere
    if any(type(m).__name__.endswith("ModuleWrapper") for m in model.modules()):
        raise ValueError("model is still wrapped by an NNI pruner: call pruner.unwrap_model() before speedup_model()")
    was_training = model.training
    model.eval()
    ModelSpeedup(model, dummy_input, masks, **speedup_options).speedup_model()
    model.train(was_training)
    return model
