"""Torch's pytree turns torch.Size into a plain tuple (NNI's tree_map_zip).

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from .base import Patch, source_of, is_marked, mark

_SIZE_LEAF = "pytree-torch-size-leaf"
#: NNI modules that imported tree_map_zip by name, and so hold their own reference
_SIZE_LEAF_USERS = ("nni.compression.speedup.utils", "nni.compression.speedup.mask_updater",
                    "nni.compression.speedup.model_speedup")


def _nni_speedup_utils() -> Any | None:
    try:
        from nni.compression.speedup import utils
    except Exception:
        return None
    return utils


def _pytree_flattens_size() -> bool:
    """True when torch's pytree maps a torch.Size to a plain tuple (torch >= 2.1 registers it)."""
    import torch
    from torch.utils import _pytree

    return type(_pytree.tree_map(lambda x: x, torch.Size([1, 2]))) is not torch.Size


def _size_leaf_needed() -> bool:
    utils = _nni_speedup_utils()
    func = getattr(utils, "tree_map_zip", None)
    if func is None or is_marked(func, _SIZE_LEAF):
        return False
    from torch.utils import _pytree

    if "is_leaf" not in inspect.signature(_pytree.tree_map).parameters:
        return False
    source = source_of(func)
    return _pytree_flattens_size() and "tree_map(fn, pytrees[0])" in source and "tree_flatten(pytree)" in source


def _size_leaf_install() -> None:
    """Fix ``AttributeError: 'tuple' object has no attribute 'numel'`` (``x.size()[1:].numel()``)."""
    import importlib

    import torch
    from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

    original = _nni_speedup_utils().tree_map_zip

    def is_size(obj: Any) -> bool:
        return isinstance(obj, torch.Size)

    @functools.wraps(original)
    def tree_map_zip(fn: Any, *pytrees: Any) -> Any:
        # NNI's own function, with torch.Size a leaf as it was in torch 2.0's pytree: the
        # value of x.size() stays a torch.Size through ModelSpeedup's propagation
        assert len(pytrees) > 0
        if len(pytrees) == 1:
            return tree_map(fn, pytrees[0], is_leaf=is_size)
        flat_args_list, spec_list = [], []
        for pytree in pytrees:
            flat_args, spec = tree_flatten(pytree, is_leaf=is_size)
            flat_args_list.append(flat_args)
            spec_list.append(spec)
        assert all(len(args) == len(flat_args_list[0]) for args in flat_args_list), "Inconsistent tree nodes length."
        return tree_unflatten([fn(*args) for args in zip(*flat_args_list)], spec_list[0])

    tree_map_zip.__wrapped_original__ = original
    fixed = mark(tree_map_zip, _SIZE_LEAF)
    for name in _SIZE_LEAF_USERS:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if getattr(module, "tree_map_zip", None) is original:
            module.tree_map_zip = fixed


def _size_leaf_applied() -> bool:
    utils = _nni_speedup_utils()
    return utils is not None and is_marked(getattr(utils, "tree_map_zip", None), _SIZE_LEAF)


PATCH = Patch(
        name=_SIZE_LEAF,
        symptom="AttributeError: 'tuple' object has no attribute 'numel' in torch/fx/interpreter.py "
                "call_method during ModelSpeedup.propagate_originally, for a model that flattens with "
                "x.view(-1, x.size()[1:].numel()) (LeNet style), plain or already traced",
        cause="torch (>= 2.1, torch/fx/experimental/proxy_tensor.py) registers torch.Size as a pytree "
              "node that unflattens to a plain tuple; NNI copies every node's value with "
              "tree_map_zip (torch's tree_map), so the value of x.size() becomes a tuple and its "
              "slice has no numel(). In torch 2.0, which NNI 3.0 was written for, torch.Size was a "
              "pytree leaf",
        fix="nni.compression.speedup.utils.tree_map_zip replaced by NNI's same function with "
            "torch.Size as a pytree leaf (is_leaf), rebound in mask_updater and model_speedup, "
            "which imported it by name",
        is_needed=_size_leaf_needed,
        install=_size_leaf_install,
        is_applied=_size_leaf_applied,
    )
