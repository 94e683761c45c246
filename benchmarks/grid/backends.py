"""Pruning backends of the benchmark: NNI (mask + ``ModelSpeedup``) or Torch-Pruning (DepGraph).

Both backends get the same job -- prune the output channels of every layer the NNI config list
``config.config_list(sparsity)`` targets (``op_types``, Conv2d by default), ``int(n * ratio)``
channels per layer -- and return the physically smaller model. :func:`prune_with_backend`
dispatches on ``config.backend``:

``nni``
    the registry pruner's ``compress()``, ``unwrap_model()``, then NNI's ``ModelSpeedup``.
``torch-pruning``
    ``tp.pruner.BasePruner`` (``global_pruning=False``) with the importance matching the pruner
    (:data:`TORCH_PRUNING_IMPORTANCES`); every target layer gets its own ratio in
    ``pruning_ratio_dict`` so that Torch-Pruning removes exactly NNI's count (it rounds the
    *kept* count down, NNI the *pruned* one: see :func:`torch_pruning_ratio`), every other
    Conv / Linear layer (the classifier) is in ``ignored_layers``. Torch-Pruning removes the
    channels (no NNI wrapper, mask or ``ModelSpeedup``); NNI's own module selection reads the
    config list, so both backends prune the same layers.

How each benchmark pruner maps onto a Torch-Pruning importance, and whether the kept channels
can equal NNI's:

* ``l1`` / ``l2``: ``MagnitudeImportance(p, group_reduction='first', normalizer=None,
  target_types=[Conv, Linear])`` -- the filter's own weight norm only, as NNI's L1/L2NormPruner
  on a Conv2d (Torch-Pruning's default would add the BatchNorm scale and the next layer's input
  columns, mean-reduced over the group: another criterion). Torch-Pruning ranks ``sum |w|^p``,
  NNI ``(sum |w|^p)^(1/p)``: the same order. Same channels.
* ``fpgm``: Torch-Pruning's ``FPGMImportance(p=2, group_reduction='first', normalizer=None)``.
  It sums Euclidean distances between the rows of ``|w|^2`` (elementwise absolute value
  squared), NNI's FPGMPruner between the raw rows ``w``: a different geometry, so the kept
  channels may differ; counts, parameters and FLOPs agree.
* ``random``: ``RandomImportance`` draws from torch's global RNG (seeded by the benchmark), NNI's
  RandomPruner from a private generator: different channels, equal counts.
* ``topological`` (and ``LABEL=topological`` variants with their ``pruner_options``):
  :class:`nni_topo_pruner.torch_pruning.TopologicalImportance`, the same engine and options
  (``seed`` defaults to the run's seed, as for the NNI pruner): same channels.
* ``betti``: :class:`nni_topo_pruner.torch_pruning.BettiImportance` on the same calibration
  images and options as BettiPruner (``betti_threshold`` excepted: Torch-Pruning's counts come
  from ratios): same channels.

Example
-------
>>> torch_pruning_ratio(13, 0.5)   # NNI prunes int(13 * 0.5) = 6; Torch-Pruning then prunes 13 - int(13 * (1 - r))
0.4230769230769231
>>> 13 - int(13 * (1 - torch_pruning_ratio(13, 0.5)))
6
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.config import BACKENDS, BenchmarkConfig, pruner_options_for, pruner_spec
from ..core.data import CifarArrays, calibration_loader
from ..core.store import atomic_torch_save, load_torch_or_none

_logger = logging.getLogger(__name__)

# NNI's ModelSpeedup logs every replaced module at INFO on a logger it forces to INFO; it gets
# this one instead (warnings only by default; lower its level to see NNI's speed-up trace).
SPEEDUP_LOGGER = logging.getLogger("benchmarks.speedup")
SPEEDUP_LOGGER.setLevel(logging.WARNING)

#: registry pruner name -> what it becomes inside Torch-Pruning (see the module docstring).
TORCH_PRUNING_IMPORTANCES: Dict[str, str] = {
    "l1": "MagnitudeImportance(p=1, group_reduction='first', normalizer=None, target_types=[Conv, Linear])",
    "l2": "MagnitudeImportance(p=2, group_reduction='first', normalizer=None, target_types=[Conv, Linear])",
    "fpgm": "FPGMImportance(p=2, group_reduction='first', normalizer=None)",
    "random": "RandomImportance()",
    "topological": "nni_topo_pruner.torch_pruning.TopologicalImportance",
    "betti": "nni_topo_pruner.torch_pruning.BettiImportance",
}
_ALIASES = {"l1norm": "l1", "l2norm": "l2", "topology": "topological"}
# Options that only steer how the NNI pruner runs, not which channels it keeps.
_EXECUTION_ONLY = ("progress", "workers")


class StepError(RuntimeError):
    """A benchmark step failed; ``step`` names it (create, compress, unwrap, speedup, measure,
    checkpoint, finetune)."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step}: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


