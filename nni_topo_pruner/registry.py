"""Pruners by name, and compression configs that name them.

A compression config names a pruner, its options and an NNI config list::

    pruner: topological
    options: {seed: 0, homology_dims: [0]}
    config_list:
      - {op_types: [Conv2d], sparse_ratio: 0.5}

Names are case-insensitive. Our pruners (``topological``, ``betti``, ``random``) and NNI's
own (``level``, ``l1``, ``l2``, ``fpgm``, ``slim``, ``taylor``, ``movement``) are built in;
third-party packages add theirs through the entry-point group ``nni_topo_pruner.pruners``
(``name = "package.module:Class"``) or at run time with :func:`register_pruner`.

Example
-------
>>> import torch
>>> from nni_topo_pruner.registry import compress_from_config
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> config = {'pruner': 'l1', 'config_list': [{'op_names': ['0'], 'sparse_ratio': 0.5}]}
>>> import contextlib, io
>>> with contextlib.redirect_stdout(io.StringIO()):  # NNI prints '0 Filter' while resolving mask conflicts
...     model, masks = compress_from_config(model, config, torch.rand(1, 3, 16, 16))
>>> model[0].out_channels
4
"""
from __future__ import annotations

import importlib
import json
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import torch

from .masks_io import Masks

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nni_topo_pruner.pruners"

# name -> "module:attribute"; imported on first use so that listing names stays cheap.
_BUILTIN: Dict[str, str] = {
    "topological": "nni_topo_pruner.pruner:TopologicalPruner",
    "betti": "nni_topo_pruner.bmvc.pruner:BettiPruner",
    "random": "nni_topo_pruner.random_pruner:RandomPruner",
    "level": "nni.compression.pruning:LevelPruner",
    "l1": "nni.compression.pruning:L1NormPruner",
    "l2": "nni.compression.pruning:L2NormPruner",
    "fpgm": "nni.compression.pruning:FPGMPruner",
    "slim": "nni.compression.pruning:SlimPruner",
    "taylor": "nni.compression.pruning:TaylorPruner",
    "movement": "nni.compression.pruning:MovementPruner",
}
_ALIASES = {"l1norm": "l1", "l2norm": "l2", "topology": "topological"}

# Registered at run time by register_pruner (explicit, per process; never filled implicitly).
_RUNTIME: Dict[str, type] = {}

CONFIG_KEYS = ("pruner", "options", "config_list")


def _entry_point_targets() -> Dict[str, str]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name.lower()] = ep.value
    return found


def available_pruners() -> List[str]:
    """Sorted names that :func:`get_pruner` accepts (aliases not included)."""
    return sorted({*_BUILTIN, *_entry_point_targets(), *_RUNTIME})


def _canonical(name: str) -> str:
    """The registry key of ``name``: lower case, aliases resolved (``L1Norm`` -> ``l1``)."""
    return _ALIASES.get(name.lower(), name.lower())


