"""Compressor module (thesis 6.2): the Topological Pruner as an NNI 3.0 ``Pruner``.

The thesis' modules map onto NNI's three hooks, each visited once, each handing its result
to the next (``generate_masks`` chains them; nothing crosses through ``self``):

====================================  ======================================================
thesis module                          here
====================================  ======================================================
data collector (6.3)                   ``_collect_data`` -> pruning units with their clouds
                                       (:mod:`.data_collector`, :mod:`.feature_collector`)
metric calculator (6.4)                ``_calculate_metrics`` -> :class:`UnitMetrics`
                                       (:mod:`.engine`, :mod:`.metric_calculator`)
sparsity allocator (6.6)               ``_generate_sparsity``: budgets by NNI's rules
                                       (:mod:`.sparsity_allocator`)
evolutionary module (6.5)              ``_generate_sparsity``: which channels each unit keeps
                                       (:mod:`.evolutionary`), then the masks
speedup module (6.7)                   NNI ``ModelSpeedup`` (:mod:`.speedup`)
====================================  ======================================================

Example
-------
>>> import torch
>>> from nni_topo_pruner import TopologicalPruner
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3))
>>> pruner = TopologicalPruner(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}], seed=0)
>>> _, masks = pruner.compress()
>>> pruner.unwrap_model()
>>> int(masks['0']['weight'].sum(dim=(1, 2, 3)).count_nonzero())
8
"""
from __future__ import annotations

import logging
import multiprocessing
import numbers
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from nni.compression.pruning.tools import active_sparse_targets_filter
from nni.compression.utils.evaluator import Evaluator
from tqdm.auto import tqdm

from . import sparsity_allocator as allocator
from .one_shot import OneShotPruner
from .data_collector import PruningUnit, check_module_supported, collect_pruning_units
from .feature_collector import CALIBRATION_PRECISIONS, FeatureCollector, feed_calibration_loader
from .engine import (DEFAULT_CLOUD_METRIC, DEFAULT_DISTANCE, DEFAULT_HOMOLOGY_DIMS, DEFAULT_WASSERSTEIN_ORDER,
                     DEFAULT_ZERO_ANCHOR, AnalysedUnit, check_zero_anchor, KeptNeurons, analyse_unit, build_criterion, choose_kept, unit_ga_config)
from .evolutionary import GAConfig
from .masks_io import Masks
from .metric_calculator import MetricCalculator
from .report import PruningReport, UnitReport, diagrams_to_lists
from .checks import check_calibration_loader, check_config_list
from .tied import check_no_tied_targets
from .topology import persistence_diagrams
from .topology.validation import check_bool, check_choice, check_int

_logger = logging.getLogger(__name__)

_SUPPORTED_GRANULARITY = ("default", "out_channel")
SUPPORTED_CLOUDS = ("weights", "activations")


@dataclass
class UnitMetrics:
    """What ``_calculate_metrics`` hands to ``_generate_sparsity``.

    Attributes:
        units: the pruning units, as collected.
        analysed: per unit, its topology and salience (:class:`~.engine.AnalysedUnit`).
        seconds: per unit, the time its analysis took.
        salience: the salience as NNI metrics (:func:`~.sparsity_allocator.salience_metrics`),
            what NNI's sparsity rules rank to set the budgets.
    """

    units: List[PruningUnit]
    analysed: List[AnalysedUnit]
    seconds: List[float]
    salience: Masks


