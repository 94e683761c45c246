"""Tied (shared) parameters among pruning targets: detected and refused.

``b.weight = a.weight`` ties two layers. NNI's pruners wrap every target module and unwrap it
afterwards, and that gives each module its own parameter again: after ``compress()`` and
``unwrap_model()`` the layers are silently untied (NNI's own ``L1NormPruner`` does the same),
and ``ModelSpeedup`` replaces each of them separately. So a model whose pruning targets share
a parameter with any other layer is refused, with the shared names, before anything is wrapped.

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
>>> model[1].weight = model[0].weight
>>> shared_parameter_groups(model)
[['0.weight', '1.weight']]
>>> check_no_tied_targets(model, [{'op_types': ['Linear'], 'sparse_ratio': 0.5}])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: pruning targets share parameters with other layers: '0.weight' = '1.weight'...
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Sequence, Set, Union

import torch

__all__ = ["shared_parameter_groups", "target_module_names", "check_no_tied_targets"]


def shared_parameter_groups(model: torch.nn.Module) -> List[List[str]]:
    """Groups of qualified parameter names (``module.param``) that are one and the same Parameter."""
    by_id: Dict[int, List[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def target_module_names(model: torch.nn.Module, config_list: Sequence[Mapping[str, Any]]) -> Set[str]:
    """Names of the modules an NNI config list selects (what an NNI pruner would wrap)."""
    from nni.compression.base.config import select_modules_by_config, trans_legacy_config_list

    from . import compat
    compat.apply()  # trans_legacy_config_list needs the legacy-total-sparsity-group-key patch
    names: Set[str] = set()
    for config in trans_legacy_config_list([dict(c) for c in config_list]):
        modules, _, _ = select_modules_by_config(model, config)
        names.update(modules)
    return names


def check_no_tied_targets(model: torch.nn.Module,
                          targets: Union[Sequence[Mapping[str, Any]], Iterable[str]]) -> None:
    """Raise ``ValueError`` if a target module shares a parameter with another layer.

    ``targets`` is an NNI config list (list of dicts) or an iterable of module names (e.g.
    the keys of a masks dict). Call it before the pruner wraps the model.
    """
    groups = shared_parameter_groups(model)
    if not groups:
        return
    targets = list(targets)
    if targets and all(isinstance(t, Mapping) for t in targets):
        names = target_module_names(model, targets)
    else:
        names = {str(t) for t in targets}
    tied = []
    for group in groups:
        if any(name.rpartition(".")[0] in names for name in group):
            tied.append(" = ".join(repr(name) for name in group))
    if tied:
        raise ValueError(
            f"pruning targets share parameters with other layers: {'; '.join(tied)}. NNI's wrapping and "
            f"ModelSpeedup untie shared parameters silently (each layer ends up with its own copy), so tied "
            f"layers cannot be pruned consistently. Exclude them from the config list (exclude_op_names), or untie "
            f"them on purpose first (e.g. layer.weight = torch.nn.Parameter(layer.weight.detach().clone()))")
