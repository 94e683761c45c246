"""Metric calculator (thesis module 3): a layer's distance matrix, persistence diagrams,
per-neuron salience, and the fitness of a kept subset of neurons.

Pure numpy / GUDHI: a point cloud (one row per neuron) in, arrays out.

Example:
    >>> import numpy as np
    >>> calc = MetricCalculator()
    >>> layer = calc.analyse(np.array([[0.0], [0.0], [1.0], [5.0]]))
    >>> layer.salience.round(2)
    array([0., 0., 1., 2.])
    >>> fitness = calc.subset_fitness(layer)
    >>> fitness([1, 2, 3]), fitness([0, 1, 3])
    (0.0, 1.0)
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .topology.diagram_distance import (
    sorted_descending,
    bottleneck_h0_sorted,
    check_distance_kind,
    check_order,
    diagram_distance,
    wasserstein_h0_sorted,
)
from .topology.bounds import enclosing_radius, higher_dim_bottleneck_bound, max_persistence, smallest_positive_distance
from .topology.distances import check_metric, distance_matrix
from .topology.validation import check_distance_matrix
from .topology.mst import MinimumSpanningTree, mst_edges, subset_mst_edge_lengths
from .topology.persistence import check_persistence_method, persistence_diagrams
from .topology.salience import leave_one_out_salience
from .topology.ties import tolerant_argsort
from .topology.validation import check_homology_dims

logger = logging.getLogger(__name__)


@dataclass
class LayerTopology:
    """What the metric calculator knows about one layer's cloud.

    Attributes:
        distances: (n, n) distance matrix of the cloud.
        diagrams: ``{dim: (m, 2)}`` finite persistence diagrams (essential H0 bar dropped).
        salience: (n,) diagram distance between the cloud and the cloud without neuron i.
        homology_dims: the dimensions in ``diagrams``.
        tree: the cloud's minimum spanning tree ``(u, v, w)`` when H0 is analysed (the fitness
            reads the H0 deaths of subsets that span a connected part of it from it).
    """

    distances: np.ndarray
    diagrams: dict[int, np.ndarray]
    salience: np.ndarray
    homology_dims: tuple[int, ...] = field(default=(0,))
    tree: MinimumSpanningTree | None = None

    @property
    def n(self) -> int:
        """Number of neurons (points)."""
        return int(self.distances.shape[0])


def keep_indices(keep: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """Sorted int indices of a kept subset of ``n`` neurons, given as int indices or as a bool
    mask of length ``n`` (``ValueError`` on a wrong shape, repeats or out-of-range indices).

    Example:
        >>> keep_indices([3, 0], 4).tolist(), keep_indices(np.array([True, False, True]), 3).tolist()
        ([0, 3], [0, 2])
    """
    arr = np.asarray(keep)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"a boolean keep mask must have shape ({n},), got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError("keep must be a 1-D array of int indices or a boolean mask")
    idx = np.unique(arr.astype(np.intp))
    if len(idx) != len(arr):
        raise ValueError("keep has repeated indices")
    if idx.size and (idx[0] < 0 or idx[-1] >= n):
        raise ValueError(f"keep indices must be in [0, {n}), got {idx[0]}..{idx[-1]}")
    return idx


def salience_ranked_subset(salience: np.ndarray, n_keep: int, tol: float = 0.0) -> np.ndarray:
    """Sorted indices of the ``n_keep`` most salient neurons; saliences within ``tol`` of each
    other (:func:`~nni_topo_pruner.topology.ties.tie_groups`) are ties, which keep the lower index.

    Example:
        >>> salience_ranked_subset(np.array([0.1, 0.3, 0.1, 0.2]), 2)
        array([1, 3])
    """
    salience = np.asarray(salience, dtype=np.float64)
    if not 0 <= n_keep <= len(salience):
        raise ValueError(f"n_keep must be in [0, {len(salience)}], got {n_keep}")
    order = tolerant_argsort(-salience, tol)
    return np.sort(order[:n_keep])


class MetricCalculator:
    """Distance matrices, persistence diagrams, salience and subset fitness for layers.

    Args:
        homology_dims: homology dimensions compared, ``(0,)`` (default) or e.g. ``(0, 1)``.
        distance: ``"bottleneck"`` (default) or ``"wasserstein"`` between diagrams.
        cloud_metric: metric between neurons' weight vectors, one of
            ``SUPPORTED_CLOUD_METRICS`` (``"euclidean"`` default).
        wasserstein_order: order q >= 1 of the Wasserstein distance.
        persistence_method: ``"auto"`` (exact fast paths), ``"fast"``, ``"ripser"`` or
            ``"gudhi"`` (reference, slow), see :func:`~nni_topo_pruner.topology.persistence_diagrams`.

    Example:
        >>> MetricCalculator(distance="wasserstein", wasserstein_order=2).distance
        'wasserstein'
    """

    def __init__(
        self,
        homology_dims: Sequence[int] = (0,),
        distance: str = "bottleneck",
        cloud_metric: str = "euclidean",
        wasserstein_order: float = 1.0,
        persistence_method: str = "auto",
    ) -> None:
        self.homology_dims = check_homology_dims(homology_dims, "homology_dims")
        self.distance = check_distance_kind(distance)
        self.cloud_metric = check_metric(cloud_metric)
        self.wasserstein_order = check_order(wasserstein_order, "wasserstein_order")
        self.persistence_method = check_persistence_method(persistence_method, "persistence_method")

    def __repr__(self) -> str:
        return (
            f"MetricCalculator(homology_dims={self.homology_dims}, distance={self.distance!r}, "
            f"cloud_metric={self.cloud_metric!r}, wasserstein_order={self.wasserstein_order}, "
            f"persistence_method={self.persistence_method!r})"
        )

    def analyse(self, points: np.ndarray | None, *, progress: bool = False, skip_salience: Sequence[int] = (),
                distances: np.ndarray | None = None) -> LayerTopology:
        """Distance matrix, diagrams and per-neuron salience of one layer's cloud.

        Args:
            points: (n, d) array, one row per neuron; NaN/Inf raise a ValueError. May be
                ``None`` when ``distances`` are given (nothing else is read from it).
            progress: tqdm bar for the leave-one-out loop of dimensions above 0.
            skip_salience: points whose salience is not computed (0), e.g. an anchor.
            distances: ``distance_matrix(points, self.cloud_metric)`` when the caller has it
                already (validated as a distance matrix of ``len(points)`` points, not recomputed).
        """
        if distances is None:
            if points is None:
                raise ValueError("analyse needs the points or their distance matrix (distances=...)")
            dist = distance_matrix(points, self.cloud_metric)  # validates: NaN/Inf -> ValueError
        else:
            dist = check_distance_matrix(distances, "distances")
            if points is not None and dist.shape[0] != len(points):
                raise ValueError(f"distances must be {len(points)} x {len(points)} (one row per point), "
                                 f"got {dist.shape[0]} x {dist.shape[1]}")
        # H0's diagram and its leave-one-out salience both come from the minimum spanning
        # tree: build it once.
        tree = mst_edges(dist) if 0 in self.homology_dims else None
        diagrams = persistence_diagrams(dist, self.homology_dims, method=self.persistence_method,
                                        tree_weights=None if tree is None else tree[2])
        salience = leave_one_out_salience(
            dist,
            self.homology_dims,
            self.distance,
            order=self.wasserstein_order,
            diagrams=diagrams,
            method=self.persistence_method,
            progress=progress,
            skip=skip_salience,
            tree=tree,
        )
        return LayerTopology(dist, diagrams, salience, self.homology_dims, tree)

    def subset_fitness(self, layer: LayerTopology) -> SubsetFitness:
        """The GA's fitness for ``layer``: distance of a kept subset's diagram to the layer's."""
        return SubsetFitness(
            layer,
            homology_dims=self.homology_dims,
            distance=self.distance,
            wasserstein_order=self.wasserstein_order,
            persistence_method=self.persistence_method,
        )


