"""Checks of user inputs that need torch or NNI, before anything is wrapped: an NNI config list
against the model it is meant for, calibration loaders, materialised weights.

NNI 3.0 answers a config list that does not fit the model with a bare ``AssertionError``
(an entry without ``sparse_ratio``, a global or dependency group mixing ratios), a
``KeyError`` (an unknown ``op_names``), an ``AssertionError`` "LSTM is not registered", or
nothing at all (``op_types: ['conv2d']`` selects no layer and ``compress()`` returns ``{}``).
:func:`check_config_list` finds these first, with NNI's own selection rules, and raises an
:class:`~nni_topo_pruner.topology.validation.InvalidParameterError` (a ``ValueError``) that
names the entry and the fix.

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> check_config_list(model, [{'op_types': ['conv2d'], 'sparse_ratio': 0.5}])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nni_topo_pruner.topology.validation.InvalidParameterError: config_list[0]: op_types 'conv2d' is not a layer type of the model; did you mean 'Conv2d'? ...
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch

from .topology.validation import InvalidParameterError

__all__ = ["check_config_list", "check_calibration_loader", "check_materialised"]

def check_materialised(model: torch.nn.Module) -> None:
    """Raise ``ValueError`` if a parameter or buffer of ``model`` is on the ``meta`` device."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise InvalidParameterError(
                f"{name} is on the 'meta' device: the model's weights are not materialised (it was built under "
                f"torch.device('meta') or an init_empty_weights context), so there is nothing to prune or speed up. "
                f"Materialise the weights first, e.g. model.to_empty(device='cpu') then "
                f"model.load_state_dict(checkpoint)")


