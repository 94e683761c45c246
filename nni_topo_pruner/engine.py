"""The per-unit engine: one pruning unit's cloud in, the kept neurons out, with no decision
depending on the order in which the neurons happen to be stored.

Every step that can break a tie (salience ranking, the genetic algorithm's random draws,
its "keep the earlier individual" rule, the global ranking of a global group) runs in a
*canonical order* derived from the neurons themselves (:func:`canonical_order`: decreasing
norm, except under the scale-free cosine metric; then the more isolated neuron; then the
coordinates), every key compared with a tolerance far above float noise, so that neither
the storage order nor rounding (another CPU, another thread count) decides. Permuting a
layer's neurons therefore permutes the kept set the same way (masks are equivariant); only
neurons equal within that tolerance can be exchanged. Salience and fitness values are
compared with the same kind of tolerance (:mod:`~nni_topo_pruner.topology.ties`); ties go
to the earlier canonical position (the larger-norm neuron for norm-sensitive metrics).

The engine works on plain NumPy arrays; both front doors (the NNI pruner and any other
framework adapter) call :func:`analyse_unit` then :func:`choose_kept`.

Example:
    >>> import numpy as np
    >>> from nni_topo_pruner.metric_calculator import MetricCalculator
    >>> from nni_topo_pruner.evolutionary import GAConfig
    >>> cloud = np.array([[0.0, 1.0], [5.0, 0.0], [0.0, 1.1], [9.0, 9.0]])
    >>> calc = MetricCalculator(distance="wasserstein")
    >>> analysed = analyse_unit(calc, cloud)
    >>> choose_kept(calc, analysed, 3, GAConfig(seed=0)).keep_mask.tolist()   # one near-duplicate goes
    [True, True, False, True]
    >>> choose_kept(calc, analyse_unit(calc, cloud[::-1]), 3, GAConfig(seed=0)).keep_mask.tolist()  # same neuron
    [True, False, True, True]
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .evolutionary import GAConfig, GAResult, evolve_neuron_mask
from .metric_calculator import LayerTopology, MetricCalculator, SubsetFitness, keep_indices, salience_ranked_subset
from .topology.distances import distance_matrix, reordered
from .topology.ties import RTOL, tie_groups, tolerance
from .topology.validation import check_homology_dims

logger = logging.getLogger(__name__)

#: The criterion's defaults, shared by every front door (NNI pruner, Torch-Pruning importance).
DEFAULT_HOMOLOGY_DIMS: tuple[int, ...] = (0,)
DEFAULT_DISTANCE = "wasserstein"
DEFAULT_CLOUD_METRIC = "euclidean"
DEFAULT_WASSERSTEIN_ORDER = 1.0
DEFAULT_ZERO_ANCHOR = None  # "auto": on for weight clouds with a metric that places the zero vector


def check_zero_anchor(zero_anchor: object, cloud_metric: str, cloud: str = "weights") -> bool:
    """Validate the ``zero_anchor`` option against the cloud and its metric; returns a bool.

    ``None`` (the default) means: anchor weight clouds (a pruned neuron's weights are zero),
    except under the cosine metric, which gives the zero vector no position; activation
    clouds are not anchored.

    Example:
        >>> check_zero_anchor(None, "euclidean"), check_zero_anchor(None, "cosine"), check_zero_anchor(None, "euclidean", "activations")
        (True, False, False)
    """
    if zero_anchor is None:
        return cloud == "weights" and cloud_metric != "cosine"
    if not isinstance(zero_anchor, (bool, np.bool_)):
        raise ValueError(f"zero_anchor must be True, False or None (auto), got {zero_anchor!r}")
    if zero_anchor and cloud_metric == "cosine":
        raise ValueError("zero_anchor needs a cloud_metric in which the zero vector has a position "
                         "('euclidean', 'manhattan', 'chebyshev'); the cosine distance gives it none")
    return bool(zero_anchor)


def build_criterion(
    *,
    homology_dims: Sequence[int] = DEFAULT_HOMOLOGY_DIMS,
    distance: str = DEFAULT_DISTANCE,
    cloud_metric: str = DEFAULT_CLOUD_METRIC,
    wasserstein_order: float = DEFAULT_WASSERSTEIN_ORDER,
    population_size: int | None = None,
    generations: int | None = None,
    crossover_probability: float = 0.8,
    mutation_probability: float = 0.2,
    elitism: bool = True,
    seed: int | None = 0,
    search: str = "ga",
) -> tuple[MetricCalculator, GAConfig]:
    """The metric calculator and GA settings for a set of options (validated; a bad value
    raises ``ValueError`` naming the option). ``None`` sizes take :class:`GAConfig`'s defaults.

    Example:
        >>> calculator, ga = build_criterion(distance="wasserstein", seed=3)
        >>> calculator.distance, ga.seed
        ('wasserstein', 3)
    """
    # the front doors (TopologicalPruner, TopologicalImportance) take a sequence, not one int
    calculator = MetricCalculator(homology_dims=check_homology_dims(homology_dims, allow_int=False), distance=distance, cloud_metric=cloud_metric,
                                  wasserstein_order=wasserstein_order)
    ga_options = dict(crossover_probability=crossover_probability, mutation_probability=mutation_probability,
                      elitism=elitism, seed=seed, search=search)
    if population_size is not None:
        ga_options["population_size"] = population_size
    if generations is not None:
        ga_options["generations"] = generations
    return calculator, GAConfig(**ga_options)


def unit_ga_config(config: GAConfig, unit_name: str) -> GAConfig:
    """The GA settings for the unit named ``unit_name`` (its module name, or the members'
    names joined by ``+``): a per-unit seed derived from the name, so results do not depend
    on the order or the process in which units are evolved, nor on the front door.

    Example:
        >>> unit_ga_config(GAConfig(seed=0), "features.0").seed == unit_ga_config(GAConfig(seed=0), "features.0").seed
        True
    """
    if config.seed is None:
        return config
    return replace(config, seed=(config.seed * 1_000_003 + zlib.crc32(unit_name.encode())) % 2**32)


def canonical_order(points: np.ndarray, *, scale_free: bool = False, rtol: float = RTOL,
                    spread: np.ndarray | None = None) -> np.ndarray:
    """Indices that put the rows of ``points`` in an order that depends only on their values,
    and not on rounding: ``points[canonical_order(points)]`` is the same array for every
    permutation of the rows, and a relative change of the values well below ``rtol``
    (float noise, another CPU's rounding) leaves the order unchanged.

    Keys, each compared with a tolerance of ``rtol`` times its largest value (values whose
    sorted gaps are within it are ties, :mod:`~nni_topo_pruner.topology.ties`), the next key
    breaking the ties of the previous one:

    1. decreasing Euclidean norm (skipped when ``scale_free``: a scale-free metric such as
       cosine ignores norms, so they must not decide anything; unit-length activation
       clouds tie here and fall through);
    2. decreasing sum of distances to the other neurons (of the directions when
       ``scale_free``): the more isolated neuron first; computed for the rows tied on the
       norm only, with a tolerance scaled by the largest of their sums. A caller that has the
       cloud's distance matrix passes its row sums as ``spread`` (:func:`analyse_unit` does:
       the same sums under the Euclidean and cosine metrics, the metric's own under the
       others), so that no second n x n product is computed;
    3. the coordinates (of the directions when ``scale_free``), first to last, ascending;
    4. only for rows equal within tolerance in all of the above: their raw bytes.

    Example:
        >>> canonical_order(np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]])).tolist()   # 0 and 2: equal norms
        [1, 0, 2]
        >>> canonical_order(np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]]), scale_free=True).tolist()
        [0, 2, 1]
    """
    points = np.asarray(points)
    if points.ndim != 2:
        raise ValueError(f"points must be a 2-D array (neurons x features), got shape {points.shape}")
    if points.dtype not in (np.float32, np.float64):
        points = points.astype(np.float64)
    # Every key is computed in float64 from the values as given (float32 -> float64 is exact);
    # the cloud is not copied whole to float64 unless a key needs all of it (cosine directions,
    # a spread the caller did not pass): most layers are ordered by their norms alone.
    n = points.shape[0]
    norms = np.empty(n)
    for start in range(0, n, 256):
        rows = np.array(points[start:start + 256], dtype=np.float64)  # C-contiguous: each row is one
        norms[start:start + len(rows)] = [np.sqrt(np.dot(r, r)) for r in rows]
    keyed = points.astype(np.float64) / np.where(norms > 0, norms, 1.0)[:, None] if scale_free else points
    # The order so far and, per position, its tie group (non-decreasing): each key refines it.
    order, group = np.arange(n, dtype=np.intp), np.zeros(n, dtype=np.intp)
    if not scale_free:
        order, group = _refine(order, group, -norms, tolerance(np.max(norms, initial=0.0), rtol))
    tied = order[_in_tied_group(group)]
    if len(tied) and spread is not None:
        spread = np.asarray(spread, dtype=np.float64)
        order, group = _refine(order, group, -spread, tolerance(np.max(spread[tied]), rtol))
    elif len(tied):
        # the spread of the tied rows only (trained and random layers rarely tie on norms: this
        # skips an n x n x d product); its tolerance's scale is the largest of them (all rows
        # when all are tied: unit-length activation clouds, the cosine metric)
        keyed = np.asarray(keyed, dtype=np.float64)
        squared = np.sum(keyed * keyed, axis=1)
        gram = keyed[tied] @ keyed.T
        spread = np.zeros(n)
        spread[tied] = np.sqrt(np.maximum(squared[tied, None] + squared[None, :] - 2.0 * gram, 0.0)).sum(axis=1)
        order, group = _refine(order, group, -spread, tolerance(np.max(spread[tied]), rtol))
    if n and group[-1] < n - 1:  # ties left: the coordinates, first to last
        coordinate_tol = tolerance(np.max(np.abs(keyed), initial=0.0), rtol)
        for column in range(keyed.shape[1]):
            if group[-1] == n - 1:  # every row alone
                break
            order, group = _refine(order, group, keyed[:, column], coordinate_tol)
    # rows equal within tolerance everywhere: any order is the criterion's; bytes fix one
    starts = np.flatnonzero(np.diff(group, prepend=-1))
    for first, stop in zip(starts.tolist(), np.append(starts[1:], n).tolist()):
        if stop - first > 1:
            order[first:stop] = sorted(order[first:stop].tolist(), key=lambda i: (
                np.asarray(keyed[i], dtype=np.float64).tobytes(), np.asarray(points[i], dtype=np.float64).tobytes()))
    return order


def _in_tied_group(group: np.ndarray) -> np.ndarray:
    """Which positions share their tie group with another position."""
    return np.bincount(group)[group] > 1 if len(group) else np.zeros(0, dtype=bool)


def _refine(order: np.ndarray, group: np.ndarray, key: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Split every tie group of ``order`` into the tie groups of ``key`` (ascending; sorted
    values whose gaps are at most ``tol`` tie, as :func:`~nni_topo_pruner.topology.ties.tie_groups`),
    rows keeping their previous order within a new group. One sort for all groups at once:
    the groups of large layers are mostly single rows."""
    tied = np.flatnonzero(_in_tied_group(group))
    if len(tied) == 0:
        return order, group
    values, owners = np.asarray(key, dtype=np.float64)[order[tied]], group[tied]
    by_value = np.lexsort((values, owners))  # stable: equal values keep their positions' order
    starts = np.ones(len(tied), dtype=bool)
    starts[1:] = (owners[by_value][1:] != owners[by_value][:-1]) | ~(np.diff(values[by_value]) <= tol)
    sub = np.zeros(len(order), dtype=np.intp)
    sub[tied[by_value]] = np.cumsum(starts)  # increasing with the group, then with the value
    moved = np.lexsort((np.arange(len(order)), sub, group))
    group, sub = group[moved], sub[moved]
    changed = np.ones(len(order), dtype=bool)
    changed[1:] = (group[1:] != group[:-1]) | (sub[1:] != sub[:-1])
    return order[moved], np.cumsum(changed) - 1