def step(name: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; any exception becomes a :class:`StepError` named ``name``."""
    try:
        return action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - recorded by the runner, which carries on
        raise StepError(name, error) from error


def bn_loader(config: BenchmarkConfig, arrays: CifarArrays, seed: int) -> DataLoader:
    """The ``bn_batches`` batches a record re-estimates BatchNorm on: the same training images for
    every pruner at one seed (comparisons stay paired), augmented when ``bn_augmented``."""
    return calibration_loader(arrays, config.bn_batches * config.batch_size, config.batch_size, seed,
                              augmented=getattr(config, "bn_augmented", False))


def stored_stage(path: Path, make: Callable[[], Dict[str, Any]], found: str) -> Dict[str, Any]:
    """The stage a record saved in ``path`` (a model and its measurements), or ``make()``'s, saved
    there first, so that an interrupted record does not prune (or train under a schedule) again;
    ``found`` is logged when the stored one is used."""
    stage = load_torch_or_none(path)
    if stage is None:
        stage = make()
        step("checkpoint", lambda: atomic_torch_save(stage, path))
    else:
        _logger.info("%s (%s)", found, path)
    return stage


@dataclass
class Pruned:
    """What a backend hands back: the physically pruned model and how it got there.

    ``kept_channels`` maps each pruned layer's module name to the original indices of its kept
    output channels; ``pruner_options`` are the options the criterion ran with; ``importance``
    names the Torch-Pruning importance (``None`` for NNI); ``criterion`` is the topological
    criterion's per-layer summary, when it ran.
    """

    model: nn.Module
    pruning_seconds: float
    speedup_seconds: float
    kept_channels: Dict[str, List[int]]
    pruner_options: Dict[str, Any]
    importance: Optional[str] = None
    criterion: Optional[Dict[str, Any]] = None
    calibration_images: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)


CalibrationFactory = Callable[[], Iterable]


def torch_pruning_ratio(n: int, sparse_ratio: float) -> float:
    """The ``pruning_ratio_dict`` value under which Torch-Pruning 1.6 prunes ``int(n * sparse_ratio)``
    of ``n`` channels, as NNI does.

    Torch-Pruning prunes ``n - int(n * (1 - r))``; ``r = (k - 0.5) / n`` puts ``n * (1 - r)`` half a
    channel above ``n - k``, clear of floating-point error on either side.

    >>> [n - int(n * (1 - torch_pruning_ratio(n, 0.3))) for n in (3, 8, 13, 64)] == [int(n * 0.3) for n in (3, 8, 13, 64)]
    True
    >>> torch_pruning_ratio(3, 0.2)
    0.0
    """
    pruned = int(n * sparse_ratio)
    return 0.0 if pruned <= 0 else (pruned - 0.5) / n


_SELECTORS = ("op_names", "op_types", "op_names_re", "exclude_op_names", "exclude_op_types", "exclude_op_names_re")


def layer_ratios(model: nn.Module, config_list: List[Dict[str, Any]]) -> Dict[str, float]:
    """``{module name: sparse_ratio}`` of every layer the NNI config list prunes, by NNI's own module
    selection (a later entry overrides an earlier one; ``exclude: True`` removes its layers).

    Only ``sparse_ratio`` has a Torch-Pruning counterpart here; any other setting (``max_sparse_ratio``,
    ``dependency_group_id``, ``granularity``, ...) raises a ``ValueError`` naming it.

    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    >>> layer_ratios(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}, {"op_names": ["2"], "sparse_ratio": 0.25}])
    {'0': 0.5, '2': 0.25}
    """
    from nni.compression.base.config import select_modules_by_config

    ratios: Dict[str, float] = {}
    for index, entry in enumerate(config_list):
        other = sorted(set(entry) - set(_SELECTORS) - {"sparse_ratio", "exclude"})
        if other:
            raise ValueError(f"config_list[{index}] sets {other}, which the torch-pruning backend cannot honour "
                             f"(it takes a sparse_ratio per layer); drop them or use --backend nni")
        selected, _, _ = select_modules_by_config(model, {key: entry[key] for key in _SELECTORS if key in entry})
        for name in selected:
            if entry.get("exclude"):
                ratios.pop(name, None)
            elif "sparse_ratio" in entry:
                ratios[name] = float(entry["sparse_ratio"])
            else:
                raise ValueError(f"config_list[{index}] has no sparse_ratio; the torch-pruning backend needs one")
    return {name: ratios[name] for name, _ in model.named_modules() if name in ratios}  # model order


def prune_with_backend(config: BenchmarkConfig, model: nn.Module, pruner: str, config_list: List[Dict[str, Any]],
                       seed: int, dummy: torch.Tensor, calibration: Optional[CalibrationFactory] = None,
                       progress: bool = True) -> Pruned:
    """Prune ``model`` (in place) with ``pruner`` as ``config_list`` says, through ``config.backend``.

    ``calibration`` builds the calibration loader for data-dependent criteria (called only when
    one needs it); ``dummy`` is the example input for tracing.
    """
    backend = getattr(config, "backend", "nni")
    if backend == "nni":
        return prune_with_nni(config, model, pruner, config_list, seed, dummy, calibration, progress)
    if backend == "torch-pruning":
        return prune_with_torch_pruning(config, model, pruner, config_list, seed, dummy, calibration, progress)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


_ALLOCATED: Dict[tuple, List[Dict[str, Any]]] = {}  # (baseline, sparsity) -> config list, per process


def run_config_list(config: BenchmarkConfig, baseline: Any, sparsity: float) -> List[Dict[str, Any]]:
    """The NNI config list every pruner (either backend) gets at ``sparsity`` from ``baseline``
    (a :class:`benchmarks.core.baseline.Baseline`): uniform, or with per-layer ratios
    from :func:`nni_topo_pruner.allocation.topological_config_list` on the baseline (computed
    once per process: it does not depend on the pruner or the seed)."""
    uniform = config.config_list(sparsity)
    if config.allocation == "uniform":
        return uniform
    key = (baseline.key_hash, float(sparsity), tuple(config.op_types))
    if key not in _ALLOCATED:
        from nni_topo_pruner.allocation import topological_config_list

        model = baseline.fresh_model().eval()
        _ALLOCATED[key], _ = topological_config_list(model, uniform, torch.zeros(1, 3, 32, 32), progress=False)
    return [dict(entry) for entry in _ALLOCATED[key]]


# ------------------------------------------------------------------------------------------ NNI
def _accepts_keyword(cls: type, name: str) -> bool:
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def pruner_options(pruner_class: type, label: str, config: BenchmarkConfig, seed: int,
                   progress: bool = True) -> Dict[str, Any]:
    """The keyword options for the pruner labelled ``label``: ``config.pruner_options[label]``, plus
    ``seed=seed`` and ``progress=progress`` when the pruner's constructor takes them and the
    options don't set them."""
    options = pruner_options_for(config, label)
    for keyword, value in (("seed", seed), ("progress", progress)):
        if keyword not in options and _accepts_keyword(pruner_class, keyword):
            options[keyword] = value
    return options


