"""Distances between persistence diagrams.

Ground metric: the L-infinity distance between points, and ``(death - birth) / 2`` from a
point to the diagonal (GUDHI's convention for the bottleneck distance, and
``internal_p=inf`` for its Wasserstein distance).

Several homology dimensions are combined as one matching over their disjoint union (a bar
can only be matched to a bar of its own dimension or to the diagonal):

* bottleneck: the maximum of the per-dimension distances;
* Wasserstein of order q: ``(sum over dims of W_q(dim)^q) ** (1/q)``.

Fast paths (tested against GUDHI): for H0 diagrams of a Rips filtration every birth is 0,
so a diagram is a multiset of death times and the bottleneck distance is a 1-D problem
solved exactly in O(m log m) (:func:`bottleneck_h0`), and the Wasserstein distance by an
exact dynamic programme over the sorted deaths (:func:`wasserstein_h0`), or for order 1
by the slope trick in O(m log m) (:func:`wasserstein1_h0_slope`, compiled). Other diagrams
use GUDHI's exact bottleneck (``e=0``) and an exact assignment problem
(:func:`scipy.optimize.linear_sum_assignment`) for Wasserstein.

Example:
    >>> import numpy as np
    >>> a = {0: np.array([[0.0, 1.0], [0.0, 2.0]])}
    >>> b = {0: np.array([[0.0, 2.0]])}
    >>> diagram_distance(a, b)
    0.5
"""
from __future__ import annotations

from collections.abc import Mapping

import gudhi
import numpy as np
from scipy.optimize import linear_sum_assignment

from .kernels import wasserstein1_h0_slope_kernel, wasserstein1_h0_slope_rows
from .validation import check_choice, check_number

SUPPORTED_DIAGRAM_DISTANCES = ("bottleneck", "wasserstein")


def check_distance_kind(kind: str) -> str:
    """Validate a diagram distance name (case-insensitive) and return it in lower case."""
    return check_choice(kind, "distance", SUPPORTED_DIAGRAM_DISTANCES)


def check_order(order: float, name: str = "order") -> float:
    """Validate a Wasserstein order (a finite number >= 1)."""
    return check_number(order, name, minimum=1)


