"""Vietoris-Rips persistence diagrams of a distance matrix.

Conventions (the same for every method, and what the rest of the package relies on):

* a diagram is ``{homology_dim: (m, 2) float64 array of (birth, death)}``, rows sorted;
* only finite bars are returned. Without an edge-length cap the Rips filtration ends in a
  full simplex, so the only essential (infinite) bar is the one H0 bar of the connected
  cloud: every non-empty cloud has exactly one, it carries no information about the
  cloud's shape and would make every diagram distance infinite, so it is dropped;
* zero-length bars (duplicate points, simultaneous appearances) are dropped, as GUDHI does.

Methods:

* ``"gudhi"``: :class:`gudhi.RipsComplex` -> simplex tree -> persistence. The reference;
  its cost grows like n^(d+2) for H_d (a 256-point H1 takes seconds).
* ``"ripser"``: GUDHI's Ripser-based :class:`gudhi.sklearn.rips_persistence.RipsPersistence`
  on the full matrix: exact, the same diagrams, much faster for H1.
* ``"fast"``: H0 as minimum-spanning-tree edge lengths (exact, O(n^2), no complex built),
  higher dimensions through ``"ripser"``.
* ``"auto"``: ``"fast"``.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> persistence_diagrams(d)[0]
    array([[0., 1.]])
"""
from __future__ import annotations

from collections.abc import Sequence

import gudhi
import numpy as np

from .mst import mst_edge_lengths
from .validation import check_choice, check_distance_matrix, check_homology_dims

SUPPORTED_PERSISTENCE_METHODS = ("auto", "fast", "ripser", "gudhi")


def check_persistence_method(method: str, name: str = "method") -> str:
    """Validate a persistence method name (case-insensitive) and return it in lower case."""
    return check_choice(method, name, SUPPORTED_PERSISTENCE_METHODS)


def _sorted_rows(d: np.ndarray, cap: float | None = None) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64).reshape(-1, 2)
    if cap is not None:  # bars still alive at the cap end there (truncated filtration)
        d = d.copy()
        d[:, 1] = np.minimum(d[:, 1], cap)
    d = d[np.isfinite(d[:, 1]) & (d[:, 1] > d[:, 0])]
    order = np.lexsort((d[:, 1], d[:, 0]))
    return np.ascontiguousarray(d[order])


def _gudhi(dist: np.ndarray, dims: tuple[int, ...], cap: float | None = None) -> dict[int, np.ndarray]:
    if cap is None:
        rips = gudhi.RipsComplex(distance_matrix=dist)
    else:
        rips = gudhi.RipsComplex(distance_matrix=dist, max_edge_length=cap)
    tree = rips.create_simplex_tree(max_dimension=max(dims) + 1)
    tree.compute_persistence()
    return {d: _sorted_rows(tree.persistence_intervals_in_dimension(d), cap) for d in dims}


def _ripser(dist: np.ndarray, dims: tuple[int, ...], cap: float | None = None) -> dict[int, np.ndarray]:
    from gudhi.sklearn.rips_persistence import RipsPersistence

    threshold = float("inf") if cap is None else float(cap)
    rips = RipsPersistence(homology_dimensions=list(dims), threshold=threshold, input_type="full distance matrix")
    diagrams = rips.fit_transform([dist])[0]
    return {d: _sorted_rows(dg, cap) for d, dg in zip(dims, diagrams)}


def h0_diagram(dist: np.ndarray, *, tree_weights: np.ndarray | None = None) -> np.ndarray:
    """Finite H0 diagram of the Rips filtration of ``dist`` from its minimum spanning tree
    (``tree_weights``: that tree's edge weights, when the caller has built it already)."""
    w = mst_edge_lengths(dist) if tree_weights is None else np.asarray(tree_weights, dtype=np.float64)
    w = np.sort(w[w > 0.0])
    return np.column_stack([np.zeros_like(w), w])


def persistence_diagrams(
    dist: np.ndarray,
    homology_dims: Sequence[int] = (0,),
    *,
    method: str = "auto",
    max_edge_length: float | None = None,
    tree_weights: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Finite persistence diagrams of the Vietoris-Rips filtration of a distance matrix.

    Args:
        dist: (n, n) symmetric distance matrix with zero diagonal.
        homology_dims: dimensions to compute, e.g. ``(0,)`` or ``(0, 1)``.
        method: ``"auto"``, ``"fast"``, ``"ripser"`` or ``"gudhi"`` (see the module doc).
        max_edge_length: an approximation for dimensions >= 1 only (H0 stays exact): the
            filtration stops there, bars alive at that length end there, later ones are
            missed. Each bar moves by at most ``enclosing radius - max_edge_length``; no
            error at all when the cap is at least the enclosing radius
            (``dist.max(axis=1).min()``). ``None`` (default): exact.
        tree_weights: the edge weights of ``dist``'s minimum spanning tree, when the caller has
            built it (the fast H0 path reads them instead of building the tree again).

    Returns:
        ``{dim: (m, 2) array}`` of finite, non-zero-length (birth, death) bars, rows sorted;
        the essential H0 bar is dropped.

    Example:
        >>> d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
        >>> persistence_diagrams(d, (0, 1))[0][:, 1]
        array([1. , 1.5])
    """
    dims = check_homology_dims(homology_dims)
    method = check_persistence_method(method)
    dist = check_distance_matrix(dist)
    n = dist.shape[0]
    if n < 2:
        return {d: np.empty((0, 2)) for d in dims}
    if max_edge_length is not None:
        if not np.isfinite(max_edge_length) or max_edge_length <= 0:
            raise ValueError(f"max_edge_length must be a positive finite number or None, got {max_edge_length!r}")
        max_edge_length = float(max_edge_length)
    higher = tuple(d for d in dims if d > 0)
    if max_edge_length is None and method == "gudhi":
        return _gudhi(dist, dims)
    if max_edge_length is None and method == "ripser":
        return _ripser(dist, dims)
    out: dict[int, np.ndarray] = {}
    if higher:
        out.update((_gudhi if method == "gudhi" else _ripser)(dist, higher, max_edge_length))
    if 0 in dims:
        out[0] = _gudhi(dist, (0,))[0] if method == "gudhi" else h0_diagram(dist, tree_weights=tree_weights)
    return {d: out[d] for d in dims}
