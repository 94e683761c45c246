"""Topology-driven per-layer sparse ratios: one global budget, shared out among layers by how
far each layer's persistence diagram moves when it is pruned.

A uniform config list prunes the same fraction of every layer. :func:`topological_config_list`
turns it into one NNI config entry per layer, with its own ``sparse_ratio``, such that the
pruned cost (FLOPs by default) is the same as the uniform list's, and the layers whose
diagram moves least per unit of cost are pruned most. Any pruner can take the result (L1,
random, the Topological Pruner): that is what makes a matched control possible: the same
per-layer ratios, a different choice of filters.

How far a diagram moves: for each layer, :func:`layer_damage_curve` prunes the least salient
``r * n`` neurons (the criterion's salience-ranked subset, the seed of its genetic algorithm)
for ``r`` on a grid, and measures the diagram distance between the layer and the kept subset,
divided by the distance between the layer's diagram and the empty diagram (its total
persistence): 0 = the diagram did not move, 1 = all of it is gone. The criterion is the
Topological Pruner's (:func:`~nni_topo_pruner.engine.build_criterion` options, default H0,
Wasserstein-1, zero-anchored weight cloud).

Cost: ``budget='flops'`` counts the multiply-accumulates left (one forward pass on
``dummy_input`` measures each Conv/Linear layer; a layer shrinks with its kept output
channels and with the kept outputs of the layer that feeds it, found on the ``torch.fx``
graph through channel-preserving operations), ``budget='channels'`` counts output channels.

The allocation is greedy over the grid: starting from nothing pruned, repeatedly take the
step (raising one layer's ratio to a higher grid point) with the least damage per unit of
cost saved, until the cost is down to the uniform list's.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3))
    >>> _ = torch.manual_seed(0)
    >>> configs, layers = topological_config_list(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
    ...                                           torch.rand(1, 3, 16, 16), progress=False)
    >>> sorted(entry["op_names"][0] for entry in configs)
    ['0', '2']
    >>> all(0.0 <= entry["sparse_ratio"] <= 0.9 for entry in configs)
    True
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .data_collector import check_finite_weights, weight_point_cloud
from .engine import AnchoredFitness, analyse_unit, build_criterion, check_zero_anchor, salience_seed
from .metric_calculator import MetricCalculator
from .topology.diagram_distance import diagram_distance
from .topology.validation import InvalidParameterError, check_choice, check_number

logger = logging.getLogger(__name__)

SUPPORTED_BUDGETS = ("flops", "channels")
_SUPPORTED_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


@dataclass
class LayerAllocation:
    """One layer's share of the budget.

    Attributes:
        name: module name.
        n: output channels (neurons).
        ratios: the grid of sparse ratios the damage was measured at (``ratios[0] == 0``).
        damage: relative diagram movement at each grid ratio (0 = none, 1 = all of it).
        uniform_ratio: the ratio the uniform config list gave this layer.
        sparse_ratio: the allocated ratio.
    """

    name: str
    n: int
    ratios: np.ndarray
    damage: np.ndarray
    uniform_ratio: float
    sparse_ratio: float = 0.0

    def pruned(self, ratio: float) -> int:
        """Channels NNI prunes at ``ratio`` (``int(n * ratio)``, as its ``generate_sparsity``)."""
        return int(self.n * ratio)


def _check_options(budget: str, max_layer_ratio: float, grid_step: float) -> Tuple[str, float, float]:
    budget = check_choice(budget, "budget", SUPPORTED_BUDGETS)
    max_layer_ratio = check_number(max_layer_ratio, "max_layer_ratio", minimum=0, maximum=1)
    if not 0 < max_layer_ratio < 1:  # 0 prunes nothing; 1 would allow removing a whole layer
        raise InvalidParameterError(f"max_layer_ratio must lie strictly between 0 and 1, got {max_layer_ratio!r}")
    grid_step = check_number(grid_step, "grid_step", minimum=0, maximum=max_layer_ratio)
    if grid_step == 0:
        raise InvalidParameterError(f"grid_step must lie in (0, max_layer_ratio={max_layer_ratio}], got {grid_step!r}")
    return budget, max_layer_ratio, grid_step


def layer_damage_curve(calculator: MetricCalculator, points: np.ndarray, ratios: Sequence[float], *,
                       zero_anchor: bool = False) -> np.ndarray:
    """Relative diagram movement of a layer's cloud when its ``int(n * r)`` least salient
    neurons are pruned, for each ``r`` in ``ratios``: ``d(D, D_kept) / d(D, empty)``.

    Example:
        >>> calc = MetricCalculator(distance="wasserstein")
        >>> cloud = np.array([[0.0, 1.0], [0.0, 1.1], [5.0, 0.0], [9.0, 9.0]])
        >>> curve = layer_damage_curve(calc, cloud, [0.0, 0.25, 0.75], zero_anchor=True)
        >>> float(curve[0]), bool(curve[1] < curve[2] <= 1.0)
        (0.0, True)
    """
    unit = analyse_unit(calculator, points, zero_anchor=zero_anchor)
    fitness = calculator.subset_fitness(unit.topology)
    if unit.zero_anchor:
        fitness = AnchoredFitness(fitness)
    empty = {dim: np.zeros((0, 2)) for dim in calculator.homology_dims}
    total = diagram_distance(unit.topology.diagrams, empty, calculator.distance, order=calculator.wasserstein_order)
    keeps = [salience_seed(unit.canonical_salience, unit.n - int(unit.n * r)) for r in ratios]
    moved = np.asarray(fitness.batch(keeps), dtype=np.float64)
    if total <= 0:  # every neuron at one point: nothing to move, pruning costs nothing topologically
        return np.zeros(len(ratios))
    return moved / total


def layer_macs(model: torch.nn.Module, dummy_input: Any) -> Dict[str, float]:
    """Multiply-accumulates of every Conv/Linear module on one forward pass of ``dummy_input``
    (batch of one assumed; modules called several times are counted once per call)."""
    macs: Dict[str, float] = {}
    handles = []

    def hook(name: str):
        def record(module: torch.nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, torch.nn.modules.conv._ConvNd):
                positions = output[0].numel() // output.shape[1]  # output spatial positions
            else:
                positions = output.numel() // output.shape[-1] // output.shape[0]  # leading dims but the batch
            macs[name] = macs.get(name, 0.0) + float(module.weight.numel() * max(positions, 1))
        return record

    for name, module in model.named_modules():
        if isinstance(module, _SUPPORTED_LAYERS):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*dummy_input) if isinstance(dummy_input, tuple) else model(dummy_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


# operations that keep a tensor's channels one for one (so a consumer's input channels are
# its producer's output channels); anything else (add, cat, reshape of channels) stops the search
_CHANNEL_PRESERVING_MODULES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.ReLU, torch.nn.ReLU6,
                               torch.nn.LeakyReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Tanh,
                               torch.nn.Hardswish, torch.nn.modules.pooling._MaxPoolNd,
                               torch.nn.modules.pooling._AvgPoolNd, torch.nn.modules.pooling._AdaptiveAvgPoolNd,
                               torch.nn.modules.pooling._AdaptiveMaxPoolNd, torch.nn.Dropout, torch.nn.Identity,
                               torch.nn.Flatten)
_CHANNEL_PRESERVING_FUNCTIONS = {"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "flatten", "max_pool1d",
                                 "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                                 "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "dropout",
                                 "contiguous"}


def channel_producers(model: torch.nn.Module, names: Sequence[str]) -> Dict[str, str]:
    """``{consumer: producer}``: for each Conv/Linear module whose input channels are, through
    channel-preserving operations only, the output channels of a layer in ``names``.

    Found on the ``torch.fx`` graph; raises ``ValueError`` if the model cannot be traced.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # noqa: BLE001 - any tracing failure gets the same advice
        raise ValueError(f"budget='flops' needs a torch.fx-traceable model to find which layer feeds which "
                         f"({type(error).__name__}: {error}); use budget='channels'") from error
    modules = dict(model.named_modules())
    targets = set(names)
    producers: Dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _SUPPORTED_LAYERS):
            continue
        source = node.args[0] if node.args else None
        while isinstance(source, torch.fx.Node):
            if source.op == "call_module" and source.target in targets:
                producers[node.target] = source.target
                break
            preserving = (
                (source.op == "call_module" and isinstance(modules[source.target], _CHANNEL_PRESERVING_MODULES))
                or (source.op in ("call_function", "call_method")
                    and getattr(source.target, "__name__", source.target) in _CHANNEL_PRESERVING_FUNCTIONS))
            if not preserving or not source.args:
                break
            source = source.args[0]
    return producers


