"""Comparisons that rounding cannot flip: values closer than a tolerance are ties.

Float results of the same computation differ between CPUs, libraries and thread counts in
their last bits (a float32 convolution by ~1e-7 relative), so no decision of the pruner may
hinge on which of two nearly equal values is smaller. Values are grouped by the *gaps*
between them once sorted: a gap of at most ``tol`` joins two values into one group (a
chain of small gaps makes one group). Unlike rounding to a fixed grid, where a value next
to a grid line flips with any noise, a group changes only when one of its gaps is itself
within the noise of ``tol``, which is rare for ``tol`` far above float noise and far below
the spread of real values. Inside a group, a caller-given tie-break decides.

Example:
    >>> import numpy as np
    >>> tie_groups(np.array([3.0, 1.0, 1.0 + 1e-9, 2.0]), 1e-6).tolist()
    [2, 0, 0, 1]
    >>> tolerant_argsort(np.array([1.0 + 1e-9, 5.0, 1.0]), 1e-6).tolist()   # tie: lower index first
    [0, 2, 1]
"""
from __future__ import annotations

import numpy as np

#: Relative tolerance (of a layer's scale) below which two values count as equal: far above
#: float64 noise and above what float32 rounding (~1e-7 a layer) does to an activation cloud
#: deep in a network (a 1e-7 perturbation of VGG-16's weights moves its last layer's
#: activation cloud by 3.4e-6; with 1e-6 some of those masks still moved, with 1e-5 none of
#: width 0.125's did: benchmarks/results/mask_stability), far below differences that matter.
RTOL = 1e-5


def tolerance(scale: float, rtol: float = RTOL) -> float:
    """``rtol * |scale|`` (0 for a zero or non-finite scale).

    Example:
        >>> tolerance(2.0)
        2e-05
    """
    scale = abs(float(scale))
    return rtol * scale if np.isfinite(scale) else 0.0


def tie_groups(values: np.ndarray, tol: float) -> np.ndarray:
    """Group label of each value, labels increasing with the value: sorted values whose
    consecutive gaps are at most ``tol`` share a label."""
    values = np.asarray(values, dtype=np.float64).ravel()
    labels = np.empty(len(values), dtype=np.intp)
    if len(values) == 0:
        return labels
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    labels[order] = np.concatenate([[0], np.cumsum(~(np.diff(ordered) <= tol))])
    return labels


def tolerant_argsort(values: np.ndarray, tol: float, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices sorting ``values`` ascending where values of one :func:`tie_groups` group are
    ties, broken by ``tiebreak`` ascending (default: the index)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    tiebreak = np.arange(len(values)) if tiebreak is None else np.asarray(tiebreak)
    return np.lexsort((tiebreak, tie_groups(values, tol)))


def tolerant_argmin(values: np.ndarray, tol: float, tiebreak: np.ndarray | None = None) -> int:
    """First index of :func:`tolerant_argsort` (``values`` must not be empty)."""
    return int(tolerant_argsort(values, tol, tiebreak)[0])