def prune_with_nni(config: BenchmarkConfig, model: nn.Module, pruner: str, config_list: List[Dict[str, Any]],
                   seed: int, dummy: torch.Tensor, calibration: Optional[CalibrationFactory] = None,
                   progress: bool = True) -> Pruned:
    """The registry pruner's masks, then ``unwrap_model()`` and NNI's ``ModelSpeedup``."""
    from nni_topo_pruner.registry import create_pruner
    from nni_topo_pruner.speedup import speedup_model

    name, options, loader = nni_pruner_inputs(config, pruner, seed, calibration, progress)
    started = time.perf_counter()
    instance = step("create", lambda: create_pruner(name, model, config_list, calibration_loader=loader, **options))
    _, masks = step("compress", instance.compress)
    pruning_seconds = time.perf_counter() - started

    started = time.perf_counter()
    step("unwrap", instance.unwrap_model)
    step("speedup", lambda: speedup_model(model, dummy, masks, logger=SPEEDUP_LOGGER))
    speedup_seconds = time.perf_counter() - started

    return Pruned(model, pruning_seconds, speedup_seconds, kept_channels(masks), options,
                  criterion=criterion_summary(instance),
                  calibration_images=None if loader is None else _dataset_size(loader))


def nni_pruner_inputs(config: BenchmarkConfig, pruner: str, seed: int, calibration: Optional[CalibrationFactory] = None,
                      progress: bool = True) -> Tuple[str, Dict[str, Any], Optional[Iterable]]:
    """``(registry name, keyword options, calibration loader or None)`` of the NNI-backend pruner ``pruner``."""
    from nni_topo_pruner.registry import get_pruner

    label, name = pruner_spec(pruner)
    pruner_class = step("create", lambda: get_pruner(name))
    options = pruner_options(pruner_class, label, config, seed, progress)
    loader = None
    # data-dependent pruners, and the Topological Pruner with cloud='activations', get calibration images
    if calibration is not None and (getattr(pruner_class, "requires_calibration_data", False) or (
            getattr(pruner_class, "accepts_calibration_data", False) and options.get("cloud") == "activations")):
        loader = calibration()
    return name, options, loader


