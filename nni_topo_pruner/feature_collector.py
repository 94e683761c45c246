"""Feature collector: a layer's outputs on calibration images, streamed into one buffer per
layer by forward hooks (the data collector's "activations" view, thesis 6.3).

Used by the BMVC Betti pruner (feature maps per filter) and by the Topological Pruner's
``cloud="activations"`` (one point per channel: its mean activation on each image).

Precision: by default the calibration forward pass runs in float64
(``calibration_precision='float64'``): a float32 convolution's last bits depend on the CPU's
instruction set, the library and the thread count, and through a deep network those
differences reach the activation cloud at ~1e-6 of its scale, where they can move a mask
(measured: with ``ONEDNN_MAX_CPU_ISA=AVX2`` one of 13 layers of a smoke-trained VGG-16 moved).
In float64 they are ~1e-15. The model's own tensors are put back afterwards, bit for bit.
``'model'`` runs the model as it is (faster; masks may then differ between machines).

Example
-------
>>> import torch
>>> conv = torch.nn.Conv2d(3, 4, 3)
>>> collector = FeatureCollector({"conv": conv}, num_images=6, max_feature_dim=1, reduction="avgpool", seed=0)
>>> with collector.hooked():
...     feed_calibration_loader(conv, [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)], collector)
>>> collector.result()["conv"].shape      # (images, channels, features)
torch.Size([6, 4, 1])
"""
from __future__ import annotations

import contextlib
import logging
import math
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_logger = logging.getLogger(__name__)

#: how a feature map larger than max_feature_dim is reduced (FeatureCollector(reduction=...))
SUPPORTED_REDUCTIONS = ("random_projection", "avgpool", "none")

#: precision of the calibration forward pass (``calibration_precision=``): float64, or the model's own
CALIBRATION_PRECISIONS = ("float64", "model")


def feed_calibration_loader(model: nn.Module, loader: Iterable, collector: "FeatureCollector",
                            precision: str = "float64") -> None:
    """Run ``loader``'s batches through ``model`` in eval mode without gradients until the
    collector is full; the model's mode (and, under ``precision='float64'``, its tensors) are
    restored."""
    device = model_device(model)
    dtype = torch.float64 if precision == "float64" else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), computing_in(model, dtype):
            for batch in loader:
                inputs = batch_inputs(batch)
                inputs = inputs.to(device, dtype) if dtype is not None and inputs.is_floating_point() else inputs.to(device)
                try:
                    model(inputs)
                except RuntimeError as error:
                    if dtype is None:
                        raise
                    raise RuntimeError(f"the calibration forward pass in float64 failed ({error}); if the model "
                                       f"cannot run in float64, pass calibration_precision='model'") from error
                if collector.full:
                    break
    finally:
        model.train(was_training)
    if collector.images_seen == 0:
        raise ValueError("calibration_loader yielded no images")


@contextlib.contextmanager
def computing_in(model: nn.Module, dtype: Optional[torch.dtype]) -> Iterator[nn.Module]:
    """Hold every floating parameter and buffer of ``model`` in ``dtype`` inside the block
    (``None``: leave them). Afterwards the original tensors are put back: the same Parameter
    objects holding the same storage, so nothing is rounded and optimisers still hold them.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> parameter, storage = layer.weight, layer.weight.data_ptr()
        >>> with computing_in(layer, torch.float64):
        ...     layer.weight.dtype
        torch.float64
        >>> layer.weight is parameter, layer.weight.dtype, layer.weight.data_ptr() == storage
        (True, torch.float32, True)
    """
    if dtype is None:
        yield model
        return
    parameters: Dict[int, tuple] = {}
    buffers: List[tuple] = []
    try:
        for module in model.modules():
            for parameter in module._parameters.values():
                if parameter is not None and parameter.is_floating_point() and id(parameter) not in parameters:
                    parameters[id(parameter)] = (parameter, parameter.data)
                    parameter.data = parameter.data.to(dtype)
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.is_floating_point():
                    buffers.append((module, name, buffer))
                    module._buffers[name] = buffer.to(dtype)
        yield model
    finally:
        for parameter, original in parameters.values():
            parameter.data = original
        for module, name, original in buffers:
            module._buffers[name] = original