class TopologicalPruner(OneShotPruner):
    """Prune neurons / filters whose removal moves the layer's persistence diagram least.

    For every target layer the weight rows form a point cloud (one point per output neuron
    or filter). Each point's salience is how far the layer's persistence diagram moves when
    that point is left out (1-Wasserstein distance between diagrams by default). A genetic
    algorithm (:mod:`.evolutionary`, run per layer by :mod:`.engine`) then chooses which
    ``n - int(sparse_ratio * n)`` points to keep: its chromosomes are keep-masks of exactly
    that many points, its first population holds the salience-ranked subset plus random
    subsets, its fitness (minimised) is the diagram distance between the kept cloud and the
    whole layer, it stops early once the best subset reaches the fitness's proven lower bound
    (often the salience-ranked start, which is then returned without breeding), and its best
    subset is finished by a deterministic swap search. Every tie is broken in an order derived
    from the points themselves, so permuting a layer's neurons permutes the masks alike.
    Config lists mean exactly what they mean for NNI's ``L1NormPruner``; the masks feed NNI's
    ``ModelSpeedup``.

    Parameters
    ----------
    model, config_list, evaluator
        As for any NNI pruner. ``sparse_threshold`` and granularities other than
        ``out_channel`` are not supported (ValueError).
    homology_dims
        Homology dimensions of the persistence diagrams: ``(0,)`` (default) or ``(0, 1)``.
    distance
        Distance between diagrams: ``'wasserstein'`` (default) or ``'bottleneck'``.
    cloud_metric
        Metric between neurons' weight vectors, e.g. ``'euclidean'`` (default), ``'cosine'``.
    wasserstein_order
        Order ``p`` of the Wasserstein distance (default ``1.0``).
    population_size, generations, crossover_probability, mutation_probability, elitism
        Genetic-algorithm settings: ``None`` = :class:`~.evolutionary.GAConfig`'s defaults
        (24 individuals, 30 generations); crossover ``0.8``, mutation ``0.2``, elitism on.
    seed
        Seed of the GA (default ``0``; same seed -> same masks; each layer's GA is seeded from
        it and the layer's name); ``None`` for a fresh random run. The
        caller's global ``random`` / NumPy / torch RNG states are left as they were.
    search
        ``'ga'`` (default): the thesis' genetic algorithm, then a deterministic polish;
        ``'local'``: the polish of the salience-ranked start alone, no GA. Deterministic along one
        path, so a tiny change of the inputs cannot send it elsewhere (see
        :mod:`~nni_topo_pruner.evolutionary`); its answer is a local optimum near the salience ranking.
    zero_anchor
        Add the zero vector, what a pruned neuron becomes, to every cloud (always kept):
        salience then measures how far the diagram moves when a neuron is zeroed, so small
        neurons and redundant neurons are both cheap to prune. ``None`` (default): on for
        weight clouds, off under ``cloud_metric='cosine'`` and for activation clouds.
    cloud
        What a neuron's point is: ``'weights'`` (default; its weight row, conv filters
        flattened) or ``'activations'`` (its mean output on each of ``num_images`` calibration
        images, centred and scaled to unit length per channel, so that distances measure how
        differently two channels respond, whatever BatchNorm does to their scale and shift).
    calibration_loader, num_images
        Calibration batches (tensors or ``(inputs, targets)``) for ``cloud='activations'``, and
        how many images to use.
    calibration_precision
        ``'float64'`` (default): the calibration forward pass runs in float64, so that the
        activation cloud, and the masks, do not depend on the CPU's float32 rounding (the
        model's tensors are put back afterwards, bit for bit); ``'model'``: in the model's own
        precision (faster; masks may differ between machines).
    workers
        Processes over which layers are analysed in parallel (``1`` = in this process).
    progress
        Show a tqdm progress bar over the layers.

    Gradual pruning: as the bound pruner of NNI's ``AGPPruner`` / ``LinearPruner`` (with an
    evaluator) the masks are regenerated at the schedule's steps on the current trained, masked
    weights; channels already masked out stay out (each step keeps a subset of the previous
    step's channels) and the criterion sees only the live ones. ``pruner.reports`` holds one
    report per step, ``pruner.steps`` their ratios, counts and seconds.
    """

    requires_calibration_data = False
    accepts_calibration_data = True  # used by cloud='activations'

    def __init__(self, model: torch.nn.Module, config_list: List[Dict], evaluator: Optional[Evaluator] = None, *,
                 homology_dims: Sequence[int] = DEFAULT_HOMOLOGY_DIMS, distance: str = DEFAULT_DISTANCE,
                 cloud_metric: str = DEFAULT_CLOUD_METRIC, wasserstein_order: float = DEFAULT_WASSERSTEIN_ORDER,
                 population_size: Optional[int] = None,
                 generations: Optional[int] = None, crossover_probability: float = 0.8,
                 mutation_probability: float = 0.2, elitism: bool = True, seed: Optional[int] = 0, search: str = "ga",
                 cloud: str = "weights", zero_anchor: Optional[bool] = DEFAULT_ZERO_ANCHOR, calibration_loader: Optional[Iterable] = None, num_images: int = 256,
                 calibration_precision: str = "float64", workers: int = 1, progress: bool = True, existed_wrappers=None):
        # Validate our own options before NNI wraps the model, so a bad option leaves it untouched.
        seed = check_int(seed, "seed", 0, allow_none=True)  # np.int64(1) -> 1: random.seed takes no NumPy ints
        self.calculator, self.ga_config = build_criterion(
            homology_dims=homology_dims, distance=distance, cloud_metric=cloud_metric,
            wasserstein_order=wasserstein_order, population_size=population_size, generations=generations,
            crossover_probability=crossover_probability, mutation_probability=mutation_probability, elitism=elitism,
            seed=seed, search=search)
        self.workers = check_int(workers, "workers", 1)
        cloud = check_choice(cloud, "cloud", SUPPORTED_CLOUDS)
        num_images = check_int(num_images, "num_images", 3)
        if cloud == "activations" and calibration_loader is None:
            raise ValueError("cloud='activations' needs calibration images: pass calibration_loader= (batches of "
                             "inputs or (inputs, targets)), or use cloud='weights'")
        if calibration_loader is not None:
            check_calibration_loader(calibration_loader)
        self.zero_anchor = check_zero_anchor(zero_anchor, self.calculator.cloud_metric, cloud)
        self.cloud, self.calibration_loader, self.num_images = cloud, calibration_loader, num_images
        self.calibration_precision = check_choice(calibration_precision, "calibration_precision",
                                                  CALIBRATION_PRECISIONS)
        self.progress = check_bool(progress, "progress")
        self.report: Optional[PruningReport] = None
        #: one report per generate_masks() call (a schedule's steps); ``report`` is the last
        self.reports: List[PruningReport] = []
        config_list = normalised_config_list(config_list)
        check_config_list(model, config_list)  # NNI's own errors for these are bare asserts / KeyErrors / silence
        check_no_tied_targets(model, config_list)  # NNI's wrapping would untie them silently
        super().__init__(model, config_list, evaluator, existed_wrappers)

    # ----------------------------------------------------------------- validation
    def _check_target_spaces(self) -> None:
        for module_name, spaces in self._target_spaces.items():
            module = self._module_wrappers[module_name].module
            for target_name, space in spaces.items():
                if space.sparse_ratio is None and space.sparse_threshold is None:
                    continue  # e.g. the bias, aligned to the weight
                if space.sparse_threshold is not None:
                    raise ValueError(f"{module_name}: 'sparse_threshold' is not supported by TopologicalPruner "
                                     f"(topological scores have no absolute scale); use 'sparse_ratio'")
                if not 0.0 <= space.sparse_ratio < 1.0:
                    raise ValueError(f"{module_name}: 'sparse_ratio' must be in [0, 1), got {space.sparse_ratio!r}")
                if target_name != "weight":
                    raise ValueError(f"{module_name}: TopologicalPruner prunes output neurons through the 'weight' "
                                     f"target; target {target_name!r} cannot carry a sparse_ratio")
                if space.granularity != "out_channel":
                    raise ValueError(f"{module_name}: 'granularity' {space.granularity!r} is not supported; "
                                     f"TopologicalPruner prunes whole output channels ('out_channel')")
                check_module_supported(module_name, module, space)

    # ----------------------------------------------------------------- NNI hooks
    def _collect_data(self) -> List[PruningUnit]:
        """Data collector: the active weight targets grouped into pruning units, each with
        its point cloud (weight rows, or channel responses for ``cloud='activations'``), of the
        channels that the current masks keep (the weights as the masked network uses them)."""
        data = active_sparse_targets_filter(self._target_spaces)
        for module_name, targets in data.items():
            for target_name, weight in targets.items():
                mask = self._target_spaces[module_name][target_name].mask
                if mask is not None:
                    targets[target_name] = weight * mask.to(weight)
        units = allocator.without_masked_channels(collect_pruning_units(data, self._target_spaces),
                                                  self._target_spaces)
        if self.cloud == "activations":
            units = self._with_activation_clouds(units)
        return units

    def _calculate_metrics(self, units: List[PruningUnit]) -> UnitMetrics:
        """Metric calculator: each unit's distances, diagrams and salience (in canonical order)."""
        analysed, seconds = self._map(_analyse_unit, [(self.calculator, u.points, self.zero_anchor) for u in units],
                                      "topology")
        for unit, result in zip(units, analysed):
            if result.all_tied:
                _logger.warning("TopologicalPruner: every neuron of %r has the same salience (%s, %s); its mask is "
                                "decided by the genetic algorithm and, failing that, by neuron norm", unit.name,
                                self.calculator.distance, self.calculator.cloud_metric)
        salience = allocator.salience_metrics(units, [a.salience for a in analysed], self._target_spaces)
        return UnitMetrics(units, analysed, seconds, salience)

    def _generate_sparsity(self, metrics: UnitMetrics) -> Masks:
        """Sparsity allocator and evolutionary module: budgets by NNI's rules, the GA's choice
        per unit, and the masks of the chosen channels."""
        started = time.perf_counter()
        units, analysed = metrics.units, metrics.analysed
        budgets = allocator.neuron_budgets(units, [a.salience for a in analysed], metrics.salience,
                                           self._target_spaces, ranks=[a.ranks for a in analysed])
        jobs = [(self.calculator, result, n_keep, unit_ga_config(self.ga_config, unit.name))
                for unit, result, n_keep in zip(units, analysed, budgets)]
        kept, ga_seconds = self._map(_choose_kept, jobs, "evolution")
        self.report = self._build_report(units, analysed, kept, metrics.seconds, ga_seconds)
        self.reports.append(self.report)
        _logger.info("TopologicalPruner: %d units in %.2f s (analysis) + %.2f s", len(units), sum(metrics.seconds),
                     time.perf_counter() - started)
        return allocator.unit_masks(units, [k.keep_mask for k in kept], self._target_spaces)

    # ----------------------------------------------------------------- helpers
    def _with_activation_clouds(self, units: List[PruningUnit]) -> List[PruningUnit]:
        """Replace each unit's weight cloud by its channels' activation cloud."""
        names = sorted({m for unit in units for m, _ in unit.members})
        modules = {name: self._module_wrappers[name].module for name in names}
        collector = FeatureCollector(modules, self.num_images, max_feature_dim=1, reduction="avgpool",
                                     seed=self.ga_config.seed or 0)
        with collector.hooked():
            feed_calibration_loader(self.bound_model, self.calibration_loader, collector, self.calibration_precision)
        features = {name: f[:, :, 0].double().numpy() for name, f in collector.result().items()}
        for name, values in features.items():
            if not np.all(np.isfinite(values)):
                raise ValueError(f"layer {name!r}: its outputs on the calibration images hold NaN/Inf; check the "
                                 f"images and the weights of the layers up to {name!r}")
        return [replace(unit, points=np.concatenate(
            [channel_response_cloud(features[m][:, unit.channels]) for m, _ in unit.members], axis=1))
            for unit in units]


    def _map(self, function, jobs: List[Tuple], label: str):
        results, seconds = [None] * len(jobs), [0.0] * len(jobs)
        bar = tqdm(total=len(jobs), desc=f"TopologicalPruner {label}", unit="layer",
                   disable=not self.progress or len(jobs) == 0, leave=False)
        if self.workers == 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i], seconds[i] = function(*job)
                bar.update()
        else:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context) as pool:
                futures = [pool.submit(function, *job) for job in jobs]
                for i, future in enumerate(futures):
                    results[i], seconds[i] = future.result()
                    bar.update()
        bar.close()
        return results, seconds

    def _build_report(self, units: Sequence[PruningUnit], analysed: Sequence[AnalysedUnit],
                      kept: Sequence[KeptNeurons], analyse_seconds, ga_seconds) -> PruningReport:
        options = {"homology_dims": list(self.calculator.homology_dims), "distance": self.calculator.distance,
                   "cloud_metric": self.calculator.cloud_metric, "wasserstein_order": self.calculator.wasserstein_order,
                   "cloud": self.cloud, "zero_anchor": self.zero_anchor, "ga": asdict(self.ga_config), "workers": self.workers}
        if self.cloud == "activations":
            options.update(num_images=self.num_images, calibration_precision=self.calibration_precision)
        report = PruningReport(options=options)
        for unit, result, choice, t_a, t_g in zip(units, analysed, kept, analyse_seconds, ga_seconds):
            topology, ga = result.topology, choice.ga
            kept_cloud = result.cloud_indices(ga.keep_mask)
            after = persistence_diagrams(topology.distances[np.ix_(kept_cloud, kept_cloud)],
                                         self.calculator.homology_dims)
            report.units.append(UnitReport(
                name=unit.name, members=[f"{m}.{t}" for m, t in unit.members], neurons=unit.n,
                kept=int(choice.keep_mask.sum()), kept_channels=unit.channels[choice.keep_mask].tolist(),
                salience=result.salience.tolist(), salience_tied=result.all_tied,
                ga_history=[float(v) for v in ga.history], initial_distance=float(ga.initial_fitness),
                final_distance=float(ga.best_fitness), evaluations=int(ga.evaluations),
                ga_distance=float(ga.ga_fitness), lower_bound=float(ga.lower_bound),
                polish_swaps=int(ga.polish_swaps), converged=bool(ga.converged),
                seconds_analyse=float(t_a), seconds_ga=float(t_g),
                diagram_before=diagrams_to_lists(topology.diagrams), diagram_after=diagrams_to_lists(after)))
        return report


