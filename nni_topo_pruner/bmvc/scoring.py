"""The BMVC paper's Betti score of convolution filters, on plain arrays (NumPy only).

A layer's feature clouds are one ``(N, C, D)`` array: channel ``c``'s cloud is
``cloud[:, c, :]``, one point per calibration image (``D = H*W`` values of its feature
map). The score of a filter is the sum of its cloud's Betti numbers over
``homology_dims`` at a scale (:class:`~nni_topo_pruner.topology.betti.BettiScale`); the
filters with the **largest** scores are pruned. Integer scores tie often; ties are broken
by the cloud's mean H0 count over ``[0, s]`` divided by ``N`` (a number in ``[0, 1)``), so
the importance handed to a pruner (which removes the smallest) is ``-(score + tie / 2)``
in float32: the same numbers for NNI (:class:`~nni_topo_pruner.bmvc.pruner.BettiPruner`) and
Torch-Pruning (:class:`~nni_topo_pruner.torch_pruning.BettiImportance`).

Example:
    >>> import numpy as np
    >>> cloud = np.array([[0.0], [1.0], [10.0], [11.0]])[:, None, :]   # N=4 images, C=1, D=1
    >>> betti, tie = layer_betti(cloud, BettiScale(0.5, "diameter"), (0,))
    >>> betti.tolist(), [round(float(v), 3) for v in betti_importance(betti, tie)]
    ([[2]], [-2.295])
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..topology.betti import BettiScale, betti_at_scale, h0_intervals, persistence_intervals
from ..topology.distances import distance_matrix
from ..topology.validation import check_homology_dims

__all__ = ["BettiScale", "betti_importance", "h0_tie", "layer_betti"]


def layer_betti(cloud: np.ndarray, scale: BettiScale, homology_dims: Sequence[int], channel_chunk: int = 16,
                on_filter: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Betti numbers and H0 tie-breakers of every channel's cloud.

    Args:
        cloud: ``(N, C, D)`` array (anything ``np.asarray`` takes, e.g. a CPU tensor).
        scale: where the Betti numbers are read.
        homology_dims: the dimensions, in the order of the output's columns.
        channel_chunk: channels per progress step (kept for callers; the work is per channel).
        on_filter: called with 1 after each channel (a progress bar's ``update``).

    Returns:
        ``betti`` of shape ``(C, len(homology_dims))`` (ints) and ``tie`` of shape ``(C,)``
        in ``[0, 1)``.
    """
    dims = check_homology_dims(homology_dims, "homology_dims", sort=False)
    points = np.asarray(cloud)
    n, channels, _ = points.shape
    betti = np.zeros((channels, len(dims)), dtype=np.int64)
    tie = np.zeros(channels, dtype=np.float64)
    for start in range(0, channels, channel_chunk):
        for c in range(start, min(start + channel_chunk, channels)):
            dm = distance_matrix(points[:, c, :])  # symmetric, zero diagonal, float64
            s = scale.resolve(*BettiScale.distance_stats(dm))
            if dims == (0,):
                # H0 only: minimum-spanning-tree bars, equal to GUDHI's (tests/test_betti.py)
                bars = {0: h0_intervals(dm)}
            else:
                truncate = scale.count == "alive"
                bars = persistence_intervals(distance_matrix=dm, max_dimension=max(dims),
                                             max_edge_length=s if truncate else math.inf)
            counts = betti_at_scale(bars, s, scale.count)
            betti[c] = [counts[k] for k in dims]
            tie[c] = h0_tie(bars[0], s, n)
            if on_filter is not None:
                on_filter(1)
    return betti, tie


def h0_tie(h0: np.ndarray, s: float, n: int) -> float:
    """Mean number of H0 bars alive over ``[0, s]``, divided by ``n``, below 1 (1 - 1e-9
    when ``s == 0``): ``(1 / (n s)) * sum over bars of min(death, s) - min(birth, s)``.

    Example:
        >>> h0_tie(np.array([[0.0, 1.0], [0.0, np.inf]]), 2.0, 2)
        0.75
    """
    if s <= 0:
        return 1.0 - 1e-9
    lengths = np.minimum(h0[:, 1], s) - np.minimum(h0[:, 0], s)
    return float(min(lengths.sum() / (n * s), 1.0 - 1e-9))


def betti_importance(betti: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """``-(score + tie / 2)`` in float32 per channel (``score``: the row sums of ``betti``);
    smaller means prune first.

    Example:
        >>> betti_importance(np.array([[3], [3], [1]]), np.array([0.2, 0.4, 0.9])).tolist()
        [-3.0999999046325684, -3.200000047683716, -1.4500000476837158]
    """
    score = np.asarray(betti).sum(axis=1)
    return -(score + 0.5 * np.asarray(tie)).astype(np.float32)