class FeatureCollector:
    """Forward hooks that stream each layer's outputs into a preallocated (N, C, D) buffer."""

    def __init__(self, modules: Dict[str, nn.Module], num_images: int, max_feature_dim: Optional[int],
                 reduction: str, seed: int):
        self.modules = modules
        self.num_images = num_images
        self.max_feature_dim = max_feature_dim
        self.reduction = reduction
        self.seed = seed
        self.buffers: Dict[str, torch.Tensor] = {}
        self.filled: Dict[str, int] = {name: 0 for name in modules}
        self.projections: Dict[str, torch.Tensor] = {}
        self._handles: List[Any] = []

    @property
    def full(self) -> bool:
        return all(count >= self.num_images for count in self.filled.values())

    @property
    def images_seen(self) -> int:
        return min(self.filled.values()) if self.filled else 0

    def hooked(self):
        collector = self

        class _Context:
            def __enter__(self_inner):
                for name, module in collector.modules.items():
                    collector._handles.append(module.register_forward_hook(collector._hook(name)))
                return collector

            def __exit__(self_inner, *exc):
                for handle in collector._handles:
                    handle.remove()
                collector._handles.clear()
                return False

        return _Context()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{name}: collecting features needs the layer to output one tensor, got "
                                f"{type(output).__name__}")
            room = self.num_images - self.filled[name]
            if room <= 0:
                return
            maps = self._reduce(name, output.detach()[:room])
            if name not in self.buffers:
                self.buffers[name] = torch.empty((self.num_images, *maps.shape[1:]), dtype=torch.float32)
                _logger.debug("%s: buffer %s (%.1f MiB)", name, tuple(self.buffers[name].shape),
                              self.buffers[name].numel() * 4 / 2**20)
            start = self.filled[name]
            # Stored in float32 (memory): rounding float64 values that agree to ~1e-15 gives the
            # same float32 on every machine, so the pass's precision is kept where it matters.
            self.buffers[name][start:start + maps.shape[0]] = maps.to("cpu", torch.float32)
            self.filled[name] = start + maps.shape[0]

        return hook

    def _reduce(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, C, D) with D <= max_feature_dim unless reduction is 'none'."""
        b, c = out.shape[:2]
        spatial = out.shape[2:]
        size = int(np.prod(spatial)) if len(spatial) else 1
        limit = self.max_feature_dim
        if self.reduction == "none" or limit is None or size <= limit:
            return out.reshape(b, c, size)
        if self.reduction == "avgpool":
            pooled = adaptive_pool(out, limit)
            return pooled.reshape(b, c, -1)
        if name not in self.projections:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            proj = torch.randn(size, limit, generator=gen, dtype=torch.float32) / math.sqrt(limit)
            # drawn in float32 (the same numbers at either precision), held at the pass's precision
            self.projections[name] = proj.to(out.device, torch.float64 if out.dtype == torch.float64 else torch.float32)
        projection = self.projections[name]
        return (out.reshape(b * c, size).to(projection.dtype) @ projection).reshape(b, c, limit)

    def result(self) -> Dict[str, torch.Tensor]:
        short = {name: count for name, count in self.filled.items() if count < self.num_images}
        if any(count < 3 for count in self.filled.values()):
            raise ValueError(f"too few calibration images reached the pruned layers ({self.filled}); "
                             f"at least 3 per layer are needed")
        if short:
            _logger.warning("calibration data ran out after %d images (num_images=%d)",
                            min(short.values()), self.num_images)
        return {name: buf[: self.filled[name]] for name, buf in self.buffers.items()}


def adaptive_pool(out: torch.Tensor, limit: int) -> torch.Tensor:
    spatial = list(out.shape[2:])
    factor = 1.0
    while True:
        target = [max(1, math.ceil(d / factor)) for d in spatial]
        if int(np.prod(target)) <= limit:
            break
        factor *= 1.05
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(spatial)]
    return pool(out, target)


def batch_inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError("calibration batches must be tensors or (inputs, targets, ...) tuples/lists with a tensor "
                    f"first, got {type(batch).__name__}")


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
