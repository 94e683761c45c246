"""Cheap upper bounds on how far the H1 (and higher) part of a diagram can move, used to
skip persistence computations whose result cannot change a bottleneck distance.

For a Rips filtration of a cloud Y:

* every bar of dimension >= 1 dies by the enclosing radius ``r(Y) = min_y max_y' d(y, y')``
  (from there on the complex is a cone over the centre y);
* every such bar is born at the diameter of some simplex with a positive length (points at
  distance 0 are identical and form contractible clusters), so at or after the smallest
  positive distance ``m`` of the layer.

So its persistence is at most ``r(Y) - m``, and the bottleneck distance between the
layer's diagram of that dimension and Y's (matching everything to the diagonal) is at most
``U(Y) = max(P / 2, (r(Y) - m) / 2)`` with P the layer's largest persistence in dims >= 1.
Since the bottleneck distance over several dimensions is the maximum over them, whenever
the H0 part already reaches ``U(Y)`` the higher dimensions cannot change the result and
need not be computed: an exact shortcut.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
    >>> float(enclosing_radius(d)), enclosing_radius_without_each(d).tolist()
    (1.5, [1.5, 2.0, 1.0])
"""
from __future__ import annotations

import numpy as np


def enclosing_radius(dist: np.ndarray) -> float:
    """``min_y max_y' dist[y, y']``: past this length the Rips complex is a cone."""
    if dist.shape[0] == 0:
        return 0.0
    return float(dist.max(axis=1).min())


def enclosing_radius_without_each(dist: np.ndarray) -> np.ndarray:
    """Enclosing radius of the cloud without point v, for every v (O(n^2) in all)."""
    n = dist.shape[0]
    if n < 3:
        return np.zeros(n)
    top2_idx = np.argpartition(dist, n - 2, axis=1)[:, -2:]
    top2 = np.take_along_axis(dist, top2_idx, axis=1)
    first = np.argmax(top2, axis=1)
    arg1 = top2_idx[np.arange(n), first]
    val1 = top2[np.arange(n), first]
    val2 = top2[np.arange(n), 1 - first]
    out = np.empty(n)
    for v in range(n):
        row_max = np.where(arg1 == v, val2, val1)
        row_max[v] = np.inf
        out[v] = row_max.min()
    return out


def smallest_positive_distance(dist: np.ndarray) -> float:
    """Smallest positive off-diagonal entry (0.0 when there is none)."""
    positive = dist[dist > 0.0]
    return float(positive.min()) if positive.size else 0.0


def max_persistence(diagrams: dict[int, np.ndarray], dims: tuple[int, ...]) -> float:
    """Largest ``death - birth`` over the given dimensions (0.0 for empty diagrams)."""
    values = [float(np.max(diagrams[d][:, 1] - diagrams[d][:, 0])) for d in dims if len(diagrams[d])]
    return max(values, default=0.0)


def higher_dim_bottleneck_bound(
    radius: np.ndarray | float, smallest_positive: float, layer_max_persistence: float
) -> np.ndarray:
    """``U = max(P / 2, (r - m) / 2)``: no bottleneck distance in dims >= 1 between the layer
    and a sub-cloud of enclosing radius r exceeds it (see the module doc)."""
    return np.maximum(layer_max_persistence * 0.5, np.maximum(np.asarray(radius) - smallest_positive, 0.0) * 0.5)