def canonical_ranks(points: np.ndarray, *, scale_free: bool = False) -> np.ndarray:
    """``ranks[i]``: position of neuron ``i`` in :func:`canonical_order` (a tie-break key)."""
    order = canonical_order(points, scale_free=scale_free)
    ranks = np.empty(len(order), dtype=np.intp)
    ranks[order] = np.arange(len(order))
    return ranks


@dataclass
class AnalysedUnit:
    """A unit's topology, computed in canonical order.

    Attributes:
        order: ``order[j]`` is the stored index of the neuron at canonical position ``j``.
        topology: distances, diagrams and salience of the cloud in canonical order; with
            ``zero_anchor`` its point 0 is the zero vector and neuron ``j`` is point ``j + 1``.
        zero_anchor: whether the cloud holds the zero vector (see :func:`analyse_unit`).
    """

    order: np.ndarray
    topology: LayerTopology
    zero_anchor: bool = False

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def tolerance(self) -> float:
        """Salience or fitness differences up to this are ties (``RTOL`` of the cloud's diameter)."""
        return tolerance(np.max(self.topology.distances, initial=0.0))

    @property
    def canonical_salience(self) -> np.ndarray:
        """Salience per neuron in canonical order (the anchor excluded)."""
        return self.topology.salience[1:] if self.zero_anchor else self.topology.salience

    @property
    def salience(self) -> np.ndarray:
        """Salience per neuron in stored order."""
        out = np.empty(self.n)
        out[self.order] = self.canonical_salience
        return out

    @property
    def ranks(self) -> np.ndarray:
        """Canonical position of each stored neuron (0 = first)."""
        ranks = np.empty(self.n, dtype=np.intp)
        ranks[self.order] = np.arange(self.n)
        return ranks

    @property
    def all_tied(self) -> bool:
        """True when every neuron has the same salience within :attr:`tolerance` (and there
        are at least 2)."""
        s = self.canonical_salience
        return bool(len(s) >= 2 and np.all(tie_groups(s, self.tolerance) == 0))

    def cloud_indices(self, canonical_keep: np.ndarray) -> np.ndarray:
        """Indices into ``topology`` of the kept cloud (the anchor included, when there is one)."""
        kept = np.flatnonzero(canonical_keep)
        return np.concatenate([[0], kept + 1]).astype(np.intp) if self.zero_anchor else kept


