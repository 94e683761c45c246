"""Save and load masks in NNI's format: ``torch.save`` of ``{module_name: {target_name: Tensor}}``.

A file written here can be passed straight to ``ModelSpeedup(model, dummy_input, path)``.

Example
-------
>>> import torch, tempfile, os
>>> masks = {'conv': {'weight': torch.ones(4, 3, 3, 3), 'bias': torch.ones(4)}}
>>> path = os.path.join(tempfile.mkdtemp(), 'masks.pth')
>>> save_masks(masks, path)
>>> load_masks(path)['conv']['bias'].shape
torch.Size([4])
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

Masks = Dict[str, Dict[str, torch.Tensor]]


def _validated(masks: Any, source: str) -> Masks:
    if not isinstance(masks, Mapping):
        raise ValueError(f"{source}: masks must be a mapping {{module_name: {{target_name: Tensor}}}}, "
                         f"got {type(masks).__name__}")
    plain: Masks = {}
    for module_name, targets in masks.items():
        if not isinstance(module_name, str) or not isinstance(targets, Mapping):
            raise ValueError(f"{source}: entry {module_name!r} must map a module name to {{target_name: Tensor}}")
        plain[module_name] = {}
        for target_name, mask in targets.items():
            if mask is None:
                continue
            if not isinstance(mask, torch.Tensor):
                raise ValueError(f"{source}: mask {module_name}.{target_name} is a {type(mask).__name__}, not a Tensor")
            plain[module_name][str(target_name)] = mask.detach().cpu()
    return plain


def save_masks(masks: Mapping[str, Mapping[str, torch.Tensor]], path: Union[str, Path]) -> None:
    """Write ``masks`` atomically (a partial file never replaces a good one)."""
    plain = _validated(masks, "save_masks")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(plain, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_masks(path: Union[str, Path], map_location: Any = "cpu") -> Masks:
    """Read masks saved by :func:`save_masks` or by NNI (``torch.save(masks, path)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"masks file not found: {path}")
    return _validated(torch.load(path, map_location=map_location, weights_only=True), str(path))
