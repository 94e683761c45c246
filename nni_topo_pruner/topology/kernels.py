"""Compiled inner loops of the topology (numba): Prim's minimum spanning tree, on the whole
cloud and on a batch of vertex subsets, and the slope trick for the exact H0 Wasserstein-1
distance. They are the loops the genetic algorithm runs thousands of times per layer, where
numpy's per-call overhead or Python's per-point cost dominated.

Each kernel is plain Python that numba compiles on first use (cached on disk, so a machine
pays the compilation once). ``kernel.py_func`` is the same code run by CPython: the tests
compare the two bit for bit. No ``fastmath``: the compiled code does the same floating-point
operations in the same order as the Python code (no reassociation, no fused multiply-add), so
results do not depend on numba, the CPU, or ``NUMBA_DISABLE_JIT``.

Example:
    >>> import numpy as np
    >>> d = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    >>> us, vs, ws = np.empty(2, np.intp), np.empty(2, np.intp), np.empty(2)
    >>> prim_edges(d, us, vs, ws)
    >>> ws.tolist()
    [1.0, 2.0]
"""
from __future__ import annotations

import heapq
import logging
import math
import time

import numba
import numpy as np

logger = logging.getLogger(__name__)


def compiled(function):
    """``numba.njit`` with an on-disk cache (compiled once per machine: beside this file, or in
    numba's user cache when the package is read-only) and ``nogil`` (callers in threads run in
    parallel). Where numba finds no writable cache location at all (a read-only install run by
    a user without a home, e.g. ``docker run --user``), it compiles once per process instead:
    numba raises at decoration time there, which must not make the package unimportable."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as error:  # "cannot cache function ...: no locator available"
        logger.debug("%s: no numba cache (%s); compiled once per process", function.__name__, error)
        return numba.njit(nogil=True)(function)


@compiled
def prim_edges(dist: np.ndarray, us: np.ndarray, vs: np.ndarray, ws: np.ndarray) -> None:
    """Prim's minimum spanning tree of the dense symmetric ``dist`` (n x n, n >= 2), written
    into ``us``, ``vs``, ``ws`` (n - 1 each): edge ``us[i] - vs[i]`` of weight ``ws[i]``, in the
    order Prim added them. Ties go to the first candidate in the working order (the same
    order on every machine: the removed vertex's slot takes the last one)."""
    n = dist.shape[0]
    remaining = np.arange(1, n)
    best = dist[0, 1:].copy()
    parent = np.zeros(n - 1, dtype=np.intp)
    m = n - 1
    j = 0  # argmin of best (first occurrence)
    for t in range(1, m):
        if best[t] < best[j]:
            j = t
    for step in range(n - 1):
        v = remaining[j]
        us[step], vs[step], ws[step] = parent[j], v, best[j]
        m -= 1  # drop the chosen vertex: the last one moves into its slot
        remaining[j], best[j], parent[j] = remaining[m], best[m], parent[m]
        j = 0
        for t in range(m):
            d = dist[v, remaining[t]]
            if d < best[t]:
                best[t] = d
                parent[t] = v
            if best[t] < best[j]:
                j = t


@compiled
def prim_subset_weights(dist: np.ndarray, subsets: np.ndarray, out: np.ndarray) -> None:
    """For each row of ``subsets`` (b x k vertex indices, k >= 2), the MST edge weights of
    ``dist[row][:, row]`` into that row of ``out`` (b x k-1), in the order Prim adds them
    from the row's first vertex (ties: as :func:`prim_edges`)."""
    b, k = subsets.shape
    remaining = np.empty(k - 1, dtype=np.intp)
    best = np.empty(k - 1)
    for r in range(b):
        root = subsets[r, 0]
        for t in range(k - 1):
            remaining[t] = subsets[r, t + 1]
            best[t] = dist[root, remaining[t]]
        m = k - 1
        j = 0
        for t in range(1, m):
            if best[t] < best[j]:
                j = t
        for step in range(k - 1):
            v = remaining[j]
            out[r, step] = best[j]
            m -= 1
            remaining[j], best[j] = remaining[m], best[m]
            j = 0
            for t in range(m):
                d = dist[v, remaining[t]]
                if d < best[t]:
                    best[t] = d
                if best[t] < best[j]:
                    j = t


@compiled
def wasserstein1_h0_slope_kernel(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between H0 diagrams given as ascending float64 death
    times (the slope trick; the why is in :func:`~.diagram_distance.wasserstein1_h0_slope`)."""
    left = [0.0 for _ in range(0)]   # max-heap (negated) of the slopes of segments [s, s+1] with s < 0
    right = [0.0 for _ in range(0)]  # min-heap of the slopes of segments with s >= 0
    left_offset = 0.0  # added to every slope of that heap (gap * |s| terms)
    right_offset = 0.0
    left_sum = 0.0  # sum of the left slopes, offsets included
    value_at_min = 0.0  # the function's value at the leftmost s of its domain
    s_min = 0  # -s_min: the number of b points so far (= len(left))
    previous = 0.0
    n_a, n_b = len(a), len(b)
    i = j = 0
    a_next = a[0] if n_a else math.inf
    b_next = b[0] if n_b else math.inf
    while i < n_a or j < n_b:
        from_a = a_next <= b_next
        x = a_next if from_a else b_next
        gap = x - previous
        if gap > 0.0:
            value_at_min -= gap * s_min  # s_min <= 0: + gap * |s_min|
            left_offset -= gap
            right_offset += gap
            left_sum += gap * s_min  # - gap * len(left)
            previous = x
        half = 0.5 * x
        if from_a:  # slope -x/2 joins; the domain grows by one to the right
            i += 1
            a_next = a[i] if i < n_a else math.inf
            value_at_min += half
            if s_min != 0 and -half < left_offset - left[0]:
                moved = left_offset - heapq.heappushpop(left, half + left_offset)  # stored as -(slope - offset)
                left_sum += -half - moved
                heapq.heappush(right, moved - right_offset)
            else:
                heapq.heappush(right, -half - right_offset)
        else:  # slope +x/2 joins; the domain grows by one to the left
            j += 1
            b_next = b[j] if j < n_b else math.inf
            s_min -= 1
            if len(right) and half > right[0] + right_offset:
                moved = heapq.heappushpop(right, half - right_offset) + right_offset
            else:
                moved = half
            heapq.heappush(left, left_offset - moved)
            left_sum += moved
    return max(value_at_min + left_sum, 0.0)


@compiled
def wasserstein1_h0_slope_rows(a_rows: np.ndarray, b_rows: np.ndarray, out: np.ndarray) -> None:
    """:func:`wasserstein1_h0_slope_kernel` of each pair of rows (ascending float64 deaths)."""
    for r in range(a_rows.shape[0]):
        out[r] = wasserstein1_h0_slope_kernel(a_rows[r], b_rows[r])


@compiled
def gather_square(dist: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = dist[order[i], order[j]]``: a square matrix with its points in ``order``
    (a copy, so bit for bit the same values; a row at a time, each source row in cache)."""
    n = len(order)
    for i in range(n):
        row = dist[order[i]]
        for j in range(n):
            out[i, j] = row[order[j]]


@compiled
def gram_to_squared_distances(gram: np.ndarray, sq: np.ndarray, refine: float) -> int:
    """In place on the upper triangle of ``gram`` (diagonal included):
    ``gram[i, j] <- (-2 gram[i, j] + sq[i]) + sq[j]``, the squared distance by the Gram formula.
    Returns how many pairs ``i < j`` came out at most ``refine * (sq[i] + sq[j])`` (nearly
    coincident: the formula cancels there, :func:`close_pairs` lists them)."""
    n = gram.shape[0]
    count = 0
    for i in range(n):
        si = sq[i]
        gram[i, i] = (gram[i, i] * -2.0 + si) + si
        for j in range(i + 1, n):
            value = (gram[i, j] * -2.0 + si) + sq[j]
            gram[i, j] = value
            if value <= refine * (si + sq[j]):
                count += 1
    return count


@compiled
def close_pairs(squared: np.ndarray, sq: np.ndarray, refine: float, rows: np.ndarray, cols: np.ndarray) -> None:
    """The pairs :func:`gram_to_squared_distances` counted, row by row, into ``rows``/``cols``."""
    n = squared.shape[0]
    k = 0
    for i in range(n):
        for j in range(i + 1, n):
            if squared[i, j] <= refine * (sq[i] + sq[j]):
                rows[k] = i
                cols[k] = j
                k += 1


@compiled
def squared_to_symmetric_distances(squared: np.ndarray) -> None:
    """In place: the upper triangle's square roots (negatives from rounding clamped to 0),
    mirrored onto the lower triangle in tiles (each tile's rows and columns stay in cache)."""
    n = squared.shape[0]
    for i in range(n):
        for j in range(i, n):
            value = squared[i, j]
            if value < 0.0:
                value = 0.0
            squared[i, j] = math.sqrt(value)
    tile = 64
    for i0 in range(0, n, tile):
        for j0 in range(i0, n, tile):
            for i in range(i0, min(i0 + tile, n)):
                for j in range(max(j0, i + 1), min(j0 + tile, n)):
                    squared[j, i] = squared[i, j]


def warm_up() -> float:
    """Compile every kernel (or load it from numba's on-disk cache) for the argument types the
    engine passes, through the public functions that call them; returns the seconds it took.
    A process pays this once, at its first use of the topology (timing benchmarks pay it here,
    before the clock starts, and report it)."""
    from .diagram_distance import wasserstein1_h0_slope, wasserstein_h0_sorted
    from .distances import distance_matrix, reordered
    from .mst import mst_edge_lengths_batch, mst_edges

    started = time.perf_counter()
    cloud = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    for points in (cloud, cloud.astype(np.float32)):
        dist = distance_matrix(points)
    tree = mst_edges(reordered(dist, np.array([3, 2, 1, 0])))
    full = np.sort(tree[2])
    weights = mst_edge_lengths_batch(dist, np.array([[0, 1, 2], [1, 2, 3]]))
    wasserstein_h0_sorted(full, np.sort(weights, axis=1), 1.0)  # one diagram against a batch
    wasserstein_h0_sorted(full, full, 1.0)
    wasserstein1_h0_slope(full, full)
    wasserstein1_h0_slope_rows(np.sort(weights, axis=1), np.sort(weights, axis=1), np.empty(len(weights)))
    return time.perf_counter() - started