def kept_macs(macs: Mapping[str, float], producers: Mapping[str, str], keep: Mapping[str, float]) -> float:
    """MACs left when each layer in ``keep`` keeps that fraction of its output channels: a layer
    shrinks with its own kept outputs and with its producer's (its inputs).

    Example:
        >>> kept_macs({"a": 100.0, "b": 200.0}, {"b": "a"}, {"a": 0.5, "b": 0.5})
        100.0
    """
    return float(sum(value * keep.get(name, 1.0) * keep.get(producers.get(name, ""), 1.0)
                     for name, value in macs.items()))


def _uniform_ratios(model: torch.nn.Module, config_list: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """``{module name: sparse_ratio}`` of a config list, later entries overriding earlier ones
    (NNI's rule); modules are selected by NNI's own ``select_modules_by_config``."""
    from nni.compression.base.config import select_modules_by_config

    from . import compat
    from .checks import check_config_list

    compat.apply()  # NNI is about to be used (idempotent)
    check_config_list(model, list(config_list), require_ratio=False)  # unknown op_names: NNI's bare KeyError
    ratios: Dict[str, float] = {}
    for index, entry in enumerate(config_list):
        unknown = set(entry) - {"op_names", "op_types", "op_names_re", "exclude_op_names", "exclude_op_types",
                                "exclude_op_names_re", "sparse_ratio", "exclude"}
        if unknown:
            raise ValueError(f"config_list[{index}] has keys {sorted(unknown)} that topological allocation does not "
                             f"support; it allocates one sparse_ratio per layer (no global groups, thresholds, "
                             f"dependency groups or granularity)")
        selected, _, _ = select_modules_by_config(model, dict(entry))
        for name, module in selected.items():
            if entry.get("exclude"):
                ratios.pop(name, None)
                continue
            if not isinstance(module, _SUPPORTED_LAYERS):
                raise ValueError(f"config_list[{index}] selects {name!r} ({type(module).__name__}); topological "
                                 f"allocation supports Conv1d/2d/3d and Linear layers")
            if getattr(module, "groups", 1) != 1:
                raise ValueError(f"config_list[{index}] selects {name!r}, a grouped convolution: its channels are "
                                 f"coupled with its input's, which per-layer allocation does not model; exclude it")
            ratio = entry.get("sparse_ratio")
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                raise ValueError(f"config_list[{index}]['sparse_ratio'] must be a number in [0, 1), got {ratio!r}")
            ratios[name] = float(ratio)
    if not ratios:
        raise ValueError("config_list selects no layer of the model")
    return ratios


def allocate(layers: Sequence[LayerAllocation], cost: Callable[[Mapping[str, float]], float], target: float,
             max_layer_ratio: float) -> None:
    """Set each layer's ``sparse_ratio`` so that ``cost(kept fraction per layer) <= target``,
    greedily: take the step (one layer to a higher grid ratio) with the least damage per unit
    of cost saved, until the target is met. A step never jumps past the first grid ratio that
    meets the target, so the result prunes at most one grid step more than asked. Ties go to
    the layer listed first."""
    position = [0] * len(layers)  # index into each layer's grid

    def keep_fractions(positions: Sequence[int]) -> Dict[str, float]:
        return {layer.name: 1.0 - layer.pruned(layer.ratios[k]) / layer.n for layer, k in zip(layers, positions)}

    current = cost(keep_fractions(position))
    while current > target + 1e-9:
        best = None
        for i, layer in enumerate(layers):
            for j in range(position[i] + 1, len(layer.ratios)):
                if layer.ratios[j] > max_layer_ratio + 1e-12:
                    break
                trial = list(position)
                trial[i] = j
                saved = current - cost(keep_fractions(trial))
                if saved <= 0:
                    continue
                slope = (layer.damage[j] - layer.damage[position[i]]) / saved
                if best is None or slope < best[0] - 1e-15:
                    best = (slope, i, j)
                if current - saved <= target + 1e-9:
                    break  # a longer jump would overshoot the budget by more than one grid step
        if best is None:
            logger.warning("topological allocation: every layer is at max_layer_ratio=%g before the budget is met "
                           "(cost %.4g, target %.4g)", max_layer_ratio, current, target)
            break
        _, i, j = best
        position[i] = j
        current = cost(keep_fractions(position))
    for i, layer in enumerate(layers):
        layer.sparse_ratio = float(layer.ratios[position[i]])


def topological_config_list(model: torch.nn.Module, config_list: Sequence[Mapping[str, Any]], dummy_input: Any,
                            *, budget: str = "flops", max_layer_ratio: float = 0.9, grid_step: float = 0.05,
                            progress: bool = True, **criterion_options: Any
                            ) -> Tuple[List[Dict[str, Any]], List[LayerAllocation]]:
    """Per-layer NNI config list that prunes as much as ``config_list`` (in FLOPs or channels),
    with the ratios allocated by topology.

    Args:
        model: the (trained) model; not modified.
        config_list: NNI config list with a ``sparse_ratio`` per selected layer (e.g. uniform).
        dummy_input: an input for one forward pass (to count FLOPs); unused with ``budget='channels'``.
        budget: ``'flops'`` (default: the multiply-accumulates left, each layer shrinking with its
            own kept outputs and its producer's) or ``'channels'`` (output channels left).
        max_layer_ratio: no layer is pruned beyond this ratio.
        grid_step: spacing of the ratios at which each layer's damage is measured.
        progress: a tqdm bar over layers.
        criterion_options: options of :func:`~nni_topo_pruner.engine.build_criterion`
            (homology_dims, distance, cloud_metric, wasserstein_order) and ``zero_anchor``.

    Returns:
        ``(config list, layers)``: one ``{'op_names': [name], 'sparse_ratio': r}`` per layer,
        and the per-layer :class:`LayerAllocation` (damage curves) for reporting.
    """
    budget, max_layer_ratio, grid_step = _check_options(budget, max_layer_ratio, grid_step)
    zero_anchor = criterion_options.pop("zero_anchor", None)
    allowed = {"homology_dims", "distance", "cloud_metric", "wasserstein_order"}
    unknown = set(criterion_options) - allowed
    if unknown:
        raise InvalidParameterError(f"unknown criterion option(s) {sorted(unknown)}; "
                                    f"allowed: {sorted(allowed | {'zero_anchor'})}")
    calculator, _ = build_criterion(**criterion_options)
    anchored = check_zero_anchor(zero_anchor, calculator.cloud_metric)
    uniform = _uniform_ratios(model, config_list)
    names = [name for name, _ in model.named_modules() if name in uniform]  # model order
    modules = dict(model.named_modules())
    grid = np.round(np.arange(0.0, max_layer_ratio + 1e-9, grid_step), 10)
    layers = []
    for name in tqdm(names, desc="topological allocation", unit="layer", disable=not progress):
        weight = modules[name].weight
        check_finite_weights(name, weight)
        points = weight_point_cloud(weight)
        damage = layer_damage_curve(calculator, points, grid, zero_anchor=anchored)
        layers.append(LayerAllocation(name, points.shape[0], grid, damage, uniform[name]))

    if budget == "flops":
        macs, producers = layer_macs(model, dummy_input), channel_producers(model, names)

        def cost(keep: Mapping[str, float]) -> float:
            return kept_macs(macs, producers, keep)
    else:
        sizes = {layer.name: layer.n for layer in layers}

        def cost(keep: Mapping[str, float]) -> float:
            return float(sum(sizes[name] * fraction for name, fraction in keep.items()))

    target = cost({layer.name: 1.0 - layer.pruned(layer.uniform_ratio) / layer.n for layer in layers})
    allocate(layers, cost, target, max_layer_ratio)
    kept = cost({layer.name: 1.0 - layer.pruned(layer.sparse_ratio) / layer.n for layer in layers})
    logger.info("topological allocation (%s left %.4g, uniform %.4g): %s", budget, kept, target,
                ", ".join(f"{layer.name} {layer.sparse_ratio:g}" for layer in layers))
    return [{"op_names": [layer.name], "sparse_ratio": layer.sparse_ratio} for layer in layers], layers
