"""Model measurements: parameters, FLOPs (thop) and inference latency.

``thop.profile`` counts multiply-accumulates; like the thesis (and thop's own README) we
report them as "FLOPs".

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False))
>>> count_parameters(model)
108
>>> count_flops(model, (1, 3, 8, 8))
3888
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Dict, List, Sequence

import torch
from torch import nn

_logger = logging.getLogger(__name__)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_shape``, by ``thop.profile``.

    Profiles a copy on CPU, so the model keeps no thop hooks or buffers.
    """
    from thop import profile

    probe = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        macs, _ = profile(probe, inputs=(torch.zeros(*input_shape),), verbose=False)
    return int(macs)


def layer_widths(model: nn.Module) -> Dict[str, int]:
    """Output channels / features of every Conv2d and Linear layer, by module name."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: Sequence[int], device: torch.device,
                    warmup: int = 5, repeats: int = 30) -> Dict[str, float]:
    """Wall time of one forward pass in eval mode: median, mean and spread over ``repeats`` calls.

    Returns milliseconds per batch and images per second at the median.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    was_training = model.training
    model.eval()
    inputs = torch.randn(*input_shape, device=device)
    for _ in range(warmup):
        model(inputs)
    _synchronize(device)
    samples: List[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(inputs)
        _synchronize(device)
        samples.append((time.perf_counter() - started) * 1000.0)
    model.train(was_training)
    median = statistics.median(samples)
    return {
        "batch_size": int(input_shape[0]),
        "median_ms": median,
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "images_per_s": input_shape[0] * 1000.0 / median,
        "repeats": repeats,
    }
