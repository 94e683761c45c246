"""Leave-one-out salience: how far a layer's persistence diagram moves when one neuron goes.

``salience[i] = diagram_distance(D(cloud), D(cloud without point i))``; bigger means the
point matters more to the cloud's shape (a duplicate point has salience 0).

H0 is exact and fast: removing vertex v from a minimum spanning tree T leaves the forest
T - v, whose deg(v) pieces are reconnected by the minimum spanning tree of the "piece
graph" (edge weight = shortest distance between two pieces). Every edge of T - v is still
the lightest edge across its own cut, so ``MST(cloud - v) = (T - v) + MST(pieces)``. Leaves
(most vertices of a spanning tree) need no search at all; for an inner vertex only the
pieces other than the largest one are scanned, O((n - largest piece) * n) per vertex.
The Wasserstein distance of order 1 needs even less: by Kantorovich-Rubinstein duality
(the ground cost ``min(|a - b|, a/2 + b/2)`` with the diagonal as a sink is a metric) it
depends only on the difference of the two diagrams, and ``D(cloud)`` and
``D(cloud - v)`` share every bar except v's ``deg(v)`` tree edges and the ``deg(v) - 1``
edges that replace them; so ``salience[v] = W1(v's tree edges, replacement edges)``, a
problem of size ``deg(v)`` (exact; tested against the full dynamic programme and POT).
Higher homology dimensions are recomputed per left-out point with the chosen persistence
method (up to n persistence computations); with the bottleneck distance, points whose H0
part already exceeds a proven bound on any change in dims >= 1 are skipped (exact, see
:mod:`~nni_topo_pruner.topology.bounds`).

Example:
    >>> import numpy as np
    >>> from nni_topo_pruner.topology.distances import distance_matrix
    >>> pts = np.array([[0.0], [0.0], [1.0], [5.0]])
    >>> leave_one_out_salience(distance_matrix(pts)).round(2)
    array([0., 0., 1., 2.])
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import depth_first_order
from tqdm.auto import tqdm

from .diagram_distance import (
    sorted_descending,
    pad_last,
    bottleneck_h0_sorted,
    check_distance_kind,
    check_order,
    diagram_distance,
    wasserstein_h0_sorted,
)
from .bounds import (
    enclosing_radius_without_each,
    higher_dim_bottleneck_bound,
    max_persistence,
    smallest_positive_distance,
)
from .mst import MinimumSpanningTree, mst_edges
from .persistence import persistence_diagrams
from .validation import check_distance_matrix, check_homology_dims

logger = logging.getLogger(__name__)

# Leave-one-out diagrams compared per block (bounds the (block, n) temporaries).
_ROWS_PER_BLOCK = 512


def _rooted_tree(n: int, us: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, list[list[int]], np.ndarray, np.ndarray]:
    """Parent array, children lists, preorder position ``tin`` and subtree end ``tout``
    (the subtree of v occupies preorder positions ``[tin[v], tout[v])``), rooted at 0.

    A depth-first preorder (scipy's, in C) keeps every subtree contiguous; the pieces of
    ``T - v`` and so every salience depend only on the tree, not on the order children are
    visited in."""
    graph = csr_matrix((np.ones(len(us)), (us, vs)), shape=(n, n))
    order, parent = depth_first_order(graph, 0, directed=False, return_predecessors=True)
    if len(order) != n:
        raise ValueError(f"the tree's {len(us)} edges do not connect its {n} points")
    parent = np.where(parent < 0, -1, parent).astype(np.intp)
    tin = np.empty(n, dtype=np.intp)
    tin[order] = np.arange(n)
    # subtree sizes, leaves first: reverse preorder visits every child before its parent
    size = np.ones(n, dtype=np.intp)
    parent_list, size_list = parent.tolist(), size.tolist()
    for v in order[:0:-1].tolist():
        size_list[parent_list[v]] += size_list[v]
    size = np.asarray(size_list, dtype=np.intp)
    children: list[list[int]] = [[] for _ in range(n)]
    for v in order[1:].tolist():
        children[parent_list[v]].append(v)
    return parent, children, tin, tin + size


def _replacement_weights(
    dist: np.ndarray,
    position: np.ndarray,
    v: int,
    parent: np.ndarray,
    children: list[int],
    tin: np.ndarray,
    tout: np.ndarray,
) -> np.ndarray:
    """Weights of the edges that reconnect the pieces of T - v (MST of the piece graph).

    ``position[p]`` is the vertex at preorder position p; rows are gathered in preorder as
    needed (no permuted n x n copy).
    """
    n = dist.shape[0]
    # Pieces as lists of preorder ranges: the child subtrees, then the rest of the tree.
    pieces: list[list[tuple[int, int]]] = [[(int(tin[c]), int(tout[c]))] for c in children]
    if parent[v] >= 0:
        rest = [(0, int(tin[v])), (int(tout[v]), n)]
        pieces.append([r for r in rest if r[1] > r[0]])
    c = len(pieces)
    if c < 2:
        return np.empty(0)
    sizes = [sum(b - a for a, b in p) for p in pieces]
    largest = int(np.argmax(sizes))
    between = np.full((c, c), np.inf)
    col_slices = [p for p in pieces]
    for i, piece in enumerate(pieces):
        if i == largest:
            continue
        rows = np.concatenate([np.arange(a, b) for a, b in piece])
        block = dist[position[rows]][:, position]
        for j, cols in enumerate(col_slices):
            if j == i:
                continue
            best = min(block[:, a:b].min() for a, b in cols)
            between[i, j] = between[j, i] = min(between[i, j], best)
    # Prim on the small piece graph.
    in_tree = np.zeros(c, dtype=bool)
    in_tree[0] = True
    best = between[0].copy()
    weights = []
    for _ in range(c - 1):
        cand = np.where(in_tree, np.inf, best)
        j = int(np.argmin(cand))
        weights.append(cand[j])
        in_tree[j] = True
        best = np.minimum(best, between[j])
    return np.asarray(weights)


def _leave_one_out_changes(dist: np.ndarray, skip: frozenset = frozenset(), tree: MinimumSpanningTree | None = None):
    """The full MST weights, then blocks of up to ``_ROWS_PER_BLOCK`` points not in ``skip``,
    in index order: ``(points, removed, extra)`` where row r of the (block, max degree)
    array ``removed`` holds the ids of point r's tree edges (padded with -1) and ``extra``
    the weights of the edges that reconnect T - point (zero-padded: a zero is a bar on the
    diagonal). Leaves (most points) need no search; memory stays O(block * n)."""
    n = dist.shape[0]
    us, vs, ws = mst_edges(dist) if tree is None else tree
    yield ws
    points = np.array([v for v in range(n) if v not in skip], dtype=np.intp)
    ends = np.concatenate([us, vs]).astype(np.intp)
    degree = np.bincount(ends, minlength=n)
    by_point = np.argsort(ends, kind="stable")  # each point's tree edges, in edge order
    first_edge = np.concatenate([[0], np.cumsum(degree)])
    edge_of = np.concatenate([np.arange(len(us)), np.arange(len(us))])[by_point]
    rooted = _rooted_tree(n, us, vs) if n >= 3 else None
    if rooted is not None:
        parent, children, tin, tout = rooted
        position = np.empty(n, dtype=np.intp)
        position[tin] = np.arange(n)  # position[p] = vertex at preorder p
    for start in range(0, len(points), _ROWS_PER_BLOCK):
        block = points[start:start + _ROWS_PER_BLOCK]
        deg = degree[block]
        width = max(int(deg.max(initial=0)), 1)
        removed = np.full((len(block), width), -1, dtype=np.intp)
        rows = np.repeat(np.arange(len(block)), deg)
        slots = np.arange(len(rows)) - np.repeat(np.cumsum(deg) - deg, deg)
        removed[rows, slots] = edge_of[np.repeat(first_edge[block], deg) + slots]
        extra = np.zeros((len(block), width))
        if rooted is not None:
            for r in np.flatnonzero(deg >= 2).tolist():
                weights = _replacement_weights(dist, position, int(block[r]), parent, children[block[r]], tin, tout)
                extra[r, : len(weights)] = weights
        yield block, removed, extra


def _h0_salience(dist: np.ndarray, kind: str, order: float, skip: frozenset = frozenset(),
                 tree: MinimumSpanningTree | None = None) -> np.ndarray:
    changes = _leave_one_out_changes(dist, skip, tree)
    full = next(changes)
    n = dist.shape[0]
    full_desc = sorted_descending(full[full > 0.0])
    out = np.zeros(n)
    for rows, removed, extra in changes:
        present = removed >= 0
        if kind == "wasserstein" and order == 1.0:
            # W1 depends only on the difference of the two diagrams (Kantorovich-Rubinstein
            # duality; see the module docstring), and the diagrams share every bar except v's
            # tree edges and their replacements: compare just those, deg(v) bars per row.
            removed_weights = np.where(present, full[np.where(present, removed, 0)] if len(full) else 0.0, 0.0)
            out[rows] = wasserstein_h0_sorted(np.sort(removed_weights, axis=1), np.sort(extra, axis=1), 1.0)
            continue
        # Row r: the full weights with v's tree edges zeroed (zero = a point on the diagonal,
        # which changes no distance) and the reconnecting edges in the extra columns.
        extra = extra[:, : max(int(present.sum(axis=1).max(initial=0)) - 1, 0)]  # deg - 1 replacements at most
        block = np.zeros((len(rows), max(len(full) + extra.shape[1], 1)))
        block[:, : len(full)] = full
        block[np.nonzero(present)[0], removed[present]] = 0.0
        block[:, len(full) : len(full) + extra.shape[1]] = extra
        if kind == "wasserstein":  # zeros cost nothing in the dynamic programme
            out[rows] = wasserstein_h0_sorted(full_desc[::-1], np.sort(block, axis=1), order)
        else:
            block = sorted_descending(block)  # zeros sink to the end (points on the diagonal)
            length = max(block.shape[1], len(full_desc))
            out[rows] = bottleneck_h0_sorted(pad_last(full_desc, length), pad_last(block, length))
    return out


def leave_one_out_salience(
    dist: np.ndarray,
    homology_dims: Sequence[int] = (0,),
    kind: str = "bottleneck",
    *,
    order: float = 1.0,
    diagrams: dict[int, np.ndarray] | None = None,
    method: str = "auto",
    max_edge_length: float | None = None,
    progress: bool = False,
    skip: Sequence[int] = (),
    tree: MinimumSpanningTree | None = None,
) -> np.ndarray:
    """Per-point salience: the diagram distance between the cloud and the cloud without it.

    Args:
        dist: (n, n) distance matrix of the cloud.
        homology_dims: dimensions compared (combined as in :func:`diagram_distance`).
        kind: ``"bottleneck"`` or ``"wasserstein"`` (with ``order``).
        diagrams: the cloud's diagrams if already computed (saves one computation).
        method: persistence method for dimensions above 0 (H0 is always the exact MST path).
        max_edge_length: cap of the leave-one-out filtrations in dims >= 1 (an
            approximation, see :func:`persistence_diagrams`); ``None``: exact.
        progress: show a tqdm bar over the left-out points of the higher dimensions.
        skip: points whose salience is not needed (e.g. an anchor that is never removed);
            their entry is 0.
        tree: the cloud's minimum spanning tree, ``mst_edges(dist)``, if already built
            (the H0 diagram needs the same tree: build it once).

    Returns:
        (n,) float64 array; a cloud with fewer than 2 points has salience 0.
    """
    dims = check_homology_dims(homology_dims)
    kind = check_distance_kind(kind)
    order = check_order(order)
    dist = check_distance_matrix(dist)
    n = dist.shape[0]
    if n < 2:
        return np.zeros(n)
    per_dim: list[np.ndarray] = []
    if 0 in dims:
        per_dim.append(_h0_salience(dist, kind, order, frozenset(int(i) for i in skip), tree))
    higher = tuple(d for d in dims if d > 0)
    if higher:
        full = diagrams if diagrams is not None else persistence_diagrams(dist, higher, method=method)
        full = {d: full[d] for d in higher}
        values = np.zeros(n)
        todo = np.setdiff1d(np.arange(n), np.asarray(skip, dtype=np.intp))
        if kind == "bottleneck" and 0 in dims:
            # Exact shortcut: where the H0 part already reaches the bound on any change in
            # dims >= 1, the maximum over dimensions is the H0 part (see topology.bounds).
            bound = higher_dim_bottleneck_bound(
                enclosing_radius_without_each(dist), smallest_positive_distance(dist), max_persistence(full, higher)
            )
            todo = np.intersect1d(todo, np.flatnonzero(per_dim[0] < bound))
        logger.debug("leave-one-out in dims %s for %d of %d points", higher, len(todo), n)
        keep = np.ones(n, dtype=bool)
        for i in tqdm(todo, desc="leave-one-out H1+", disable=not progress, leave=False):
            keep[i] = False
            sub = dist[np.ix_(keep, keep)]
            keep[i] = True
            sub_diagrams = persistence_diagrams(sub, higher, method=method, max_edge_length=max_edge_length)
            values[i] = diagram_distance(full, sub_diagrams, kind, order=order)
        per_dim.append(values)
    if kind == "bottleneck":
        return np.max(per_dim, axis=0)
    return np.sum(np.power(per_dim, order), axis=0) ** (1.0 / order)
