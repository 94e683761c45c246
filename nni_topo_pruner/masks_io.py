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

from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

from .fileio import atomic_write

#: NNI's ``{module_name: {target_name: tensor}}``: masks, and the data and metrics of the same
#: shape that NNI's pruner hooks pass on. The package's one alias for it.
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
    """Write ``masks`` atomically (a partial file never replaces a good one; normal file mode)."""
    plain = _validated(masks, "save_masks")
    with atomic_write(path, "wb") as handle:
        torch.save(plain, handle)


def load_masks(path: Union[str, Path], map_location: Any = "cpu") -> Masks:
    """Read masks saved by :func:`save_masks` or by NNI (``torch.save(masks, path)``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
    anything that is not a masks file (truncated, empty, text, another object).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"masks file not found: {path}")
    hint = "save masks with nni_topo_pruner.save_masks(masks, path) (or NNI's torch.save(masks, path))"
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises OSError, EOFError, KeyError, RuntimeError, UnpicklingError ...
        kind = "it is empty" if path.stat().st_size == 0 else "it is truncated, corrupt or another kind of file"
        raise ValueError(f"{path} is not a masks file: torch.load cannot read it ({kind}; "
                         f"{type(error).__name__}: {error}); {hint}") from error
    try:
        return _validated(loaded, str(path))
    except ValueError as error:
        raise ValueError(f"{path} is not a masks file: {error}; {hint}") from None