def kept_channels(masks: Dict[str, Dict[str, torch.Tensor]]) -> Dict[str, List[int]]:
    """Per masked layer, the output channels its weight mask keeps (a BatchNorm's mask, 1-D and
    aligned with its layer's under ``batchnorm_masks``, is left out)."""
    return {module: torch.nonzero(mask["weight"].flatten(1).abs().sum(1)).flatten().tolist()
            for module, mask in masks.items() if mask.get("weight") is not None and mask["weight"].dim() > 1}


def criterion_summary(instance: Any) -> Optional[Dict[str, Any]]:
    """How the Topological Pruner's criterion ranked, per unit, from its (last) report; ``None``
    for other pruners."""
    report = getattr(instance, "report", None)
    if report is None or not hasattr(report, "units"):
        return None
    return {unit.name: {"distinct_saliences": len(set(unit.salience)),
                        "salience_tied": bool(getattr(unit, "salience_tied", False)),
                        "initial_distance": unit.initial_distance,
                        "final_distance": unit.final_distance}
            for unit in report.units}


def _dataset_size(loader: Iterable) -> Optional[int]:
    dataset = getattr(loader, "dataset", None)
    return None if dataset is None else len(dataset)


# -------------------------------------------------------------------------------- Torch-Pruning
def torch_pruning_name(pruner: str) -> str:
    """The registry name of ``pruner`` (``LABEL=NAME`` or ``NAME``) if Torch-Pruning can run it,
    else a ``ValueError`` naming the pruners it can."""
    label, name = pruner_spec(pruner)
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TORCH_PRUNING_IMPORTANCES:
        raise ValueError(f"pruners: {pruner!r} has no Torch-Pruning importance; with backend='torch-pruning' "
                         f"use one of {', '.join(sorted(TORCH_PRUNING_IMPORTANCES))} (or LABEL=NAME of one), or "
                         f"run it with --backend nni")
    return key


