"""Module replacers that NNI 3.0's ``ModelSpeedup`` lacks: ``Conv3d`` and ``BatchNorm3d``.

NNI 3.0 replaces Conv1d / Conv2d (and their BatchNorms) by smaller layers, but for a
``Conv3d`` it only logs "Has not supported replacing module with type: Conv3d" and keeps
every channel. :func:`extra_replacers` returns an NNI ``Replacer`` that shrinks Conv3d and
BatchNorm3d the way NNI shrinks Conv2d and BatchNorm2d (same channel bookkeeping, grouped and
depthwise convolutions included) and leaves channel-agnostic 3-D layers (pooling) as they
are; :func:`nni_topo_pruner.speedup.speedup_model` passes it to ``ModelSpeedup``.

Example
-------
>>> import torch
>>> from nni.compression.speedup import ModelSpeedup
>>> from nni_topo_pruner import compat
>>> _ = compat.apply()  # NNI's ModelSpeedup used directly: mend it first
>>> model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3)).eval()
>>> masks = {'0': {'weight': torch.tensor([1., 0., 1., 0.]).view(4, 1, 1, 1, 1).expand(4, 2, 3, 3, 3).clone()}}
>>> speedup = ModelSpeedup(model, torch.rand(2, 2, 6, 6, 6), masks, customized_replacers=[extra_replacers()])
>>> import contextlib, io
>>> with contextlib.redirect_stdout(io.StringIO()):  # NNI prints '0 Filter'
...     _ = speedup.speedup_model()
>>> model[0].out_channels, model[2].in_channels
(2, 2)
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Tuple

import torch
from torch import nn

_logger = logging.getLogger(__name__)

Masks = Tuple[Any, Any, Dict[str, torch.Tensor]]


def _kept_channels(mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Indices along ``dim`` where ``mask`` keeps at least one value (NNI's coarse mask)."""
    other = [d for d in range(mask.dim()) if d != dim]
    return torch.nonzero(mask.sum(other) != 0, as_tuple=True)[0]


def replace_convnd(conv: nn.modules.conv._ConvNd, masks: Masks) -> nn.Module:
    """A smaller ``type(conv)`` keeping the input / output channels that the masks keep.

    Dimension-generic version of NNI's ``replace_conv2d`` (same errors for the same cases).
    """
    from nni.compression.speedup.error_code import EmptyLayerError, InputsNumberError, UnBalancedGroupError

    in_masks, output_mask, _ = masks
    if len(in_masks) != 1:
        raise InputsNumberError()
    kept_in = _kept_channels(in_masks[0]).to(conv.weight.device)
    kept_out = _kept_channels(output_mask).to(conv.weight.device)
    if kept_in.numel() == 0 or kept_out.numel() == 0:
        raise EmptyLayerError()
    in_step, out_step = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    blocks, in_per_group, out_per_group = [], None, None
    for group in range(conv.groups):
        ins = kept_in[(kept_in >= group * in_step) & (kept_in < (group + 1) * in_step)] - group * in_step
        outs = kept_out[(kept_out >= group * out_step) & (kept_out < (group + 1) * out_step)]
        if ins.numel() == 0:
            if outs.numel() != 0:  # outputs computed from no input: NNI cannot express that either
                raise UnBalancedGroupError()
            continue
        if in_per_group is None:
            in_per_group, out_per_group = ins.numel(), outs.numel()
        if (ins.numel(), outs.numel()) != (in_per_group, out_per_group) or outs.numel() == 0:
            raise UnBalancedGroupError()
        blocks.append(conv.weight.data[outs][:, ins])
    new_groups = len(blocks)
    _logger.info("replace %s with in_channels: %d, out_channels: %d", type(conv).__name__, kept_in.numel(), kept_out.numel())
    new_conv = type(conv)(in_channels=kept_in.numel(), out_channels=kept_out.numel(), kernel_size=conv.kernel_size,
                          stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=new_groups,
                          bias=conv.bias is not None, padding_mode=conv.padding_mode,
                          device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new_conv.weight.copy_(torch.cat(blocks, dim=0))
        if conv.bias is not None:
            new_conv.bias.copy_(conv.bias.data[kept_out])
    new_conv.train(conv.training)
    return new_conv


def replace_batchnormnd(norm: nn.modules.batchnorm._BatchNorm, masks: Masks) -> nn.Module:
    """A smaller ``type(norm)`` keeping the channels that the input mask keeps (as NNI's BatchNorm2d)."""
    from nni.compression.speedup.error_code import ShapeMisMatchError

    in_masks, output_mask, _ = masks
    kept = _kept_channels(in_masks[0])
    if kept.numel() != _kept_channels(output_mask).numel():
        raise ShapeMisMatchError()
    device = norm.running_mean.device if norm.running_mean is not None else None
    kept = kept.to(device) if device is not None else kept
    new_norm = type(norm)(kept.numel(), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                          track_running_stats=norm.track_running_stats)
    new_norm.to(device=device)
    with torch.no_grad():
        if norm.affine:
            new_norm.weight.copy_(norm.weight.data[kept.to(norm.weight.device)])
            new_norm.bias.copy_(norm.bias.data[kept.to(norm.bias.device)])
        if norm.track_running_stats:
            new_norm.running_mean.copy_(norm.running_mean[kept])
            new_norm.running_var.copy_(norm.running_var[kept])
            new_norm.num_batches_tracked.copy_(norm.num_batches_tracked)
    new_norm.train(norm.training)
    return new_norm


def _no_replace(module: nn.Module, masks: Masks) -> nn.Module:
    return module


#: module type name -> replace function, for the types NNI 3.0's replace_module lacks
EXTRA_REPLACEMENTS: Dict[str, Callable[[nn.Module, Masks], nn.Module]] = {
    "Conv3d": replace_convnd,
    "BatchNorm3d": replace_batchnormnd,
    "MaxPool3d": _no_replace,
    "AvgPool3d": _no_replace,
    "AdaptiveAvgPool3d": _no_replace,
    "AdaptiveMaxPool3d": _no_replace,
}


def extra_replacers() -> Any:
    """An NNI ``DefaultReplacer`` for :data:`EXTRA_REPLACEMENTS` (pass it in ``customized_replacers``)."""
    from nni.compression.speedup.replacer import DefaultReplacer

    return DefaultReplacer(replace_module_func_dict=dict(EXTRA_REPLACEMENTS))


def replaceable_types() -> frozenset:
    """Module type names that ``ModelSpeedup`` can shrink with :func:`extra_replacers` added."""
    from nni.compression.speedup.replacement import replace_module

    return frozenset(replace_module) | frozenset(EXTRA_REPLACEMENTS)
