"""The Topological Pruner's criterion as a `Torch-Pruning <https://github.com/VainF/Torch-Pruning>`_
importance: a second front door to the same engine as :class:`~nni_topo_pruner.TopologicalPruner`.

Torch-Pruning (``torch-pruning`` 1.6, DepGraph) rebuilds models that NNI 3.0's ``ModelSpeedup``
cannot (ConvNeXt, ViT, Swin, ShuffleNet). Its pruners ask an *importance* for one score per
channel of each dependency *group* (layers whose channels are removed together) and remove the
lowest-scored channels. :class:`TopologicalImportance` answers with the engine's choice:

1. the group's point cloud is its coupled rows: for every member whose *output* channels the
   group removes (Conv / Linear / the out-projection of a ``MultiheadAttention``), its weight
   rows (conv filters flattened, ``out x in*kh*kw``), concatenated along the features in the
   order of the members' module names -- exactly the cloud of an NNI dependency group in
   :mod:`nni_topo_pruner.data_collector`. A group with no such member (rare) uses its
   consumers' input columns instead;
2. ``analyse_unit`` then ``choose_kept`` (:mod:`nni_topo_pruner.engine`) choose ``n_keep``
   channels, the GA seeded per unit by the unit's name (its module name, or the members' names
   joined by ``+``: the NNI plugin's naming, so the seeds agree);
3. the choice becomes scores: a kept channel scores ``1 + t``, a pruned one ``t``, where
   ``t`` in (0, 1) ranks the channels by salience (ties: the engine's canonical order, larger
   norm first). Every kept channel outranks every pruned one, so a pruner that removes the
   ``n - n_keep`` lowest-scored channels removes exactly the engine's choice.

``n_keep`` is Torch-Pruning's own count for the group. An importance only receives the group,
so :class:`TopologicalImportance` finds the ``tp.pruner.BasePruner`` (or subclass) that is
calling it on the call stack and recomputes the count with that pruner's formula for *local*
pruning (the default): ``n - int(n_initial * (1 - ratio))`` with the pruner's per-step ratio,
its ``pruning_ratio_dict`` entry for the group's layers, channel groups (grouped convs: one
choice shared by every channel group) and ``round_to``. Under ``global_pruning`` or
``isomorphic`` pruning Torch-Pruning ranks channels across groups and its per-group counts are
not known in advance: each group then keeps ``n - int(n * (1 - ratio))`` by the engine, and
Torch-Pruning's cross-group threshold may move a few channels (a warning says so).

Called outside a pruner (``imp(group)``, as Torch-Pruning's own tests and user code call any
importance), there is no count to choose for: the scores are then the criterion's *ranking*,
``t`` above (salience order, ties by the engine's canonical order), each in (0, 1) and no GA
is run; with the ``pruning_ratio`` option the importance instead chooses
``int(n * (1 - pruning_ratio))`` channels by the engine, as inside a pruner.

:class:`BettiImportance` does the same for the BMVC paper's Betti criterion (BettiPruner's scores
from feature maps on calibration images; see its docstring).

What matches the NNI plugin: for the same model, seed, options and per-layer counts, the same
channels are kept (tested on CIFAR VGG-16 and ResNet-18 at ratio 0.5). The counts themselves
agree wherever ``int(n * (1 - r)) == n - int(n * r)`` (e.g. ``r = 0.5`` with an even ``n``):
NNI rounds the pruned count down, Torch-Pruning the kept count.

Example (Torch-Pruning installed: ``pip install 'nni-topo-pruner[torch-pruning]'``):

>>> import torch, torch_pruning as tp
>>> from nni_topo_pruner.torch_pruning import TopologicalImportance
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3))
>>> imp = TopologicalImportance(seed=0, distance="wasserstein")
>>> pruner = tp.pruner.BasePruner(model, torch.rand(1, 3, 16, 16), importance=imp, pruning_ratio=0.5,
...                               ignored_layers=[model[2]])
>>> pruner.step()
>>> model[0].out_channels, imp.choices["0"].n_keep
(8, 8)
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .engine import (DEFAULT_CLOUD_METRIC, DEFAULT_DISTANCE, DEFAULT_HOMOLOGY_DIMS, DEFAULT_WASSERSTEIN_ORDER,
                     DEFAULT_ZERO_ANCHOR, analyse_unit, build_criterion, canonical_ranks, check_zero_anchor,
                     choose_kept, unit_ga_config)
from .topology.ties import tie_groups

logger = logging.getLogger(__name__)

#: The Torch-Pruning release this adapter is tested with (``requirements/tested.txt``).
TESTED_TORCH_PRUNING_VERSION = "1.6.1"

_INSTALL_HINT = ("nni_topo_pruner.torch_pruning needs the optional dependency Torch-Pruning: "
                 "pip install 'nni-topo-pruner[torch-pruning]' (tested with torch-pruning=="
                 f"{TESTED_TORCH_PRUNING_VERSION})")

_STACK_DEPTH = 12  # frames searched for the calling pruner


def import_torch_pruning() -> Any:
    """Import and return the ``torch_pruning`` package, or raise an ``ImportError`` that says how to
    install it. Torch-Pruning is imported only when this adapter is used."""
    try:
        import torch_pruning
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from error
    return torch_pruning


@dataclass
class GroupChoice:
    """The engine's choice for one Torch-Pruning group.

    Attributes:
        name: the unit's name (module name, or member names joined by ``+``); seeds the GA.
        members: module names whose rows form the cloud, in concatenation order.
        root: module name of the group's root (the layer Torch-Pruning built the group from).
        n: channels the choice is over (the group's channels divided by its channel groups).
        n_keep: channels kept.
        kept: kept channel indices (sorted) in the root's indexing, first channel group.
        channel_groups: channel groups sharing the choice (grouped convs, attention heads).
        salience: salience of each channel (stored order); empty when nothing was pruned.
        initial_distance, final_distance: diagram distance of the salience-seeded and the chosen subset.
        cloud: ``'out_rows'`` (members' output rows) or ``'in_columns'`` (consumers' input columns).
    """

    name: str
    members: List[str]
    root: str
    n: int
    n_keep: int
    kept: np.ndarray
    channel_groups: int = 1
    salience: np.ndarray = field(default_factory=lambda: np.zeros(0))
    initial_distance: float = float("nan")
    final_distance: float = float("nan")
    cloud: str = "out_rows"


class TopologicalImportance:
    """Torch-Pruning importance that keeps the channels the Topological Pruner would keep.

    Parameters are the criterion's options of :class:`~nni_topo_pruner.TopologicalPruner`, with
    the same defaults (``homology_dims``, ``distance``, ``cloud_metric``, ``wasserstein_order``,
    ``population_size``, ``generations``, ``crossover_probability``, ``mutation_probability``,
    ``elitism``, ``seed``, ``search``, ``zero_anchor``); only the weight cloud is available here (the pruner's
    ``cloud='activations'``, ``workers`` and ``progress`` are not).

    pruning_ratio
        Used only when the importance is called outside a Torch-Pruning pruner (``imp(group)``):
        the fraction of the group's channels to prune, chosen by the engine (kept channels score
        above 1). ``None`` (the default): such a call returns the criterion's ranking instead
        (salience order, ties by canonical order; scores in (0, 1); no GA). Inside
        ``BasePruner.step()`` the pruner's own ratio, ``pruning_ratio_dict`` and ``round_to``
        decide (see the module docstring).

    regularize_every
        Sparse training (``GroupNormPruner`` / ``GrowingRegPruner``, whose ``regularize()`` asks
        the importance for every group on every batch) gets the criterion's ranking, as a
        direct call does: one topological analysis per group per call (no GA), about what the
        analysis part of one pruning step costs. With ``regularize_every=k`` each group's ranking
        is recomputed on every k-th call only and reused in between, bounding the cost to 1/k
        of that (the weights move little between batches). Default 1: every call.

    After a ``step()``, :attr:`choices` maps each unit's name to its :class:`GroupChoice`.
    """

    def __init__(self, *, homology_dims: Sequence[int] = DEFAULT_HOMOLOGY_DIMS, distance: str = DEFAULT_DISTANCE,
                 cloud_metric: str = DEFAULT_CLOUD_METRIC, wasserstein_order: float = DEFAULT_WASSERSTEIN_ORDER,
                 population_size: Optional[int] = None, generations: Optional[int] = None,
                 crossover_probability: float = 0.8, mutation_probability: float = 0.2, elitism: bool = True,
                 seed: Optional[int] = 0, search: str = "ga", zero_anchor: Optional[bool] = DEFAULT_ZERO_ANCHOR,
                 pruning_ratio: Optional[float] = None, regularize_every: int = 1) -> None:
        from .topology.validation import check_int

        seed = check_int(seed, "seed", 0, allow_none=True)  # np.int64(1) -> 1: random.seed takes no NumPy ints
        self.regularize_every = check_int(regularize_every, "regularize_every", 1)
        self._regularize_cache: Dict[str, Tuple[int, np.ndarray]] = {}
        self.calculator, self.ga_config = build_criterion(
            homology_dims=homology_dims, distance=distance, cloud_metric=cloud_metric,
            wasserstein_order=wasserstein_order, population_size=population_size, generations=generations,
            crossover_probability=crossover_probability, mutation_probability=mutation_probability, elitism=elitism,
            seed=seed, search=search)
        self.zero_anchor = check_zero_anchor(zero_anchor, self.calculator.cloud_metric)
        if pruning_ratio is not None and (isinstance(pruning_ratio, bool) or not isinstance(pruning_ratio, (int, float))
                                          or not 0.0 <= float(pruning_ratio) < 1.0):
            raise ValueError(f"pruning_ratio must be a number in [0, 1) or None, got {pruning_ratio!r}")
        self.pruning_ratio = None if pruning_ratio is None else float(pruning_ratio)
        self.choices: Dict[str, GroupChoice] = {}
        self._warned_shared_scope = False
        tp = import_torch_pruning()
        # A virtual subclass: isinstance(imp, tp.importance.Importance) holds without importing
        # Torch-Pruning when this module is imported.
        tp.pruner.importance.Importance.register(TopologicalImportance)

    # ------------------------------------------------------------------ Torch-Pruning hook
    @torch.no_grad()
    def __call__(self, group: Any, **kwargs: Any) -> Optional[torch.Tensor]:
        """One score per channel of ``group`` (higher = keep), or ``None`` for a group without
        weights to form a cloud (Torch-Pruning then leaves it alone)."""
        tp = import_torch_pruning()
        graph = getattr(group, "_DG", None)
        n_total = len(group[0].idxs)
        pruner, regularizing = _calling_pruner_and_purpose(self, tp)
        channel_groups = int(pruner._get_channel_groups(group)) if pruner is not None else 1
        if channel_groups < 1 or n_total % channel_groups:
            channel_groups = 1
        n = n_total // channel_groups
        # sparse training asks for scores to shrink by, on every batch: the ranking, no count
        n_keep = None if regularizing else self._n_keep(pruner, group, graph, n)
        cloud = _group_cloud(group, graph, tp, n_total)
        if cloud is None:
            logger.debug("TopologicalImportance: group rooted at %s has no Conv/Linear weights; skipped",
                         _name(graph, group[0].dep.target.module))
            return None
        points, members, kind = cloud
        if channel_groups > 1:  # one choice shared by every channel group: channel j's point spans all groups
            points = points.reshape(channel_groups, n, -1).transpose(1, 0, 2).reshape(n, -1)
        if not np.all(np.isfinite(points)):
            raise ValueError(f"group {'+'.join(members)!r} has NaN/Inf weights: a point cloud needs finite "
                             f"coordinates; fix the checkpoint or add the layers to ignored_layers")
        name = "+".join(members)
        root = _name(graph, group[0].dep.target.module)
        if n_keep is None and regularizing:
            scores = self._cached_ranking(name, points)
        elif n_keep is None:
            scores = self._ranking(points)
        else:
            scores, choice = self._scores(name, members, root, points, n_keep, channel_groups, kind)
            self.choices[name] = choice
        return torch.as_tensor(np.tile(scores, channel_groups), dtype=torch.float32)

    # ------------------------------------------------------------------ helpers
    def _n_keep(self, pruner: Any, group: Any, graph: Any, n: int) -> Optional[int]:
        if pruner is None:
            # no count to choose for: None asks _scores for the criterion's ranking alone
            return None if self.pruning_ratio is None else int(n * (1 - self.pruning_ratio))
        n_pruned, shared = torch_pruning_count(pruner, group, n)
        if shared and not self._warned_shared_scope:
            self._warned_shared_scope = True
            logger.warning("TopologicalImportance: Torch-Pruning ranks channels across groups here (global or "
                           "isomorphic pruning); each group keeps its uniform-ratio share by the topological "
                           "criterion and Torch-Pruning's shared threshold may move a few channels between groups")
        if n_pruned >= n:
            # Torch-Pruning never empties a layer: check_pruning_group refuses the group and it keeps every channel
            logger.info("TopologicalImportance: Torch-Pruning would remove all %d channels of a group (ratio and "
                        "round_to); it refuses and keeps them all", n)
            return n
        return n - max(n_pruned, 0)

    def _cached_ranking(self, name: str, points: np.ndarray) -> np.ndarray:
        """The ranking for a regularisation call: recomputed on every ``regularize_every``-th call
        for the group (the first included), reused in between."""
        calls, scores = self._regularize_cache.get(name, (0, None))
        if scores is None or len(scores) != len(points) or calls % self.regularize_every == 0:
            scores = self._ranking(points)
        self._regularize_cache[name] = (calls + 1, scores)
        return scores

    def _ranking(self, points: np.ndarray) -> np.ndarray:
        """The criterion's ranking of the cloud's channels as scores in (0, 1), higher = keep:
        salience order (within the engine's tolerance), ties by canonical rank."""
        n = points.shape[0]
        if n < 2:
            return np.full(n, 0.5)
        return _rank_scores(analyse_unit(self.calculator, points, zero_anchor=self.zero_anchor))

    def _scores(self, name: str, members: List[str], root: str, points: np.ndarray, n_keep: int,
                channel_groups: int, kind: str) -> Tuple[np.ndarray, GroupChoice]:
        n = points.shape[0]
        if n_keep >= n or n_keep <= 0 or n < 2:
            # Nothing to choose: order by the engine's canonical rank (larger norm first) only.
            tiebreak = (n - canonical_ranks(points, scale_free=self.calculator.cloud_metric == "cosine")) / (n + 1.0)
            keep = np.full(n, n_keep >= n)  # (0 < n_keep < n cannot happen here: n < 2)
            scores = keep + tiebreak
            return scores, GroupChoice(name, members, root, n, int(keep.sum()), np.flatnonzero(keep),
                                       channel_groups, cloud=kind)
        analysed = analyse_unit(self.calculator, points, zero_anchor=self.zero_anchor)
        if analysed.all_tied:
            logger.warning("TopologicalImportance: every channel of %r has the same salience (%s, %s); its choice is "
                           "decided by the genetic algorithm and, failing that, by channel norm", name,
                           self.calculator.distance, self.calculator.cloud_metric)
        kept = choose_kept(self.calculator, analysed, n_keep, unit_ga_config(self.ga_config, name))
        keep = kept.keep_mask
        scores = keep.astype(np.float64) + _rank_scores(analysed)
        choice = GroupChoice(name, members, root, n, int(keep.sum()), np.flatnonzero(keep), channel_groups,
                             salience=analysed.salience, initial_distance=float(kept.ga.initial_fitness),
                             final_distance=float(kept.ga.best_fitness), cloud=kind)
        logger.info("TopologicalImportance: %s keeps %d of %d (distance %.4g -> %.4g)", name, n_keep, n,
                    choice.initial_distance, choice.final_distance)
        return scores, choice


def _rank_scores(analysed: Any) -> np.ndarray:
    """``(position + 1) / (n + 1)`` of each stored channel in the salience order (values within
    the engine's tolerance tied: rounding must not reorder them), ties by canonical rank."""
    n = analysed.n
    order = np.lexsort((-analysed.ranks, tie_groups(analysed.salience, analysed.tolerance)))
    position = np.empty(n)
    position[order] = np.arange(n)
    return (position + 1.0) / (n + 1.0)


_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


class BettiImportance:
    """Torch-Pruning importance for the BMVC paper's Betti criterion: the same scores as
    :class:`nni_topo_pruner.bmvc.pruner.BettiPruner`, so the filters whose feature-map clouds have the
    largest Betti numbers are removed.

    A group is scored by its root convolution (the layer whose output channels Torch-Pruning
    removes): each filter's feature maps over the calibration images form a cloud of ``N``
    points, read at ``scale`` as BettiPruner does (same options, defaults, random projection
    seeded by the layer's name, H0 tie-break); the score handed to Torch-Pruning is
    ``-(betti + tie / 2)``, higher = keep. Groups rooted at anything but a Conv1d/2d/3d get
    ``None`` (Torch-Pruning leaves them alone; a warning names them): add them to
    ``ignored_layers``.

    The feature maps are collected once per pruning step, in one pass over the calibration
    data, for the root convolutions of the calling pruner's groups (its ``ignored_layers``
    excluded), then each layer's buffer is freed once scored. Called outside a pruner
    (``imp(group)``), it collects the group's layer alone.

    What it cannot do: BettiPruner's ``betti_threshold`` (prune every filter above a score):
    Torch-Pruning's counts come from its pruning ratios, not from the importance.

    Parameters: ``calibration_loader`` (an iterable of input batches, or ``(inputs, targets)``
    batches; iterated until ``num_images`` images are seen), ``num_images``, ``scale``,
    ``scale_reference``, ``count``, ``homology_dims``, ``max_feature_dim``,
    ``feature_reduction``, ``calibration_precision``, ``seed``: as for BettiPruner. After a step, :attr:`scores`,
    :attr:`betti` and :attr:`images_used` hold, per layer name, what BettiPruner's attributes
    of the same names hold.

    >>> import torch, torch_pruning as tp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    >>> imp = BettiImportance([torch.rand(16, 3, 12, 12) for _ in range(4)], num_images=64)
    >>> tp.pruner.BasePruner(model, torch.rand(1, 3, 12, 12), importance=imp, pruning_ratio=0.5,
    ...                      ignored_layers=[model[2]]).step()
    >>> model[0].out_channels, len(imp.scores["0"])
    (4, 8)
    """

    def __init__(self, calibration_loader: Any, *, num_images: int = 512, scale: float = 0.5,
                 scale_reference: str = "median", count: str = "alive", homology_dims: Sequence[int] = (0,),
                 max_feature_dim: Optional[int] = 1024, feature_reduction: str = "random_projection",
                 calibration_precision: str = "float64", seed: int = 0) -> None:
        from .bmvc.scoring import BettiScale
        from .feature_collector import CALIBRATION_PRECISIONS, SUPPORTED_REDUCTIONS
        from .topology.validation import check_choice, check_homology_dims, check_int

        if calibration_loader is None or isinstance(calibration_loader, (torch.Tensor, str, bytes)) \
                or not hasattr(calibration_loader, "__iter__"):
            raise TypeError("calibration_loader must be an iterable of batches (e.g. a DataLoader or a list of "
                            f"tensors), got {type(calibration_loader).__name__}; wrap a single tensor as [tensor]")
        # the same checks as BettiPruner's (nni_topo_pruner.bmvc.pruner)
        num_images = check_int(num_images, "num_images", 3)
        seed = check_int(seed, "seed")  # the random projection's seed
        dims = check_homology_dims(homology_dims, "homology_dims", sort=False)
        feature_reduction = check_choice(feature_reduction, "feature_reduction", SUPPORTED_REDUCTIONS)
        max_feature_dim = check_int(max_feature_dim, "max_feature_dim", 1, allow_none=True)
        self.betti_scale = BettiScale(scale, scale_reference, count)  # validates
        self.calibration_loader = calibration_loader
        self.num_images, self.homology_dims, self.seed = num_images, dims, int(seed)
        self.max_feature_dim, self.feature_reduction = max_feature_dim, feature_reduction
        self.calibration_precision = check_choice(calibration_precision, "calibration_precision",
                                                  CALIBRATION_PRECISIONS)
        #: per layer: score (sum of Betti numbers) of every output channel, Betti numbers, images used
        self.scores: Dict[str, np.ndarray] = {}
        self.betti: Dict[str, np.ndarray] = {}
        self.images_used: Dict[str, int] = {}
        self._importance: Dict[str, np.ndarray] = {}  # per layer, this step: -(score + tie / 2)
        self._clouds: Dict[str, torch.Tensor] = {}
        self._step_key: Any = None
        self._warned: set = set()
        tp = import_torch_pruning()
        tp.pruner.importance.Importance.register(BettiImportance)

    @torch.no_grad()
    def __call__(self, group: Any, **kwargs: Any) -> Optional[torch.Tensor]:
        """``-(Betti score + tie / 2)`` of each channel of ``group`` (higher = keep), or ``None`` for a
        group whose root is not a convolution."""
        tp = import_torch_pruning()
        graph = group._DG
        dep, idxs = group[0]
        layer = dep.target.module
        name = _name(graph, layer)
        if not isinstance(layer, _CONVS) or not graph.is_out_channel_pruning_fn(dep.handler):
            if name not in self._warned:
                self._warned.add(name)
                logger.warning("BettiImportance scores convolution filters by their feature maps; the group rooted "
                               "at %s (%s) is left unpruned: add it to ignored_layers", name, type(layer).__name__)
            return None
        pruner = _calling_pruner(self, tp)
        step_key = None if pruner is None else (id(pruner), pruner.current_step, _widths(graph.model))
        if step_key is None or step_key != self._step_key:  # a new step (or no pruner): nothing cached is valid
            self._importance.clear()
            self._clouds.clear()
            self._step_key = step_key
        if name not in self._importance:
            if name not in self._clouds:
                wanted = _pruner_conv_roots(pruner, graph) if pruner is not None else {}
                wanted[name] = layer
                self._clouds.update(self._collect(graph.model, wanted))
            self._importance[name] = self._score(name, self._clouds.pop(name))  # the buffer is freed here
        return torch.as_tensor(self._importance[name][np.asarray(idxs, dtype=np.intp)], dtype=torch.float32)

    def _collect(self, model: torch.nn.Module, modules: Dict[str, torch.nn.Module]) -> Dict[str, torch.Tensor]:
        from .feature_collector import FeatureCollector, feed_calibration_loader

        collector = FeatureCollector(modules, self.num_images, self.max_feature_dim, self.feature_reduction,
                                     self.seed)
        with collector.hooked():
            feed_calibration_loader(model, self.calibration_loader, collector, self.calibration_precision)
        buffers = collector.result()
        logger.info("BettiImportance: feature clouds of %d layers from %d images (%.1f MiB)", len(buffers),
                    collector.images_seen, sum(b.numel() for b in buffers.values()) * 4 / 2**20)
        return buffers

    def _score(self, name: str, cloud: torch.Tensor) -> np.ndarray:
        from .bmvc.scoring import betti_importance, layer_betti

        if not bool(torch.isfinite(cloud).all()):
            raise ValueError(f"BettiImportance: the feature maps of layer {name!r} on the calibration images hold NaN "
                             f"or Inf values, so its filters cannot be scored; check the calibration images and the "
                             f"weights of the layers up to {name!r}")
        betti, tie = layer_betti(cloud.numpy(), self.betti_scale, self.homology_dims)
        score = betti.sum(axis=1)
        self.betti[name], self.scores[name], self.images_used[name] = betti, score, int(cloud.shape[0])
        # BettiPruner hands NNI the same numbers and NNI prunes the smallest metric; Torch-Pruning
        # prunes the smallest importance.
        return betti_importance(betti, tie)


def _widths(model: torch.nn.Module) -> Tuple[Tuple[str, int], ...]:
    return tuple((name, int(m.out_channels)) for name, m in model.named_modules() if isinstance(m, _CONVS))


def _pruner_conv_roots(pruner: Any, graph: Any) -> Dict[str, torch.nn.Module]:
    """The convolutions whose output channels ``pruner`` will ask about in this step."""
    roots: Dict[str, torch.nn.Module] = {}
    for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        dep = group[0].dep
        if isinstance(dep.target.module, _CONVS) and graph.is_out_channel_pruning_fn(dep.handler):
            roots[_name(graph, dep.target.module)] = dep.target.module
    return roots


def torch_pruning_count(pruner: Any, group: Any, n: int) -> Tuple[int, bool]:
    """Channels Torch-Pruning 1.6's ``BasePruner._prune`` will remove from ``group`` (of ``n``
    channels per channel group) in the current step, and whether the count is shared with other
    groups (global / isomorphic ranking, where it is only the uniform-ratio share).

    Mirrors ``BasePruner._prune``: the per-step ratio (or the ``pruning_ratio_dict`` ratio of the
    group's first layer that has one), ``n - int(n_initial * (1 - ratio))`` with the scope's
    initial channel count, then ``round_to``.
    """
    graph = pruner.DG
    step = pruner.current_step
    ratio = pruner.per_step_pruning_ratio[step]
    scope_name = None
    user_scope = False
    for dep, _ in group:
        for module, fn in zip([dep.source.module, dep.target.module], [dep.trigger, dep.handler]):
            if module in pruner._layer_to_scope and graph.is_out_channel_pruning_fn(fn):
                name, scope = pruner._layer_to_scope[module]
                if len(scope) > 0:
                    ratio = pruner.get_target_pruning_ratio(module, step=step)
                    scope_name, user_scope = name, True
                    break
        if user_scope:
            break
    shared = bool(pruner.isomorphic or pruner.global_pruning)
    if shared:
        return n - int(n * (1 - ratio)), True
    if scope_name is None:
        scope_name = graph._module2name[group[0][0].source.module]
    initial = pruner._scope_initial_channels.get(scope_name, n)
    n_pruned = n - int(initial * (1 - ratio))
    if n_pruned > 0 and pruner.round_to:
        module, handler = group[0].dep.target.module, group[0].dep.handler
        current = graph.get_out_channels(module) if graph.is_out_channel_pruning_fn(handler) \
            else graph.get_in_channels(module)
        n_pruned = pruner._round_to(n_pruned, current, pruner.round_to)
    return n_pruned, False


#: Torch-Pruning methods that ask the importance for scores to regularise by, not to cut by
#: (GroupNormPruner.regularize, GrowingRegPruner.regularize / update_reg).
_REGULARIZING = frozenset({"regularize", "update_reg"})


def _calling_pruner(importance: Any, tp: Any) -> Any:
    """The Torch-Pruning pruner whose step is calling ``importance``, found on the call stack."""
    return _calling_pruner_and_purpose(importance, tp)[0]


def _calling_pruner_and_purpose(importance: Any, tp: Any) -> Tuple[Any, bool]:
    """The calling pruner (or ``None``) and whether it calls from a regularisation method
    (sparse training) rather than from ``step()``."""
    base = tp.pruner.BasePruner
    frame = sys._getframe(2)
    pruner = None
    for _ in range(_STACK_DEPTH):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if pruner is None and isinstance(candidate, base) and getattr(candidate, "importance", None) is importance:
            pruner = candidate
        if pruner is not None:
            if candidate is not pruner:
                break
            if frame.f_code.co_name in _REGULARIZING:
                return pruner, True
        frame = frame.f_back
    return pruner, False


def _name(graph: Any, module: Any) -> str:
    names = getattr(graph, "_module2name", None) or {}
    return names.get(module, type(module).__name__)


def _is_out_fn(graph: Any, fn: Any) -> bool:
    if graph is not None:
        return bool(graph.is_out_channel_pruning_fn(fn))
    return getattr(fn, "__name__", "") == "prune_out_channels"


def _is_in_fn(graph: Any, fn: Any) -> bool:
    if graph is not None:
        return bool(graph.is_in_channel_pruning_fn(fn))
    return getattr(fn, "__name__", "") == "prune_in_channels"


def _out_rows(layer: torch.nn.Module) -> Optional[torch.Tensor]:
    """A layer's weight as one row per output channel, or ``None`` for a layer without one."""
    if isinstance(layer, torch.nn.modules.conv._ConvNd):
        weight = layer.weight.detach()
        if layer.transposed:  # (in, out / groups, ...) -> (out, ...), as Torch-Pruning's importances do
            weight = weight.transpose(0, 1)
        return weight.flatten(1)
    if isinstance(layer, torch.nn.Linear):
        return layer.weight.detach().flatten(1)
    if isinstance(layer, torch.nn.MultiheadAttention):
        return layer.out_proj.weight.detach()
    return None


def _in_columns(layer: torch.nn.Module) -> Optional[torch.Tensor]:
    """A consumer's weight as one row per input channel (its fan-out), or ``None``."""
    if isinstance(layer, torch.nn.Linear):
        return layer.weight.detach().t()
    if isinstance(layer, torch.nn.modules.conv._ConvNd) and not layer.transposed and layer.groups == 1:
        return layer.weight.detach().transpose(0, 1).flatten(1)
    return None


def _group_cloud(group: Any, graph: Any, tp: Any, n_total: int) -> Optional[Tuple[np.ndarray, List[str], str]]:
    """The group's point cloud (``n_total`` points, root indexing), its members and its kind.

    The cloud keeps the weights' own precision (float32 for float32 weights; float64 only for
    float64 ones): every consumer converts to float64 exactly where it computes, so the values
    are the same and the n x d cloud is written once, at half the bytes."""
    for kind, is_fn, rows_of in (("out_rows", _is_out_fn, _out_rows), ("in_columns", _is_in_fn, _in_columns)):
        parts: Dict[str, List[Tuple[torch.Tensor, torch.Tensor]]] = {}
        for item in group:
            dep, idxs = item
            root_idxs = item.root_idxs
            layer = dep.target.module
            if not is_fn(graph, dep.handler) or root_idxs is None or any(r is None for r in root_idxs):
                continue
            rows = rows_of(layer)
            if rows is None or len(idxs) == 0:
                continue
            picked = rows[torch.as_tensor(idxs, dtype=torch.long, device=rows.device)]
            parts.setdefault(_name(graph, layer), []).append((torch.as_tensor(root_idxs, dtype=torch.long), picked))
        if parts:
            members = sorted(parts)
            widths = [parts[m][0][1].shape[1] for m in members]
            wide = any(t.dtype == torch.float64 for m in members for _, t in parts[m])
            cloud = torch.zeros((n_total, sum(widths)), dtype=torch.float64 if wide else torch.float32)
            start = 0
            for member, width in zip(members, widths):
                for where, values in parts[member]:
                    cloud[where, start:start + width] = values.to(device="cpu", dtype=cloud.dtype)
                start += width
            return cloud.numpy(), members, kind
    return None


__all__ = ["TopologicalImportance", "BettiImportance", "GroupChoice", "torch_pruning_count", "import_torch_pruning",
           "TESTED_TORCH_PRUNING_VERSION"]