def channel_response_cloud(responses: np.ndarray) -> np.ndarray:
    """(images, channels) mean activations -> one point per channel: its responses centred
    over the images and scaled to unit length (a channel with constant response maps to the
    origin). Euclidean distance between two points is then ``sqrt(2 (1 - correlation))``.

    >>> channel_response_cloud(np.array([[1.0, 2.0, 5.0], [3.0, 6.0, 5.0]])).round(3).tolist()
    [[-0.707, 0.707], [-0.707, 0.707], [0.0, 0.0]]
    """
    centred = (responses - responses.mean(axis=0, keepdims=True)).T
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    scale = np.where(norms > 1e-12 * max(1.0, float(np.abs(responses).max(initial=0.0))), norms, np.inf)
    return centred / scale


def _analyse_unit(calculator: MetricCalculator, points: np.ndarray,
                  zero_anchor: bool) -> Tuple[AnalysedUnit, float]:
    started = time.perf_counter()
    return analyse_unit(calculator, points, zero_anchor=zero_anchor), time.perf_counter() - started


def _choose_kept(calculator: MetricCalculator, unit: AnalysedUnit, n_keep: int,
                 config: GAConfig) -> Tuple[KeptNeurons, float]:
    started = time.perf_counter()
    return choose_kept(calculator, unit, n_keep, config), time.perf_counter() - started