def register_pruner(name: str, pruner_class: type, *, overwrite: bool = False) -> None:
    """Make ``pruner_class`` available as ``name`` in this process.

    Names are case-insensitive and aliases count as their pruner's name (``topology`` is
    ``topological``, ``L1Norm`` is ``l1``). A name already taken (built-in, alias of one,
    entry point, or registered before) raises ``ValueError`` unless ``overwrite=True``; with
    it, ``pruner_class`` wins for that name and its aliases.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"pruner name must be a non-empty string, got {name!r}")
    if not isinstance(pruner_class, type):
        raise TypeError(f"pruner_class must be a class, got {pruner_class!r}")
    if not callable(getattr(pruner_class, "compress", None)):
        raise TypeError(f"pruner_class {pruner_class.__name__} has no compress() method: a pruner is built as "
                        f"pruner_class(model, config_list, **options) and compress() must return (model, masks); "
                        f"subclass an NNI pruner (e.g. nni.compression.pruning.L1NormPruner) or define compress()")
    key = _canonical(name)
    if not overwrite:
        if key in _BUILTIN:
            alias = f" is an alias of the built-in pruner {key!r}" if key != name.lower() else \
                f" names the built-in pruner {key!r}"
            raise ValueError(f"pruner name {name!r}{alias}; pass overwrite=True to replace it "
                             f"(then {pruner_class.__name__} is used for {key!r} and its aliases), or choose another name")
        if key in _RUNTIME or key in _entry_point_targets():
            raise ValueError(f"a pruner named {name!r} is already registered; pass overwrite=True to replace it")
    _RUNTIME[key] = pruner_class


def _load(target: str) -> type:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def get_pruner(name: str) -> type:
    """The pruner class registered as ``name`` (case-insensitive).

    Raises ``ValueError`` listing the known names when ``name`` is unknown.
    """
    if not isinstance(name, str):
        raise TypeError(f"pruner name must be a string, got {type(name).__name__}")
    key = _canonical(name)
    if key in _RUNTIME:
        return _RUNTIME[key]
    target = _BUILTIN.get(key) or _entry_point_targets().get(key)
    if target is None:
        raise ValueError(f"unknown pruner {name!r}; known pruners: {', '.join(available_pruners())}")
    return _load(target)


def create_pruner(name: str, model: torch.nn.Module, config_list: List[Dict[str, Any]], *,
                  calibration_loader: Iterable | None = None, **options: Any):
    """Build the pruner named ``name`` on ``model``.

    Raises ``ValueError`` if a target layer shares a parameter with another layer (tied
    weights, which NNI's wrapping unties). Pruners whose class sets
    ``requires_calibration_data = True`` receive ``calibration_loader`` (they raise if it is
    missing); those that set ``accepts_calibration_data = True`` receive it when it is given
    (the Topological Pruner's ``cloud='activations'`` uses it); for the others it is ignored
    with a debug message.
    """
    from . import compat
    from .checks import check_config_list
    from .tied import check_no_tied_targets

    compat.apply()  # NNI's own pruners are built here too
    pruner_class = get_pruner(name)
    if pruner_class.__module__.startswith("nni."):  # ours check their config lists themselves
        check_config_list(model, config_list)  # NNI's own errors: bare asserts, KeyErrors, or silence
    check_no_tied_targets(model, config_list)  # NNI's wrapping would untie them silently
    if getattr(pruner_class, "requires_calibration_data", False) or (
            calibration_loader is not None and getattr(pruner_class, "accepts_calibration_data", False)):
        options["calibration_loader"] = calibration_loader
    elif calibration_loader is not None:
        _logger.debug("pruner %s does not use calibration data; calibration_loader ignored", name)
    return pruner_class(model, config_list, **options)


def load_compression_config(config: Union[str, Path, Mapping[str, Any]]) -> Dict[str, Any]:
    """Read and validate a compression config (a mapping, or a .json / .yaml / .yml path)."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"compression config file not found: {path}")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(f"compression config {path} is not valid YAML: {error}") from error
        elif path.suffix.lower() == ".json":
            try:
                config = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"compression config {path} is not valid JSON: {error}") from error
        else:
            raise ValueError(f"compression config {path}: use a .json, .yaml or .yml file")
    if not isinstance(config, Mapping):
        raise TypeError(f"a compression config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown compression config key(s) {unknown}; allowed keys: {list(CONFIG_KEYS)}")
    for key in ("pruner", "config_list"):
        if key not in config:
            raise ValueError(f"compression config is missing the required key {key!r}")
    if not isinstance(config["config_list"], list) or not config["config_list"]:
        raise ValueError("compression config 'config_list' must be a non-empty list of dicts (NNI config list)")
    options = config.get("options") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"compression config 'options' must be a mapping, got {type(options).__name__}")
    get_pruner(config["pruner"])  # fail early on an unknown name
    return {"pruner": config["pruner"], "options": dict(options), "config_list": list(config["config_list"])}


def compress_from_config(model: torch.nn.Module, config: Union[str, Path, Mapping[str, Any]], dummy_input: Any, *,
                         calibration_loader: Iterable | None = None) -> Tuple[torch.nn.Module, Masks]:
    """Prune ``model`` as ``config`` says, then shrink it with NNI's ``ModelSpeedup``.

    Returns the (same, now physically smaller) model and the masks NNI's pruner produced.
    """
    from .speedup import speedup_model

    config = load_compression_config(config)
    pruner = create_pruner(config["pruner"], model, config["config_list"],
                           calibration_loader=calibration_loader, **config["options"])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    speedup_model(model, dummy_input, masks)
    return model, masks
