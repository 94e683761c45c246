"""Distance matrices of point clouds (one point per neuron).

Euclidean and cosine distances go through a Gram matrix (BLAS), so a 4096 x 25088 layer
costs one matrix product instead of 8 million Python-level row differences. The Gram
trick loses accuracy for nearly coincident points (``|x|^2 + |y|^2 - 2 x.y`` cancels), so
pairs that come out closer than ``1e-3`` of their norms are recomputed by direct
differences (so exact duplicate rows are exactly 0 apart). The Gram matrix is accumulated
over column blocks: a float32 weight matrix is never copied whole to float64.
Manhattan and Chebyshev use :func:`scipy.spatial.distance.pdist` (no BLAS form exists).

Example:
    >>> import numpy as np
    >>> distance_matrix(np.array([[0.0, 0.0], [3.0, 4.0]]))
    array([[0., 5.],
           [5., 0.]])
"""
from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dsyrk
from scipy.spatial.distance import pdist, squareform

from .kernels import close_pairs, gather_square, gram_to_squared_distances, squared_to_symmetric_distances
from .validation import check_choice, check_points

SUPPORTED_CLOUD_METRICS: tuple[str, ...] = ("euclidean", "cosine", "manhattan", "chebyshev")

# Gram-matrix distances below this fraction of the points' norms are recomputed exactly.
_REFINE_RELATIVE = 1e-3
# Rows per block when recomputing / reducing, to keep temporaries small.
_BLOCK = 256
# Columns per block of the Gram accumulation (bounds the float64 slab to n x 2048).
_COLUMNS_PER_BLOCK = 2048


def check_metric(metric: str) -> str:
    """Validate a cloud metric name (case-insensitive) and return it in lower case."""
    return check_choice(metric, "cloud_metric", SUPPORTED_CLOUD_METRICS)