_RATIO_KEYS = ("sparse_ratio", "sparsity", "sparsity_per_layer", "total_sparsity", "max_sparse_ratio",
               "min_sparse_ratio", "max_sparsity_per_layer")


def normalised_config_list(config_list: Any) -> List[Dict]:
    """A copy of ``config_list`` with every ratio given as a plain ``float`` (NNI's schema
    rejects ``0`` and NumPy scalars), after rejecting, before NNI wraps the model, values we
    cannot honour (each error names the entry and the key).

    >>> import numpy as np
    >>> normalised_config_list([{"op_types": ["Conv2d"], "sparse_ratio": np.float32(0.5)}])
    [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
    """
    _check_config_list(config_list)
    normalised = []
    for config in config_list:
        config = dict(config)
        for key in _RATIO_KEYS:
            if isinstance(config.get(key), numbers.Real) and not isinstance(config[key], bool):
                config[key] = float(config[key])
        if isinstance(config.get("target_settings"), dict):
            config["target_settings"] = {
                name: ({k: float(v) if k in _RATIO_KEYS and isinstance(v, numbers.Real) and not isinstance(v, bool)
                        else v for k, v in setting.items()} if isinstance(setting, dict) else setting)
                for name, setting in config["target_settings"].items()}
        normalised.append(config)
    return normalised


def _check_config_list(config_list: Any) -> None:
    """Reject, before NNI wraps the model, config values we cannot honour."""
    if not isinstance(config_list, list) or not all(isinstance(c, dict) for c in config_list):
        raise ValueError("config_list must be a list of dicts (an NNI config list)")
    for index, config in enumerate(config_list):
        settings = [config, *[s for s in (config.get("target_settings") or {}).values() if isinstance(s, dict)]]
        for setting in settings:
            if "sparse_threshold" in setting:
                raise ValueError(f"config_list[{index}]: 'sparse_threshold' is not supported by TopologicalPruner; "
                                 f"use 'sparse_ratio'")
            granularity = setting.get("granularity", "default")
            if granularity not in _SUPPORTED_GRANULARITY:
                raise ValueError(f"config_list[{index}]: 'granularity' {granularity!r} is not supported; "
                                 f"TopologicalPruner prunes whole output channels ('out_channel')")
            for key in ("sparse_ratio", "sparsity", "sparsity_per_layer", "total_sparsity"):
                value = setting.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                          or not 0.0 <= float(value) < 1.0):
                    raise ValueError(f"config_list[{index}]: {key!r} must be a number in [0, 1), got {value!r}")
