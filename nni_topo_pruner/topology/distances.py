"""Distance matrices of point clouds (one point per neuron).

Euclidean and cosine distances go through a Gram matrix (BLAS), so a 4096 x 25088 layer
costs one matrix product instead of 8 million Python-level row differences. The Gram
trick loses accuracy for nearly coincident points (``|x|^2 + |y|^2 - 2 x.y`` cancels), so
pairs that come out closer than ``1e-3`` of their norms are recomputed by direct
differences, and exact duplicate rows are detected by hashing and get distance 0 exactly.
Manhattan and Chebyshev use :func:`scipy.spatial.distance.pdist` (no BLAS form exists).

Example:
    >>> import numpy as np
    >>> distance_matrix(np.array([[0.0, 0.0], [3.0, 4.0]]))
    array([[0., 5.],
           [5., 0.]])
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

SUPPORTED_CLOUD_METRICS: tuple[str, ...] = ("euclidean", "cosine", "manhattan", "chebyshev")

# Gram-matrix distances below this fraction of the points' norms are recomputed exactly.
_REFINE_RELATIVE = 1e-3
# Rows per block when recomputing / reducing, to keep temporaries small.
_BLOCK = 256


def check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """Return ``points`` as a C-contiguous float64 (n, d) array, or raise a ValueError
    that names the problem (wrong shape, empty, NaN/Inf with the offending rows)."""
    arr = np.asarray(points)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n points x d coordinates), got shape {arr.shape}; "
            "reshape a weight tensor to (out_features, -1) first"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point with at least one coordinate, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        kinds = []
        if np.isnan(arr).any():
            kinds.append("NaN")
        if np.isinf(arr).any():
            kinds.append("Inf")
        shown = ", ".join(str(i) for i in bad_rows[:10]) + (" ..." if len(bad_rows) > 10 else "")
        raise ValueError(
            f"{name} contain {' and '.join(kinds)} values in {len(bad_rows)} point(s) (rows {shown}); "
            "persistent homology needs finite coordinates: fix or exclude this layer"
        )
    return arr


def check_metric(metric: str) -> str:
    """Validate a cloud metric name (case-insensitive) and return it in lower case."""
    if not isinstance(metric, str) or metric.lower() not in SUPPORTED_CLOUD_METRICS:
        raise ValueError(f"cloud_metric must be one of {SUPPORTED_CLOUD_METRICS}, got {metric!r}")
    return metric.lower()


def _duplicate_groups(points: np.ndarray) -> np.ndarray:
    """Label rows so that exactly identical rows share a label (via ``np.unique``)."""
    _, inverse = np.unique(points, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def _euclidean(points: np.ndarray) -> np.ndarray:
    # Centre first: distances are translation invariant and smaller norms mean less
    # cancellation in the Gram formula.
    x = points - points.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)
    gram = x @ x.T
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram
    del gram
    # Recompute nearly coincident pairs exactly (upper triangle only; mirrored below).
    scale = sq[:, None] + sq[None, :]
    suspect = np.triu(d2 <= _REFINE_RELATIVE**2 * scale, k=1)
    rows, cols = np.nonzero(suspect)
    for start in range(0, len(rows), _BLOCK * 16):
        r, c = rows[start : start + _BLOCK * 16], cols[start : start + _BLOCK * 16]
        diff = x[r] - x[c]
        exact = np.einsum("ij,ij->i", diff, diff)
        d2[r, c] = exact
        d2[c, r] = exact
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


def _cosine(points: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(points, axis=1)
    zero = norms == 0.0
    safe = np.where(zero, 1.0, norms)
    unit = points / safe[:, None]
    dist = 1.0 - unit @ unit.T
    # A zero vector has no direction: distance 1 ("orthogonal") to every non-zero point,
    # 0 to other zero vectors (they are the same point).
    if zero.any():
        dist[zero, :] = 1.0
        dist[:, zero] = 1.0
        dist[np.ix_(zero, zero)] = 0.0
    np.clip(dist, 0.0, 2.0, out=dist)
    return dist


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
        dist = squareform(pdist(x, metric="cityblock" if metric == "manhattan" else "chebyshev"))
    # Exact duplicates are exactly 0 apart whatever the rounding above did.
    labels = _duplicate_groups(x)
    if len(np.unique(labels)) < n:
        same = labels[:, None] == labels[None, :]
        dist[same] = 0.0
    dist = np.maximum(dist, dist.T)  # exact symmetry
    np.fill_diagonal(dist, 0.0)
    return dist