class SubsetFitness:
    """Fitness of a kept subset: ``diagram_distance(layer diagrams, diagrams of the subset's
    cloud)``; smaller is better, 0 means the subset has the layer's exact diagram.

    The subset's distance matrix is a slice of the layer's. Results are cached on the
    subset; ``evaluations`` counts the real (uncached) ones. For H0, :meth:`batch` reads the
    deaths of subsets that span a connected part of the layer's minimum spanning tree from
    that tree (exact; the usual case of a salience-ranked subset) and runs one batched Prim
    over the rest, then the exact 1-D bottleneck (or Wasserstein) on all of it at once.

    Example:
        >>> import numpy as np
        >>> calc = MetricCalculator()
        >>> fit = calc.subset_fitness(calc.analyse(np.array([[0.0], [1.0], [3.0]])))
        >>> fit.batch([[0, 1], np.array([False, True, True])]).tolist()
        [1.0, 0.5]
        >>> fit.evaluations
        2
    """

    def __init__(
        self,
        layer: LayerTopology,
        *,
        homology_dims: Sequence[int] = (0,),
        distance: str = "bottleneck",
        wasserstein_order: float = 1.0,
        persistence_method: str = "auto",
    ) -> None:
        self.layer = layer
        self.homology_dims = check_homology_dims(homology_dims, "homology_dims")
        self.distance = check_distance_kind(distance)
        self.order = check_order(wasserstein_order, "wasserstein_order")
        self.persistence_method = persistence_method
        missing = [d for d in self.homology_dims if d not in layer.diagrams]
        if missing:
            raise ValueError(f"layer has no diagrams for homology dims {missing}; analyse it with those dims")
        self.reference = {d: layer.diagrams[d] for d in self.homology_dims}
        self._full_desc = sorted_descending(self.reference[0][:, 1]) if 0 in self.homology_dims else None
        higher = tuple(d for d in self.homology_dims if d > 0)
        self._skip_bound: tuple[float, float] | None = None
        if higher and 0 in self.homology_dims and self.distance == "bottleneck":
            self._skip_bound = (smallest_positive_distance(layer.distances), max_persistence(self.reference, higher))
        self._cache: dict[bytes, float] = {}
        self.evaluations = 0
        self.skipped_higher = 0  # evaluations whose dims >= 1 the exact bound made unnecessary

    @property
    def n(self) -> int:
        return self.layer.n

    @property
    def scale(self) -> float:
        """The layer's diameter: the scale of every fitness value (tolerances are relative to it)."""
        return float(np.max(self.layer.distances, initial=0.0))

    def lower_bound(self, n_keep: int) -> float:
        """A value no subset of ``n_keep`` neurons can beat (the GA stops when it gets there).

        A subset of k points has at most k - 1 finite H0 bars, so at least ``N - k + 1`` of the
        layer's N H0 bars are matched to the diagonal or to a padding point; with deaths
        sorted in descending order ``a_1 >= a_2 >= ...``:

        * bottleneck: every matching leaves some bar ``a_j`` with ``j >= k`` costing at least
          ``a_j / 2``, so the distance is at least ``a_k / 2`` (``bottleneck_h0_sorted``'s
          formula, term by term);
        * Wasserstein: at least the ``N - k + 1`` smallest bars go to the diagonal, so
          ``W_q^q >= sum of (a_j / 2)^q`` over them.

        Other dimensions only add to either distance. Without H0 the bound is 0.

        Example:
            >>> import numpy as np
            >>> calc = MetricCalculator()
            >>> fit = calc.subset_fitness(calc.analyse(np.array([[0.0], [1.0], [3.0], [6.0]])))
            >>> fit.lower_bound(2), fit([0, 2])
            (1.0, 1.0)
        """
        if self._full_desc is None:
            return 0.0
        deaths = self._full_desc
        if len(deaths) < n_keep:
            return 0.0
        if self.distance == "bottleneck":
            return float(deaths[n_keep - 1] * 0.5)
        unmatched = deaths[n_keep - 1 :] * 0.5
        return float(np.sum(np.power(unmatched, self.order)) ** (1.0 / self.order))

    def _key(self, idx: np.ndarray) -> bytes:
        mask = np.zeros(self.n, dtype=bool)
        mask[idx] = True
        return np.packbits(mask).tobytes()

    def __call__(self, keep: np.ndarray | Sequence[int]) -> float:
        """Fitness of one kept subset (sorted int indices or a bool mask of length n)."""
        return float(self.batch([keep])[0])

    def batch(self, keeps: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
        """Fitness of many subsets; uncached ones of equal size are evaluated together."""
        indices = [keep_indices(k, self.n) for k in keeps]
        keys = [self._key(i) for i in indices]
        todo: dict[bytes, np.ndarray] = {}
        for key, idx in zip(keys, indices):
            if key not in self._cache and key not in todo:
                todo[key] = idx
        by_size: dict[int, list[bytes]] = {}
        for key, idx in todo.items():
            by_size.setdefault(len(idx), []).append(key)
        for size, group in by_size.items():
            values = self._evaluate(np.stack([todo[k] for k in group]) if size else np.empty((len(group), 0), np.intp))
            for key, value in zip(group, values):
                self._cache[key] = float(value)
            self.evaluations += len(group)
        return np.array([self._cache[k] for k in keys])

    def _evaluate(self, subsets: np.ndarray) -> np.ndarray:
        """Uncached fitness of a (b, k) stack of sorted index subsets."""
        b, k = subsets.shape
        per_dim: list[np.ndarray] = []
        if 0 in self.homology_dims:
            deaths = (subset_mst_edge_lengths(self.layer.distances, subsets, self.layer.tree) if k >= 2
                      else np.zeros((b, 0)))
            if self.distance == "bottleneck":
                per_dim.append(bottleneck_h0_sorted(self._full_desc, sorted_descending(deaths)))
            else:
                per_dim.append(wasserstein_h0_sorted(self._full_desc[::-1], np.sort(deaths, axis=1), self.order))
        higher = tuple(d for d in self.homology_dims if d > 0)
        if higher:
            ref = {d: self.reference[d] for d in higher}
            vals = np.zeros(b)
            for r in range(b):
                sub = self.layer.distances[np.ix_(subsets[r], subsets[r])]
                if self._skip_bound is not None and k >= 1:
                    # Exact shortcut (topology.bounds): the H0 part is already the maximum.
                    bound = higher_dim_bottleneck_bound(enclosing_radius(sub), *self._skip_bound)
                    if per_dim[0][r] >= bound:
                        self.skipped_higher += 1
                        continue
                sub_diagrams = persistence_diagrams(sub, higher, method=self.persistence_method)
                vals[r] = diagram_distance(ref, sub_diagrams, self.distance, order=self.order)
            per_dim.append(vals)
        if self.distance == "bottleneck":
            return np.max(per_dim, axis=0)
        return np.sum(np.power(per_dim, self.order), axis=0) ** (1.0 / self.order)
