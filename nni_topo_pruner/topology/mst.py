"""Minimum spanning trees of dense distance matrices, and H0 persistence from them.

For a Vietoris-Rips filtration every vertex is born at 0 and two components merge when
the shortest edge between them appears, so the finite H0 bars are exactly ``(0, w)`` for
the edge weights ``w`` of a minimum spanning tree (Kruskal's algorithm *is* the H0
persistence algorithm). Prim's algorithm on the dense matrix is O(n^2) time, O(n) memory
beyond the matrix; :func:`mst_edge_lengths_batch` runs Prim on many vertex subsets of one
matrix, which is what a genetic algorithm's population needs. Both loops are compiled
(:mod:`~nni_topo_pruner.topology.kernels`).

Example:
    >>> import numpy as np
    >>> d = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    >>> sorted(mst_edge_lengths(d).tolist())
    [1.0, 2.0]
"""
from __future__ import annotations

import numpy as np

from .kernels import prim_edges, prim_subset_weights


# (u, v, w): the tree's edges u[i] - v[i] and their weights, as mst_edges returns them
MinimumSpanningTree = tuple[np.ndarray, np.ndarray, np.ndarray]


def mst_edges(dist: np.ndarray) -> MinimumSpanningTree:
    """Prim's minimum spanning tree of a dense symmetric matrix.

    Returns:
        ``(u, v, w)``: the n-1 tree edges ``u[i] - v[i]`` with weights ``w[i]``, in the order
        Prim added them (``v[i]`` is the vertex added at step i, ``u[i]`` its tree neighbour).
    """
    n = dist.shape[0]
    if n < 2:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty.copy(), np.empty(0)
    us = np.empty(n - 1, dtype=np.intp)
    vs = np.empty(n - 1, dtype=np.intp)
    ws = np.empty(n - 1)
    prim_edges(np.ascontiguousarray(dist), us, vs, ws)
    return us, vs, ws


def mst_edge_lengths(dist: np.ndarray) -> np.ndarray:
    """Weights of a minimum spanning tree of ``dist`` (n-1 values, unsorted)."""
    return mst_edges(dist)[2]


def mst_edge_lengths_batch(dist: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """MST weights of many vertex subsets of one distance matrix, by a batched Prim.

    Args:
        dist: (n, n) distance matrix of the whole layer.
        subsets: (b, k) integer array, each row the k vertices of one subset.

    Returns:
        (b, k-1) array; row i holds the MST edge weights of ``dist[subsets[i]][:, subsets[i]]``.
    """
    subsets = np.asarray(subsets, dtype=np.intp)
    b, k = subsets.shape
    out = np.empty((b, max(k - 1, 0)))
    if k < 2 or b == 0:
        return out
    if subsets.min() < 0 or subsets.max() >= dist.shape[0]:  # the compiled loop does not check its indices
        raise ValueError(f"subsets must hold vertex indices in [0, {dist.shape[0]}), "
                         f"found {int(subsets.min())}..{int(subsets.max())}")
    prim_subset_weights(np.ascontiguousarray(dist), subsets, out)
    return out


def subtree_edge_lengths(tree: MinimumSpanningTree, n: int, subsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MST weights of the subsets that span a connected part of ``tree``, read from it.

    If the vertices S span a connected subtree of a minimum spanning tree T of the whole
    cloud, T restricted to S is a minimum spanning tree of S (exact, ties included: the
    T-path between two vertices of S stays in S, and no edge on it is longer than the edge
    that closes the cycle, which is the cycle condition within S). So S's H0 deaths are
    T's edges inside S, with no Prim: O(b n) for a batch instead of O(b k^2). A subset of
    k vertices spans a connected part iff k - 1 tree edges lie inside it (a forest with
    k - 1 edges on k vertices is a tree).

    Args:
        tree: ``mst_edges(dist)`` of the whole (n-point) cloud.
        n: number of points of the whole cloud.
        subsets: (b, k) integer array of distinct vertices per row.

    Returns:
        ``(connected, lengths)``: a (b,) bool array, and a (c, k-1) array with the edge weights
        (in tree order) of the c connected rows, in their order.

    Example:
        >>> d = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])   # tree 0-1-2
        >>> connected, lengths = subtree_edge_lengths(mst_edges(d), 3, np.array([[0, 1], [0, 2], [1, 2]]))
        >>> connected.tolist(), lengths.tolist()
        ([True, False, True], [[1.0], [2.0]])
    """
    u, v, w = tree
    subsets = np.asarray(subsets, dtype=np.intp)
    b, k = subsets.shape
    member = np.zeros((b, n), dtype=bool)
    member[np.arange(b)[:, None], subsets] = True
    inside = member[:, u] & member[:, v]
    connected = inside.sum(axis=1) == k - 1
    lengths = np.broadcast_to(w, inside.shape)[inside & connected[:, None]].reshape(-1, max(k - 1, 0))
    return connected, lengths


def subset_mst_edge_lengths(dist: np.ndarray, subsets: np.ndarray, tree: MinimumSpanningTree | None = None) -> np.ndarray:
    """:func:`mst_edge_lengths_batch`, with the subsets that span a connected part of ``tree``
    (the whole cloud's MST, when the caller has it) read from the tree instead
    (:func:`subtree_edge_lengths`). Each row holds the same multiset of weights either way;
    only their order within a row may differ (callers sort them).

    Example:
        >>> d = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
        >>> subset_mst_edge_lengths(d, np.array([[0, 1], [0, 2]]), mst_edges(d)).tolist()
        [[1.0], [3.0]]
    """
    subsets = np.asarray(subsets, dtype=np.intp)
    b, k = subsets.shape
    if tree is None or k < 2 or b == 0:
        return mst_edge_lengths_batch(dist, subsets)
    connected, lengths = subtree_edge_lengths(tree, dist.shape[0], subsets)
    if connected.all():
        return lengths
    out = np.empty((b, k - 1))
    out[connected] = lengths
    out[~connected] = mst_edge_lengths_batch(dist, subsets[~connected])
    return out