class AnchoredFitness:
    """The GA's fitness over neurons when the cloud also holds the zero anchor (point 0),
    which every subset keeps: a neuron subset is scored as that subset plus the anchor."""

    def __init__(self, inner: SubsetFitness) -> None:
        self.inner = inner

    @property
    def n(self) -> int:
        return self.inner.n - 1

    @property
    def evaluations(self) -> int:
        return self.inner.evaluations

    @property
    def scale(self) -> float:
        """The anchored cloud's diameter: the scale of the GA's fitness tolerance (without it
        the GA would compare anchored fitness values exactly, so rounding could decide)."""
        return self.inner.scale

    def lower_bound(self, n_keep: int) -> float:
        return self.inner.lower_bound(n_keep + 1)  # the subsets have n_keep + 1 points

    def batch(self, keeps) -> np.ndarray:
        return self.inner.batch([np.concatenate([[0], keep_indices(k, self.n) + 1]).astype(np.intp) for k in keeps])

    def __call__(self, keep) -> float:
        return float(self.batch([keep])[0])


@dataclass
class KeptNeurons:
    """The engine's choice for one unit.

    Attributes:
        keep_mask: bool (n,), stored order, exactly ``n_keep`` True.
        ga: the genetic algorithm's result, in canonical order (``ga.keep_mask`` is canonical).
        initial_keep: the salience-ranked seed subset, stored indices (sorted).
    """

    keep_mask: np.ndarray
    ga: GAResult
    initial_keep: np.ndarray


