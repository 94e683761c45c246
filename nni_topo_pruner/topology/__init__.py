"""Topology maths on plain arrays (no torch, no NNI): distance matrices, persistence
diagrams, diagram distances, per-neuron salience, Betti numbers.

Example:
    >>> import numpy as np
    >>> from nni_topo_pruner.topology import distance_matrix, persistence_diagrams, diagram_distance
    >>> cloud = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> dgm = persistence_diagrams(distance_matrix(cloud))
    >>> dgm[0]
    array([[0., 1.],
           [0., 4.]])
    >>> diagram_distance(dgm, persistence_diagrams(distance_matrix(cloud[:2])))
    2.0
"""
from .diagram_distance import (
    SUPPORTED_DIAGRAM_DISTANCES,
    bottleneck_h0,
    bottleneck_h0_sorted,
    diagram_distance,
    wasserstein1_h0_slope,
    wasserstein_exact,
    wasserstein_h0,
    wasserstein_h0_dp,
    wasserstein_h0_sorted,
)
from .distances import SUPPORTED_CLOUD_METRICS, diameter, distance_matrix, reordered
from .mst import mst_edge_lengths, mst_edge_lengths_batch, mst_edges, subset_mst_edge_lengths, subtree_edge_lengths
from .persistence import SUPPORTED_PERSISTENCE_METHODS, h0_diagram, persistence_diagrams
from .salience import leave_one_out_salience
from .validation import InvalidParameterError, check_distance_matrix, check_homology_dims, check_points

__all__ = [
    "SUPPORTED_CLOUD_METRICS",
    "SUPPORTED_DIAGRAM_DISTANCES",
    "SUPPORTED_PERSISTENCE_METHODS",
    "bottleneck_h0",
    "bottleneck_h0_sorted",
    "InvalidParameterError",
    "check_distance_matrix",
    "check_homology_dims",
    "check_points",
    "diameter",
    "diagram_distance",
    "distance_matrix",
    "reordered",
    "h0_diagram",
    "leave_one_out_salience",
    "mst_edge_lengths",
    "mst_edge_lengths_batch",
    "mst_edges",
    "persistence_diagrams",
    "subset_mst_edge_lengths",
    "subtree_edge_lengths",
    "wasserstein1_h0_slope",
    "wasserstein_exact",
    "wasserstein_h0",
    "wasserstein_h0_dp",
    "wasserstein_h0_sorted",
]