def diameter(points: np.ndarray, chunk: int = 1024) -> float:
    """Largest Euclidean distance between two rows of ``points``, exact, in row blocks so
    memory stays O(chunk * n) (no n x n matrix: for clouds too large for one).

    Example:
        >>> diameter(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]))
        5.0
    """
    x = np.asarray(check_points(points), dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    best = 0.0
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        d2 = sq[start:start + chunk, None] + sq[None, :] - 2.0 * (block @ x.T)
        best = max(best, float(d2.max()))
    return float(np.sqrt(max(best, 0.0)))


def _column_blocks(d: int) -> range:
    return range(0, d, _COLUMNS_PER_BLOCK)


def _gram_distances(x: np.ndarray, shift: np.ndarray | None, scale: np.ndarray | None) -> np.ndarray:
    """Euclidean distances between the rows of ``(x - shift) / scale[:, None]`` in float64.

    The Gram matrix is accumulated in place by BLAS ``dsyrk`` (half the flops of a full
    product) over column blocks, so a float32 input is never copied whole to float64 and no
    second n x n array is made (memory: the n x n result plus one n x 2048 slab). Pairs
    closer than ``_REFINE_RELATIVE`` of their norms are recomputed by direct differences,
    which makes exact duplicates exactly 0 apart and near-duplicates accurate.
    """
    n, d = x.shape

    def rows(index: np.ndarray | slice, cols: slice) -> np.ndarray:
        block = np.array(x[index, cols], dtype=np.float64)  # always a fresh float64 copy
        if shift is not None:
            block -= shift[cols]
        if scale is not None:
            block /= scale[index, None]
        return block

    gram = np.zeros((n, n))
    for start in _column_blocks(d):
        slab = rows(slice(None), slice(start, start + _COLUMNS_PER_BLOCK))
        # gram.T is the Fortran-ordered view BLAS wants; lower=1 there is our upper triangle.
        dsyrk(1.0, slab.T, beta=1.0, c=gram.T, trans=1, lower=1, overwrite_c=1)
    sq = np.diag(gram).copy()
    refine = _REFINE_RELATIVE**2
    # One compiled pass over the upper triangle makes it squared distances and counts the
    # nearly coincident pairs; those are recomputed exactly by direct differences (which makes
    # exact duplicates exactly 0 apart); a second pass takes square roots and mirrors.
    count = gram_to_squared_distances(gram, sq, refine)
    if count:
        r, c = np.empty(count, dtype=np.intp), np.empty(count, dtype=np.intp)
        close_pairs(gram, sq, refine, r, c)
        for p in range(0, count, _BLOCK * 16):
            rr, cc = r[p : p + _BLOCK * 16], c[p : p + _BLOCK * 16]
            exact = np.zeros(len(rr))
            for col in _column_blocks(d):
                cols = slice(col, col + _COLUMNS_PER_BLOCK)
                diff = rows(rr, cols) - rows(cc, cols)
                exact += np.einsum("ij,ij->i", diff, diff)
            gram[rr, cc] = exact
    squared_to_symmetric_distances(gram)  # exact symmetry
    return gram


def _euclidean(x: np.ndarray) -> np.ndarray:
    # Centre first: distances are translation invariant and smaller norms mean less
    # cancellation in the Gram formula.
    return _gram_distances(x, x.mean(axis=0, dtype=np.float64), None)


def _cosine(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(sum(np.einsum("ij,ij->i", b, b) for b in (np.asarray(x[:, c : c + _COLUMNS_PER_BLOCK], np.float64) for c in _column_blocks(x.shape[1]))))
    zero = norms == 0.0
    # 1 - cos(u, v) = |u/|u| - v/|v||^2 / 2: reuse the accurate Euclidean path on unit vectors.
    unit_dist = _gram_distances(x, None, np.where(zero, 1.0, norms))
    dist = np.square(unit_dist, out=unit_dist)
    dist *= 0.5
    # A zero vector has no direction: distance 1 ("orthogonal") to every non-zero point,
    # 0 to other zero vectors (they are the same point).
    if zero.any():
        dist[zero, :] = 1.0
        dist[:, zero] = 1.0
        dist[np.ix_(zero, zero)] = 0.0
    np.clip(dist, 0.0, 2.0, out=dist)
    return dist


def reordered(dist: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``dist[np.ix_(order, order)]`` (the matrix of the points in ``order``), gathered by a
    compiled loop (:func:`~.kernels.gather_square`): no temporary, each source row read once.

    Example:
        >>> reordered(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]]), np.array([2, 0, 1]))
        array([[0., 2., 3.],
               [2., 0., 1.],
               [3., 1., 0.]])
    """
    order = np.asarray(order, dtype=np.intp)
    if order.ndim != 1 or (len(order) and (order.min() < 0 or order.max() >= dist.shape[0])):
        raise ValueError(f"order must be a 1-D array of row indices in [0, {dist.shape[0]}), got shape {order.shape}")
    out = np.empty((len(order), len(order)), dtype=dist.dtype)
    gather_square(np.ascontiguousarray(dist), order, out)
    return out


def distance_matrix(points: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Pairwise distances between the rows of ``points``.

    Args:
        points: (n, d) array, one point per neuron; NaN/Inf raise a ValueError.
        metric: one of :data:`SUPPORTED_CLOUD_METRICS`. ``cosine`` is ``1 - cos(angle)``;
            an all-zero point is at distance 1 from every non-zero point and 0 from
            other all-zero points.

    Returns:
        (n, n) float64 array, symmetric, zero diagonal; identical rows are at distance 0.

    Example:
        >>> float(distance_matrix(np.eye(3), "manhattan")[0, 1])
        2.0
    """
    metric = check_metric(metric)
    x = check_points(points)
    n = x.shape[0]
    if n == 1:
        return np.zeros((1, 1))
    if metric == "euclidean":
        dist = _euclidean(x)
    elif metric == "cosine":
        dist = _cosine(x)
    else:
        dist = squareform(pdist(np.asarray(x, np.float64), metric="cityblock" if metric == "manhattan" else "chebyshev"))
    np.fill_diagonal(dist, 0.0)
    return dist
