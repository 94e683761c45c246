"""Betti numbers of point clouds at a chosen scale, from GUDHI persistent homology.

A point cloud has no Betti numbers of its own; a simplicial complex built on it at some
scale does. This module builds GUDHI's Vietoris-Rips complex (any dimension, points or a
distance matrix) or alpha complex (low-dimensional points) and reads the Betti numbers off
the persistence barcode.

Scale convention (both complexes)
    Scales are **edge lengths**: in the Rips complex at scale ``s`` two points are joined
    when their distance is ``<= s``. GUDHI's alpha filtration values are squared radii
    ``a``; they are converted to ``2 * sqrt(a)`` so that both complexes share units (two
    balls of radius ``r`` touch when their centres are ``2 r`` apart, so H0 of both
    complexes agrees exactly).

What is counted (``count``)
    ``"alive"`` (default): the Betti number of the complex at scale ``s``, i.e. the number
    of bars ``[birth, death)`` with ``birth <= s < death``. This is the textbook
    ``beta_k(VR_s(X))``; for H0 it is the number of connected components of the graph
    "distance <= s".
    ``"persistent"``: the number of bars whose persistence ``death - birth`` exceeds ``s``
    (features that live longer than ``s``). For H0 both counts agree (every H0 bar is born
    at 0).

Scale reference (``scale_reference``)
    ``"diameter"`` (default): ``s = scale * diameter(X)``, so the count does not depend on
    the units of the cloud (a filter whose maps are twice as large gets the same Betti
    numbers). ``"median"``: ``s = scale * median pairwise distance`` -- also unit-free, and
    robust to a few outlying points, which otherwise set the diameter alone.
    ``"absolute"``: ``s = scale``.

Example:
    >>> import numpy as np
    >>> t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    >>> circle = np.c_[np.cos(t), np.sin(t)]
    >>> betti_numbers(circle, dims=(0, 1), scale=0.2, scale_reference="absolute")
    (1, 1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Sequence, Tuple

import gudhi
import numpy as np

from .distances import diameter, distance_matrix  # the parameter distance_matrix= below shadows it in two functions
from .persistence import h0_diagram
from .validation import check_choice, check_distance_matrix, check_homology_dims, check_int, check_number, check_points

ScaleReference = Literal["diameter", "median", "absolute"]
Count = Literal["alive", "persistent"]
ComplexKind = Literal["rips", "alpha"]

_SCALE_REFERENCES = ("diameter", "median", "absolute")
_COUNTS = ("alive", "persistent")
_COMPLEXES = ("rips", "alpha")
_MAX_POINTS_FOR_MEDIAN = 4096


@dataclass(frozen=True)
class BettiScale:
    """Where on the filtration Betti numbers are read, and what is counted.

    Example:
        >>> BettiScale(0.25, "diameter").resolve(diameter=8.0)
        2.0
    """

    value: float = 0.5
    reference: ScaleReference = "diameter"
    count: Count = "alive"

    def __post_init__(self) -> None:
        check_number(self.value, "scale", minimum=0)
        # frozen: the canonical (lower-case) names are set through object.__setattr__
        object.__setattr__(self, "reference", check_choice(self.reference, "scale_reference", _SCALE_REFERENCES))
        object.__setattr__(self, "count", check_choice(self.count, "count", _COUNTS))

    def resolve(self, diameter: float, median: Optional[float] = None) -> float:
        """The scale in the cloud's own distance units (``median``: of the pairwise distances)."""
        if self.reference == "diameter":
            return float(self.value * diameter)
        if self.reference == "median":
            if median is None:
                raise ValueError("scale_reference='median' needs the median pairwise distance")
            return float(self.value * median)
        return float(self.value)

    @staticmethod
    def distance_stats(distance_matrix: np.ndarray) -> Tuple[float, float]:
        """``(diameter, median pairwise distance)`` of a distance matrix (off-diagonal pairs).

        Example:
            >>> BettiScale.distance_stats(np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 3.0], [4.0, 3.0, 0.0]]))
            (4.0, 3.0)
        """
        n = distance_matrix.shape[0]
        if n < 2:
            return 0.0, 0.0
        upper = distance_matrix[np.triu_indices(n, 1)]
        return float(upper.max()), float(np.median(upper))