def _as_diagram(d: np.ndarray | None) -> np.ndarray:
    if d is None:
        return np.empty((0, 2))
    arr = np.asarray(d, dtype=np.float64)
    if arr.size == 0:
        return np.empty((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"a persistence diagram must have shape (m, 2), got {arr.shape}")
    return arr


def _is_h0_like(d: np.ndarray) -> bool:
    return bool(np.all(d[:, 0] == 0.0) and np.all(np.isfinite(d[:, 1])))


def sorted_descending(deaths: np.ndarray) -> np.ndarray:
    """``deaths`` sorted in descending order along the last axis (the H0 routines' input)."""
    return -np.sort(-deaths, axis=-1)


def bottleneck_h0_sorted(a_desc: np.ndarray, b_desc: np.ndarray) -> np.ndarray:
    """Exact bottleneck distances between 1-D diagrams ``{(0, a_i)}`` and ``{(0, b_j)}``.

    Both inputs hold death times sorted in *descending* order, padded with zeros at the
    end if rows differ in length (a zero is a point on the diagonal and changes nothing).
    Leading dimensions broadcast, so one diagram can be compared with a whole batch.

    Why it is exact: some optimal matching pairs the m largest deaths of each side in
    sorted order and sends the rest to the diagonal (an exchange argument: matching a
    smaller point while a larger one of the same side goes to the diagonal can be swapped
    without raising the maximum). So the distance is
    ``min over m of max(max_{i<m} |a_i - b_i|, a_m / 2, b_m / 2)``.
    """
    a_desc = np.asarray(a_desc, dtype=np.float64)
    b_desc = np.asarray(b_desc, dtype=np.float64)
    length = max(a_desc.shape[-1], b_desc.shape[-1])
    a_pad = pad_last(a_desc, length)
    b_pad = pad_last(b_desc, length)
    a_pad, b_pad = np.broadcast_arrays(a_pad, b_pad)
    shape = a_pad.shape[:-1]
    prefix = np.zeros(shape + (length + 1,))
    if length:
        np.maximum.accumulate(np.abs(a_pad - b_pad), axis=-1, out=prefix[..., 1:])
    tail = np.zeros(shape + (length + 1,))
    tail[..., :length] = np.maximum(a_pad, b_pad) * 0.5
    return np.min(np.maximum(prefix, tail), axis=-1)


def pad_last(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` padded with zeros (points on the diagonal) to ``length`` along the last axis."""
    missing = length - x.shape[-1]
    if missing == 0:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(0, missing)]
    return np.pad(x, pad)


def bottleneck_h0(a: np.ndarray, b: np.ndarray) -> float:
    """Exact bottleneck distance between two H0 Rips diagrams (all births 0)."""
    return float(bottleneck_h0_sorted(sorted_descending(_as_diagram(a)[:, 1]), sorted_descending(_as_diagram(b)[:, 1])))


def _pow(x: np.ndarray, order: float) -> np.ndarray:
    """``x ** order`` without the slow general power for the common orders 1 and 2."""
    if order == 1.0:
        return x
    if order == 2.0:
        return x * x
    return np.power(x, order)


def wasserstein_h0_sorted(a_asc: np.ndarray, b_asc: np.ndarray, order: float = 1.0) -> np.ndarray:
    """Exact Wasserstein distances between 1-D diagrams ``{(0, a_i)}`` and ``{(0, b_j)}``.

    Both hold death times sorted in *ascending* order; zeros (padding, zero-length bars)
    are points on the diagonal and cost nothing. Leading dimensions broadcast (one diagram
    against a batch). Order 1 takes the slope trick (:func:`wasserstein1_h0_slope`, compiled,
    O((m + n) log(m + n)) per diagram; 8-100x faster than the dynamic programme at every size
    measured, 8 to 3,072 points), any other order :func:`wasserstein_h0_dp`; the two agree to
    rounding, which the tests check.
    """
    a_asc = np.asarray(a_asc, dtype=np.float64)
    b_asc = np.asarray(b_asc, dtype=np.float64)
    if order != 1.0:
        return wasserstein_h0_dp(a_asc, b_asc, order)
    shape = np.broadcast_shapes(a_asc.shape[:-1], b_asc.shape[:-1])
    batch = int(np.prod(shape, dtype=np.int64))
    a_rows = np.broadcast_to(a_asc, shape + a_asc.shape[-1:]).reshape(batch, -1)
    b_rows = np.broadcast_to(b_asc, shape + b_asc.shape[-1:]).reshape(batch, -1)
    out = np.empty(batch)
    # fresh writable C arrays: one compiled signature (broadcast views are read-only)
    wasserstein1_h0_slope_rows(np.array(a_rows, order="C"), np.array(b_rows, order="C"), out)
    return out.reshape(shape)


def wasserstein1_h0_slope(a_asc: np.ndarray, b_asc: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between two H0 diagrams given as ascending death times,
    in O((m + n) log(m + n)) by the slope trick.

    Why it is exact: a matching keeps equal numbers of points of each diagram (the rest go
    to the diagonal at ``x / 2``), and the kept ones are best matched in sorted order at cost
    ``integral |F_a(t) - F_b(t)| dt`` (F: how many kept points lie below t). Sweeping t upwards
    with state ``s = F_a - F_b``, the least cost so far is a convex function of s: between
    points it grows by ``gap * |s|``; a point x of ``a`` either is dropped (``+ x/2``) or
    steps s up by 1, an infimal convolution with a two-point convex function that inserts one
    segment of slope ``-x/2`` into the sorted slopes (``+x/2`` and a step down for ``b``). The
    answer is the function's value at s = 0. Slopes left and right of s = 0 live in two heaps
    with lazy offsets (compiled: :func:`~.kernels.wasserstein1_h0_slope_kernel`).

    Example:
        >>> wasserstein1_h0_slope(np.array([1.0, 2.0]), np.array([2.0]))
        0.5
    """
    return float(wasserstein1_h0_slope_kernel(np.array(a_asc, dtype=np.float64, order="C"),
                                               np.array(b_asc, dtype=np.float64, order="C")))


def wasserstein_h0_dp(a_asc: np.ndarray, b_asc: np.ndarray, order: float = 1.0) -> np.ndarray:
    """Exact Wasserstein distances between 1-D diagrams (arguments as for
    :func:`wasserstein_h0_sorted`), any order, by a dynamic programme.

    With a cost convex in ``a - b`` an optimal matching never crosses, so a dynamic
    programme over the two sorted lists is exact:
    ``f[i][j] = min(f[i-1][j] + (a_i/2)^q, f[i][j-1] + (b_j/2)^q, f[i-1][j-1] + |a_i - b_j|^q)``.
    Each column is one vectorised step (the in-column recurrence is a running minimum of
    ``g - prefix sums``), so the cost is ``len(b)`` numpy steps over ``len(a)``-long rows.

    Example:
        >>> float(wasserstein_h0_dp(np.array([1.0, 2.0]), np.array([2.0])))
        0.5
    """
    a_asc = np.asarray(a_asc, dtype=np.float64)
    b_asc = np.asarray(b_asc, dtype=np.float64)
    if a_asc.shape[-1] < b_asc.shape[-1]:  # loop over the shorter side
        a_asc, b_asc = b_asc, a_asc
    shape = np.broadcast_shapes(a_asc.shape[:-1], b_asc.shape[:-1])
    n_a, n_b = a_asc.shape[-1], b_asc.shape[-1]
    a_asc = np.broadcast_to(a_asc, shape + (n_a,))
    b_asc = np.broadcast_to(b_asc, shape + (n_b,))
    to_diag_a = _pow(a_asc * 0.5, order)
    prefix = np.zeros(shape + (n_a + 1,))
    np.cumsum(to_diag_a, axis=-1, out=prefix[..., 1:])
    f = prefix.copy()  # column 0: every a_i to the diagonal
    g = np.empty_like(f)
    for j in range(n_b):
        b = b_asc[..., j : j + 1]
        np.add(f, _pow(b * 0.5, order), out=g)  # b_j to the diagonal
        np.minimum(g[..., 1:], f[..., :-1] + _pow(np.abs(a_asc - b), order), out=g[..., 1:])
        g -= prefix
        np.minimum.accumulate(g, axis=-1, out=f)
        f += prefix
    return np.power(np.maximum(f[..., -1], 0.0), 1.0 / order)


def wasserstein_h0(a: np.ndarray, b: np.ndarray, order: float = 1.0) -> float:
    """Exact Wasserstein distance between two H0 Rips diagrams (all births 0)."""
    return float(
        wasserstein_h0_sorted(np.sort(_as_diagram(a)[:, 1]), np.sort(_as_diagram(b)[:, 1]), check_order(order))
    )


def wasserstein_exact(a: np.ndarray, b: np.ndarray, order: float = 1.0) -> float:
    """Exact Wasserstein distance of order ``order`` (ground metric L-infinity) between two
    diagrams with finite points, as an assignment problem on the usual augmented matrix."""
    a, b = _as_diagram(a), _as_diagram(b)
    m, n = len(a), len(b)
    if m == 0 and n == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("wasserstein_exact needs finite diagrams; drop essential (infinite) bars first")
    size = m + n
    big = np.inf
    cost = np.zeros((size, size))
    to_diag_a = (a[:, 1] - a[:, 0]) * 0.5
    to_diag_b = (b[:, 1] - b[:, 0]) * 0.5
    if m and n:
        cost[:m, :n] = np.maximum(np.abs(a[:, None, 0] - b[None, :, 0]), np.abs(a[:, None, 1] - b[None, :, 1]))
    # a_i -> its own diagonal copy; diagonal copies of b -> b_j; diagonal <-> diagonal free.
    cost[:m, n:] = big
    cost[:m, n:][np.arange(m), np.arange(m)] = to_diag_a
    cost[m:, :n] = big
    cost[m:, :n][np.arange(n), np.arange(n)] = to_diag_b
    cost = np.power(cost, order)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sum(cost[rows, cols]) ** (1.0 / order))


def _per_dim(a: np.ndarray, b: np.ndarray, kind: str, order: float) -> float:
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if kind == "bottleneck":
        if _is_h0_like(a) and _is_h0_like(b):
            return bottleneck_h0(a, b)
        # e=0: the exact algorithm; the default (e=None) can be off on tied points.
        return float(gudhi.bottleneck_distance(a, b, e=0))
    if _is_h0_like(a) and _is_h0_like(b):
        return wasserstein_h0(a, b, order)
    if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
        return wasserstein_exact(a, b, order)
    from gudhi.wasserstein import wasserstein_distance  # needs POT; only for essential bars

    return float(wasserstein_distance(a, b, order=order, internal_p=np.inf))


def diagram_distance(
    a: Mapping[int, np.ndarray],
    b: Mapping[int, np.ndarray],
    kind: str = "bottleneck",
    *,
    order: float = 1.0,
) -> float:
    """Distance between two diagrams given as ``{homology_dim: (m, 2) array}``.

    Dimensions present in only one of them are compared with an empty diagram.
    Bottleneck: max over dimensions; Wasserstein: ``(sum_dim W_q^q)^(1/q)`` (see module doc).

    Example:
        >>> diagram_distance({0: [[0, 1]]}, {0: []}, "wasserstein", order=2)
        0.5
    """
    kind = check_distance_kind(kind)
    order = check_order(order)
    dims = sorted(set(a) | set(b))
    values = [_per_dim(_as_diagram(a.get(d)), _as_diagram(b.get(d)), kind, order) for d in dims]
    if not values:
        return 0.0
    if kind == "bottleneck":
        return float(max(values))
    return float(np.sum(np.power(values, order)) ** (1.0 / order))