def analyse_unit(calculator: MetricCalculator, points: np.ndarray, *, zero_anchor: bool = False) -> AnalysedUnit:
    """Distance matrix, diagrams and salience of one unit's cloud, in canonical order.

    With ``zero_anchor`` the cloud also holds the zero vector, which is what a pruned neuron
    becomes (its weights are zeroed): a neuron's salience is then how far the layer's diagram
    moves when that neuron is *zeroed*, so both closeness to another neuron (redundancy)
    and closeness to the origin (a small neuron) make it cheap to prune; every kept subset
    keeps the anchor. It needs a cloud metric in which the zero vector has a place
    (not ``cosine``). Under ``cosine`` the canonical order ignores the neurons' norms.
    """
    points = np.asarray(points)
    anchored = check_zero_anchor(zero_anchor, calculator.cloud_metric)  # validated and resolved once
    cloud = points
    if anchored:
        cloud = np.vstack([np.zeros((1, points.shape[1]), dtype=points.dtype), points])
    # One distance matrix, in stored order: the canonical order's spread key is its row sums
    # (over the neurons, not the anchor), then the matrix is permuted, not recomputed. The
    # stored order can change its last bits (BLAS blocking); every decision below is tolerant.
    distances = distance_matrix(cloud, calculator.cloud_metric)  # validates: NaN/Inf -> ValueError
    first = 1 if anchored else 0
    neurons = distances[first:, first:]
    cosine = calculator.cloud_metric == "cosine"
    # cosine distances are |u - v|^2 / 2 between directions: the sums of |u - v| as canonical_order's own
    spread = np.sqrt(2.0 * neurons).sum(axis=1) if cosine else neurons.sum(axis=1)
    order = canonical_order(points, scale_free=cosine, spread=spread)
    full = np.concatenate([[0], order + 1]).astype(np.intp) if anchored else order
    # the anchor is never removed, so its own salience is not needed (and in a star-shaped MST
    # it would be the one expensive leave-one-out)
    # the distances are the cloud's in canonical order: the (n, d) cloud itself is not needed again
    topology = calculator.analyse(None, skip_salience=(0,) if anchored else (), distances=reordered(distances, full))
    return AnalysedUnit(order, topology, anchored)