def pairwise_distances(points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix (float64) of an ``(n, d)`` array: :func:`distance_matrix`.

    Example:
        >>> float(pairwise_distances(np.array([[0.0, 0.0], [3.0, 4.0]]))[0, 1])
        5.0
    """
    return distance_matrix(points, "euclidean")


def persistence_intervals(
    points: Optional[np.ndarray] = None,
    *,
    distance_matrix: Optional[np.ndarray] = None,
    max_dimension: int = 1,
    complex: ComplexKind = "rips",
    max_edge_length: float = math.inf,
) -> Dict[int, np.ndarray]:
    """Persistence bars per homology dimension ``0..max_dimension`` (edge-length units).

    The complex is truncated at ``max_edge_length``: bars still alive there come back with
    ``death = inf``. For Rips with ``max_dimension >= 1`` the 1-skeleton is reduced with
    GUDHI's edge collapse first (it preserves the persistence of flag filtrations).

    Example:
        >>> bars = persistence_intervals(np.array([[0.0], [1.0], [5.0]]), max_dimension=0)
        >>> sorted(bars[0][:, 1].tolist())
        [1.0, 4.0, inf]
    """
    max_dimension = check_int(max_dimension, "max_dimension", 0)
    complex = check_choice(complex, "complex", _COMPLEXES)
    if (points is None) == (distance_matrix is None):
        raise ValueError("give exactly one of points= or distance_matrix=")

    if complex == "alpha":
        if points is None:
            raise ValueError("complex='alpha' needs points=, not a distance matrix; use complex='rips'")
        x = np.asarray(check_points(points), dtype=np.float64)
        max_alpha_square = math.inf if math.isinf(max_edge_length) else (max_edge_length / 2.0) ** 2
        st = gudhi.AlphaComplex(points=x).create_simplex_tree(max_alpha_square=max_alpha_square)
        _compute_persistence(st, max_dimension)
        # alpha filtration = squared radius -> edge-length units 2*sqrt(a)
        return {k: 2.0 * np.sqrt(_bars(st, k)) for k in range(max_dimension + 1)}

    if distance_matrix is None:
        distance_matrix = pairwise_distances(points)  # type: ignore[arg-type]
    dm = check_distance_matrix(distance_matrix, "distance_matrix", min_points=1)
    threshold = math.inf if math.isinf(max_edge_length) else float(max_edge_length)
    rips = gudhi.RipsComplex(distance_matrix=dm, max_edge_length=threshold)
    st = rips.create_simplex_tree(max_dimension=1)
    if max_dimension >= 1:
        st.collapse_edges(-1)  # until no more edge can be collapsed
        st.expansion(max_dimension + 1)
    _compute_persistence(st, max_dimension)
    return {k: _bars(st, k) for k in range(max_dimension + 1)}


def h0_intervals(distance_matrix: np.ndarray) -> np.ndarray:
    """H0 bars of the Rips filtration, from a minimum spanning tree (no simplicial complex).

    The finite bars are :func:`~nni_topo_pruner.topology.persistence.h0_diagram`'s (the
    minimum spanning tree's edge weights), plus GUDHI's one infinite bar. GUDHI also lists
    zero-length bars (duplicate points); no count here sees them (tested against GUDHI).

    Example:
        >>> h0_intervals(np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]]))[:, 1].tolist()
        [1.0, 2.0, inf]
    """
    finite = h0_diagram(check_distance_matrix(distance_matrix, "distance_matrix", min_points=1))
    return np.vstack([finite, [[0.0, np.inf]]])


def betti_at_scale(intervals: Dict[int, np.ndarray], scale: float, count: Count = "alive") -> Dict[int, int]:
    """Count bars per dimension at ``scale`` (see the module doc for ``count``).

    Example:
        >>> betti_at_scale({0: np.array([[0.0, 1.0], [0.0, np.inf]])}, 0.5)
        {0: 2}
    """
    count = check_choice(count, "count", _COUNTS)
    out = {}
    for k, bars in intervals.items():
        bars = np.asarray(bars, dtype=np.float64).reshape(-1, 2)
        if count == "alive":
            out[k] = int(np.count_nonzero((bars[:, 0] <= scale) & (bars[:, 1] > scale)))
        else:
            out[k] = int(np.count_nonzero((bars[:, 1] - bars[:, 0]) > scale))
    return out


def betti_numbers(
    points: Optional[np.ndarray] = None,
    *,
    distance_matrix: Optional[np.ndarray] = None,
    dims: Sequence[int] = (0,),
    scale: float = 0.5,
    scale_reference: ScaleReference = "diameter",
    count: Count = "alive",
    complex: ComplexKind = "rips",
) -> Tuple[int, ...]:
    """Betti numbers ``(b_k for k in dims)`` of a cloud at one scale.

    Only the part of the filtration that matters is built: for ``count="alive"`` the
    complex stops at the scale itself (the cost grows with the scale, not with the cloud's
    full filtration).

    Example:
        >>> two_points = np.array([[0.0, 0.0], [10.0, 0.0]])
        >>> betti_numbers(two_points, scale=0.5), betti_numbers(two_points, scale=1.0)
        ((2,), (1,))
    """
    dims = check_homology_dims(dims, "dims", sort=False)
    spec = BettiScale(scale, scale_reference, count)
    complex = check_choice(complex, "complex", _COMPLEXES)
    if complex == "alpha" and points is None:
        raise ValueError("complex='alpha' needs points=, not a distance matrix; use complex='rips'")

    if complex == "rips" and distance_matrix is None:
        distance_matrix = pairwise_distances(points)  # type: ignore[arg-type]
    if distance_matrix is not None:
        dm = check_distance_matrix(distance_matrix, "distance_matrix", min_points=1)
        diam, median = BettiScale.distance_stats(dm)
    else:
        x = check_points(points)  # type: ignore[arg-type]
        if spec.reference == "median":
            if len(x) > _MAX_POINTS_FOR_MEDIAN:
                raise ValueError(f"scale_reference='median' on {len(x)} points would need all pairwise distances; "
                                 f"use 'diameter' or 'absolute', or subsample to <= {_MAX_POINTS_FOR_MEDIAN} points")
            diam, median = BettiScale.distance_stats(pairwise_distances(x))
        else:
            diam, median = diameter(x), None
    s = spec.resolve(diam, median)

    # "alive" and H0-only "persistent" need the filtration only up to s (bars alive at s
    # come back infinite); higher-dimensional "persistent" counts need all of it.
    truncate = spec.count == "alive" or max(dims) == 0
    kwargs = dict(max_dimension=max(dims), complex=complex, max_edge_length=s if truncate else math.inf)
    if complex == "rips":
        bars = persistence_intervals(distance_matrix=dm, **kwargs)
    else:
        bars = persistence_intervals(points=points, **kwargs)
    counts = betti_at_scale(bars, s, spec.count)
    return tuple(counts[k] for k in dims)


# ---------------------------------------------------------------------------- helpers

def _compute_persistence(st: "gudhi.SimplexTree", max_dimension: int) -> None:
    # GUDHI skips homology in the complex's top dimension unless asked; that top dimension
    # is only a "killer" when the complex reaches max_dimension + 1 (the usual case), but a
    # truncated complex can stop lower (no edges, no triangles) and then it is needed.
    st.compute_persistence(persistence_dim_max=st.dimension() <= max_dimension)


def _bars(st: "gudhi.SimplexTree", dim: int) -> np.ndarray:
    bars = np.asarray(st.persistence_intervals_in_dimension(dim), dtype=np.float64)
    return bars.reshape(-1, 2)