def check_calibration_loader(loader: Any, name: str = "calibration_loader") -> Any:
    """``loader`` if it is an iterable of batches (a ``DataLoader``, a list of tensors or of
    ``(inputs, targets)``); a bare tensor (iterating it yields single samples without their
    batch dimension), a string or a non-iterable raise ``ValueError``."""
    if isinstance(loader, (torch.Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise InvalidParameterError(f"{name} must be an iterable of batches (e.g. a DataLoader or a list of tensors), "
                                    f"got {type(loader).__name__}; wrap a single tensor as [tensor]")
    return loader


def _suggest(value: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(options), n=3)
    return f"did you mean {', '.join(map(repr, close))}?" if close else ""


def _layer_types(model: torch.nn.Module) -> List[str]:
    return sorted({type(m).__name__ for name, m in model.named_modules() if name})


def _well_formed(entry: Any) -> bool:
    """An entry NNI's config schema accepts (what it rejects, e.g. a misspelt key, NNI reports)."""
    from nni.compression.base.config import default_config_schema
    from schema import SchemaError

    try:
        default_config_schema("pruning").validate(dict(entry))
    except SchemaError:
        return False
    return True


def _check_names(index: int, entry: Mapping[str, Any], names: Sequence[str], types: Sequence[str]) -> None:
    """Unknown op_names, and op_types / exclude_op_types that differ from a layer type only in case."""
    for op_name in entry.get("op_names") or []:
        if op_name not in names:
            hint = _suggest(op_name, [n for n in names if n]) or (
                f"the model's layers are: {', '.join(map(repr, [n for n in names if n][:12]))}"
                f"{' ...' if len(names) > 13 else ''}")
            raise InvalidParameterError(f"config_list[{index}]: op_names {op_name!r} is not a layer of the model; "
                                        f"{hint} (names as in model.named_modules())")
    lowered = {t.lower(): t for t in types}
    for key in ("op_types", "exclude_op_types"):
        for op_type in entry.get(key) or []:
            if op_type not in types and op_type.lower() in lowered:
                raise InvalidParameterError(
                    f"config_list[{index}]: {key} {op_type!r} is not a layer type of the model; did you mean "
                    f"{lowered[op_type.lower()]!r}? ({key} are class names, case-sensitive)")


def _why_nothing(index: int, entry: Mapping[str, Any], types: Sequence[str]) -> str:
    """Why config entry ``index`` selects no layer (a clause for the error message)."""
    shown = {k: v for k, v in entry.items()}
    if "op_types" in entry and not entry["op_types"] and not entry.get("op_names") and not entry.get("op_names_re"):
        return f"config_list[{index}] {shown} selects nothing: its op_types is empty"
    unknown = [t for t in entry.get("op_types") or [] if t not in types]
    if unknown:
        hints = [h for h in (_suggest(t, types) for t in unknown) if h]
        return (f"config_list[{index}] {shown} selects nothing: the model has no layer of type "
                f"{', '.join(map(repr, unknown))}{' (' + ' '.join(hints) + ')' if hints else ''}; its layer types "
                f"are {', '.join(types)}")
    return (f"config_list[{index}] {shown} selects nothing: its op_names / op_names_re / op_types match no layer "
            f"(or its exclude_* keys remove every match)")


def check_config_list(model: torch.nn.Module, config_list: Any, *, require_ratio: bool = True) -> None:
    """Raise ``ValueError`` naming the entry and the fix when ``config_list`` (an NNI 3.0
    pruning config list, legacy keys included) does not fit ``model``:

    * weights on the ``meta`` device (:func:`check_materialised`);
    * an ``op_names`` entry that is not a layer of the model, an ``op_types`` /
      ``exclude_op_types`` entry that differs from one of the model's layer types only in case;
    * a config list that selects no layer (each entry says why it selects nothing);
    * a selected layer of a type NNI has no pruning setting for (e.g. ``LSTM``);
    * with ``require_ratio``: a selected layer given neither ``sparse_ratio`` nor
      ``sparse_threshold``;
    * a global group or a dependency group whose layers have different ``sparse_ratio`` values.

    NNI's rule applies: the first entry that configures a layer's target wins. Entries NNI's
    schema rejects (a misspelt key, a selector that is not a list of strings) are left to it.
    """
    from nni.compression.base.config import select_modules_by_config, trans_legacy_config_list
    from nni.compression.base.setting import PruningSetting

    from . import compat

    check_materialised(model)
    if not isinstance(config_list, list) or not all(isinstance(c, Mapping) for c in config_list):
        return  # the caller's own check (or NNI's schema) reports it
    compat.apply()  # trans_legacy_config_list needs the legacy-total-sparsity-group-key patch
    modules = dict(model.named_modules())
    names, types = list(modules), _layer_types(model)
    translated = trans_legacy_config_list([dict(c) for c in config_list])
    # (entry index, module name, target name) -> the setting NNI will use: the first entry's
    settings: Dict[Tuple[str, str], Tuple[int, Dict[str, Any]]] = {}
    nothing: List[str] = []
    for index, (original, entry) in enumerate(zip(config_list, translated)):
        if not _well_formed(entry):
            continue
        _check_names(index, entry, names, types)
        selected, public, _ = select_modules_by_config(model, dict(entry))
        if not selected:
            if not original.get("exclude"):  # a legacy exclude entry selects nothing on purpose
                nothing.append(_why_nothing(index, original, types))
            continue
        for module_name in sorted(selected):
            module = selected[module_name]
            kind = type(module).__name__
            if kind not in PruningSetting.registry:
                raise InvalidParameterError(
                    f"config_list[{index}] selects {module_name!r} ({kind}), a layer type NNI's pruners cannot "
                    f"prune (NNI has no pruning setting for {kind}); restrict op_types to the layers to prune (e.g. "
                    f"['Conv2d', 'Linear']) or add 'exclude_op_types': [{kind!r}] to the entry")
            for target, setting in PruningSetting.get(module, public).items():
                settings.setdefault((module_name, target), (index, setting))
    if not settings and nothing:
        raise InvalidParameterError("the config list selects no layer: " + "; ".join(nothing) +
                                    ". op_types are class names, case-sensitive (e.g. 'Conv2d', 'Linear'); "
                                    "op_names are names from model.named_modules()")
    _check_ratios(settings, modules, require_ratio)
    for key in ("dependency_group_id", "global_group_id"):
        _check_group_ratios(settings, key)


def _is_parameter(target: str, setting: Mapping[str, Any]) -> bool:
    return not target.startswith(("_input_", "_output_")) and setting.get("align") is None


def _check_ratios(settings: Mapping[Tuple[str, str], Tuple[int, Dict[str, Any]]],
                  modules: Mapping[str, torch.nn.Module], require_ratio: bool) -> None:
    if not require_ratio:
        return
    missing: Dict[int, List[str]] = {}
    given = False
    for (module_name, target), (index, setting) in settings.items():
        if not _is_parameter(target, setting) or not isinstance(getattr(modules[module_name], target, None),
                                                                torch.Tensor):
            continue
        if setting.get("sparse_ratio") is None and setting.get("sparse_threshold") is None:
            missing.setdefault(index, []).append(f"{module_name}.{target}")
        else:
            given = True
    if not missing:
        return
    index, targets = min(missing.items())
    shown = ", ".join(map(repr, targets[:6])) + (" ..." if len(targets) > 6 else "")
    prefix = "the config list selects no layer to prune: " if not given else ""
    raise InvalidParameterError(f"{prefix}config_list[{index}] selects {shown} but gives no 'sparse_ratio': add "
                                f"'sparse_ratio': r (0 <= r < 1) to config_list[{index}], or remove the entry")


def _check_group_ratios(settings: Mapping[Tuple[str, str], Tuple[int, Dict[str, Any]]], key: str) -> None:
    groups: Dict[Any, Dict[float, List[str]]] = {}
    for (module_name, target), (index, setting) in settings.items():
        group, ratio = setting.get(key), setting.get("sparse_ratio")
        if group is None or ratio is None or not _is_parameter(target, setting):
            continue
        groups.setdefault(group, {}).setdefault(ratio, []).append(f"config_list[{index}]: {module_name!r}")
    kind = key.replace("_id", "").replace("_", " ")
    for group, by_ratio in groups.items():
        if len(by_ratio) > 1:
            parts = "; ".join(f"{ratio:g} ({', '.join(sorted(set(where))[:4])})" for ratio, where in sorted(by_ratio.items()))
            raise InvalidParameterError(
                f"{kind} {group!r} mixes sparse_ratio values: {parts}. NNI prunes one {kind} at one ratio: give "
                f"every entry with {key}={group!r} the same sparse_ratio, or use different {key} values")