def salience_seed(salience: np.ndarray, n_keep: int, tol: float | None = None) -> np.ndarray:
    """Canonical positions of the ``n_keep`` most salient neurons of a canonically ordered
    salience vector; saliences within ``tol`` (default ``RTOL`` of the largest) are ties,
    which go to the earlier canonical position.

    Example:
        >>> salience_seed(np.array([1.0, 0.5, 1.0 + 1e-12]), 1).tolist()   # a tie: the earlier neuron
        [0]
    """
    salience = np.asarray(salience, dtype=np.float64)
    if tol is None:
        tol = tolerance(np.max(np.abs(salience), initial=0.0))
    return salience_ranked_subset(salience, n_keep, tol=tol)


def choose_kept(calculator: MetricCalculator, unit: AnalysedUnit, n_keep: int, config: GAConfig) -> KeptNeurons:
    """Run the genetic algorithm, seeded with the salience-ranked subset, on the canonical
    cloud and map its choice back to stored order."""
    seed = salience_seed(unit.canonical_salience, n_keep, unit.tolerance)
    fitness = calculator.subset_fitness(unit.topology)
    if unit.zero_anchor:
        fitness = AnchoredFitness(fitness)
    result = evolve_neuron_mask(fitness, unit.n, n_keep, config, initial_keep=seed)
    keep = np.zeros(unit.n, dtype=bool)
    keep[unit.order[result.keep_mask]] = True
    return KeptNeurons(keep, result, np.sort(unit.order[seed]))