def check_backend_pruners(config: BenchmarkConfig) -> BenchmarkConfig:
    """``config`` if its backend can run every pruner it names, else a ``ValueError`` naming the
    fix (the backends own their pruner names; :func:`benchmarks.core.config.validate` checks the rest).
    With ``backend='torch-pruning'`` Torch-Pruning must import and every pruner needs an importance."""
    if getattr(config, "backend", "nni") == "torch-pruning":
        from nni_topo_pruner.torch_pruning import import_torch_pruning

        try:
            import_torch_pruning()
        except ImportError as error:  # a usage error of this run: the message says how to install it
            raise ValueError(f"backend='torch-pruning': {error}") from None
        for spec in config.pruners:
            torch_pruning_name(spec)  # names the pruners Torch-Pruning can run
    return config


def build_importance(config: BenchmarkConfig, pruner: str, seed: int,
                     calibration: Optional[CalibrationFactory] = None) -> Tuple[Any, Dict[str, Any], Optional[int]]:
    """The Torch-Pruning importance for ``pruner``, the options it runs with, and the number of
    calibration images it got (``None`` if none); ``ValueError`` names an option it cannot honour."""
    from nni_topo_pruner.torch_pruning import import_torch_pruning

    tp = import_torch_pruning()
    label, _ = pruner_spec(pruner)
    name = torch_pruning_name(pruner)
    options = {key: value for key, value in pruner_options_for(config, label).items() if key not in _EXECUTION_ONLY}
    if name in ("l1", "l2"):
        _no_options(label, name, options)
        return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2, group_reduction="first",
                                                 normalizer=None, target_types=[nn.modules.conv._ConvNd,
                                                                                nn.Linear]), options, None
    if name == "fpgm":
        _no_options(label, name, options)
        return tp.importance.FPGMImportance(p=2, group_reduction="first", normalizer=None), options, None
    if name == "random":
        options.pop("seed", None)  # the benchmark seeds torch's global RNG, which RandomImportance draws from
        _no_options(label, name, options)
        return tp.importance.RandomImportance(), options, None
    if name == "topological":
        from nni_topo_pruner.torch_pruning import TopologicalImportance

        cloud = options.pop("cloud", "weights")
        if cloud != "weights":
            raise ValueError(f"pruner_options[{label!r}]: cloud={cloud!r} is not available with backend='torch-pruning' "
                             f"(TopologicalImportance builds the weight cloud only); use cloud='weights' or --backend nni")
        options.pop("num_images", None)  # only read by cloud='activations'
        options.setdefault("seed", seed)
        return TopologicalImportance(**options), options, None
    if name == "betti":
        from nni_topo_pruner.torch_pruning import BettiImportance

        if options.get("betti_threshold") is not None:
            raise ValueError(f"pruner_options[{label!r}]: betti_threshold is not available with backend='torch-pruning' "
                             f"(Torch-Pruning's counts come from the per-layer ratios, not from a score threshold); "
                             f"drop it to prune by the config list's ratios, or use --backend nni")
        options.pop("betti_threshold", None)
        options.setdefault("seed", seed)
        if calibration is None:
            raise ValueError(f"pruner {label!r} (betti) needs calibration images: pass calibration=")
        loader = calibration()
        return BettiImportance(loader, **options), options, _dataset_size(loader)
    raise AssertionError(f"no importance for {name!r}")  # torch_pruning_name() admits only the names above


def _no_options(label: str, name: str, options: Dict[str, Any]) -> None:
    unknown = sorted(set(options) - {"seed"})
    if unknown:
        raise ValueError(f"pruner_options[{label!r}]: {unknown} have no Torch-Pruning counterpart for {name!r} "
                         f"(its importance takes no options here); drop them or use --backend nni")


def prune_with_torch_pruning(config: BenchmarkConfig, model: nn.Module, pruner: str,
                             config_list: List[Dict[str, Any]], seed: int, dummy: torch.Tensor, calibration: Optional[CalibrationFactory] = None,
                             progress: bool = True) -> Pruned:
    """Prune the config list's layers with Torch-Pruning's ``BasePruner`` and the matching importance.

    Timing: ``pruning_seconds`` covers the importance scores and Torch-Pruning's ranking (its
    ``step`` up to the first group to remove); ``speedup_seconds`` covers building the dependency
    graph and physically removing the channels -- the parts NNI's ``ModelSpeedup`` does.
    """
    from nni_topo_pruner.torch_pruning import import_torch_pruning

    tp = import_torch_pruning()
    importance, options, calibration_images = step("create", lambda: build_importance(config, pruner, seed,
                                                                                          calibration))
    sparse_ratios = step("create", lambda: layer_ratios(model, config_list))
    if not sparse_ratios:
        raise StepError("create", ValueError(f"the config list {config_list} selects no layer of the model"))
    modules = dict(model.named_modules())
    targets = {name: modules[name] for name in sparse_ratios}
    names = {module: name for name, module in model.named_modules()}
    widths = {name: _out_channels(module) for name, module in targets.items()}
    ratios = {module: torch_pruning_ratio(widths[name], sparse_ratios[name]) for name, module in targets.items()}
    roots = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)  # BasePruner's default root_module_types
    ignored = [module for module in model.modules() if isinstance(module, roots) and module not in ratios]

    started = time.perf_counter()
    base = step("create", lambda: tp.pruner.BasePruner(
        model, dummy, importance=importance, global_pruning=False, pruning_ratio=0.0, pruning_ratio_dict=ratios,
        ignored_layers=ignored))
    graph_seconds = time.perf_counter() - started

    pruned: Dict[str, List[int]] = {}
    remove_seconds = 0.0
    started = time.perf_counter()

    def run_step() -> None:
        nonlocal remove_seconds
        # interactive: scores and ranking for every group first, then one group at a time to remove
        for group in base.step(interactive=True):
            dep, idxs = group[0]
            pruned[names.get(dep.target.module, "?")] = sorted(int(i) for i in idxs)
            removing = time.perf_counter()
            group.prune()
            remove_seconds += time.perf_counter() - removing

    step("compress", run_step)
    pruning_seconds = time.perf_counter() - started - remove_seconds
    kept = {name: sorted(set(range(widths[name])) - set(pruned.get(name, ()))) for name in targets}
    for name, indices in kept.items():  # a mismatch here would be a bug of ours, not a benchmark result
        if len(indices) != _out_channels(targets[name]):
            raise StepError("speedup", RuntimeError(
                f"Torch-Pruning left {_out_channels(targets[name])} channels in {name} where its groups removed "
                f"{widths[name] - len(indices)} of {widths[name]}"))
    criterion = None
    choices = getattr(importance, "choices", None)
    if choices:
        criterion = {name: {"distinct_saliences": len(set(choice.salience.tolist())),
                            "initial_distance": choice.initial_distance, "final_distance": choice.final_distance}
                     for name, choice in choices.items()}
    return Pruned(model, pruning_seconds, graph_seconds + remove_seconds, kept, options,
                  importance=TORCH_PRUNING_IMPORTANCES[torch_pruning_name(pruner)], criterion=criterion,
                  calibration_images=calibration_images)


def _out_channels(module: nn.Module) -> int:
    for attribute in ("out_channels", "out_features", "hidden_size"):
        if hasattr(module, attribute):
            return int(getattr(module, attribute))
    raise ValueError(f"cannot tell the output channels of {type(module).__name__}")
