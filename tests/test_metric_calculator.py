"""MetricCalculator / SubsetFitness against GUDHI reference diagrams on the same slices."""
from __future__ import annotations

import gudhi
import numpy as np
import pytest

from nni_topo_pruner.metric_calculator import LayerTopology, MetricCalculator, SubsetFitness, salience_ranked_subset
from nni_topo_pruner.topology import diagram_distance, persistence_diagrams


def cloud(n=30, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"homology_dims": ()}, "homology_dims"),
        ({"homology_dims": (0, 0)}, "homology_dims"),
        ({"homology_dims": ("0",)}, "homology_dims"),
        ({"distance": "hausdorff"}, "distance"),
        ({"cloud_metric": "mahalanobis"}, "cloud_metric"),
        ({"wasserstein_order": 0.5}, "wasserstein_order"),
        ({"persistence_method": "magic"}, "persistence_method"),
    ],
)
def test_constructor_validation_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MetricCalculator(**kwargs)


def test_analyse_returns_consistent_layer_topology():
    x = cloud()
    layer = MetricCalculator(homology_dims=(0, 1)).analyse(x)
    assert isinstance(layer, LayerTopology)
    assert layer.n == 30 and layer.distances.shape == (30, 30)
    assert set(layer.diagrams) == {0, 1} and layer.homology_dims == (0, 1)
    ref = persistence_diagrams(layer.distances, (0, 1), method="gudhi")
    for d in (0, 1):
        np.testing.assert_allclose(layer.diagrams[d], ref[d])
    assert layer.salience.shape == (30,) and np.all(layer.salience >= 0)


def test_analyse_rejects_nan_weights_clearly():
    x = cloud()
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN.*rows 3"):
        MetricCalculator().analyse(x)


def test_single_point_layer_is_trivial():
    layer = MetricCalculator().analyse(np.ones((1, 4)))
    assert layer.diagrams[0].shape == (0, 2)
    assert layer.salience.tolist() == [0.0]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"distance": "wasserstein"},
        {"distance": "wasserstein", "wasserstein_order": 2.0},
        {"cloud_metric": "cosine"},
        {"cloud_metric": "manhattan"},
        {"homology_dims": (0, 1)},
    ],
)
def test_subset_fitness_equals_gudhi_reference(options):
    calc = MetricCalculator(**options)
    layer = calc.analyse(cloud(24, 5, seed=1))
    fitness = calc.subset_fitness(layer)
    rng = np.random.default_rng(2)
    subsets = [np.sort(rng.permutation(24)[:k]) for k in (12, 12, 12, 5, 2, 1)]
    values = fitness.batch(subsets)
    for sub, value in zip(subsets, values):
        sliced = layer.distances[np.ix_(sub, sub)]
        ref = persistence_diagrams(sliced, calc.homology_dims, method="gudhi")
        want = diagram_distance(layer.diagrams, ref, calc.distance, order=calc.wasserstein_order)
        assert value == pytest.approx(want, abs=1e-10)
    if calc.distance == "bottleneck":  # independent check of the combination with GUDHI
        sub = subsets[0]
        ref = persistence_diagrams(layer.distances[np.ix_(sub, sub)], calc.homology_dims, method="gudhi")
        want = max(gudhi.bottleneck_distance(layer.diagrams[d], ref[d], e=0) for d in calc.homology_dims)
        assert values[0] == pytest.approx(want, abs=1e-10)


def test_fitness_of_full_set_is_zero_and_cache_counts_real_evaluations():
    calc = MetricCalculator()
    fitness = calc.subset_fitness(calc.analyse(cloud(12)))
    assert fitness(np.arange(12)) == 0.0
    assert fitness.evaluations == 1
    mask = np.zeros(12, dtype=bool)
    mask[[1, 4, 7]] = True
    a = fitness(mask)
    b = fitness(np.array([7, 1, 4]))  # same subset as indices (any order): cached
    assert a == b and fitness.evaluations == 2
    fitness.batch([mask, [1, 4, 7], [0, 1, 2], [0, 1, 2]])
    assert fitness.evaluations == 3


@pytest.mark.parametrize(
    "keep, words",
    [
        (np.ones(5, dtype=bool), "shape (12,)"),
        ([0, 0, 1], "repeated"),
        ([0, 12], "in [0, 12)"),
        ([[0, 1]], "1-D"),
    ],
)
def test_fitness_rejects_bad_subsets(keep, words):
    calc = MetricCalculator()
    fitness = calc.subset_fitness(calc.analyse(cloud(12)))
    with pytest.raises(ValueError) as err:
        fitness(keep)
    assert words in str(err.value)


def test_fitness_needs_the_layer_dims():
    layer = MetricCalculator().analyse(cloud(8))
    with pytest.raises(ValueError, match="homology dims"):
        SubsetFitness(layer, homology_dims=(0, 1))


def test_salience_ranked_subset_keeps_most_salient_with_stable_ties():
    s = np.array([0.0, 3.0, 1.0, 3.0, 0.0])
    assert salience_ranked_subset(s, 3).tolist() == [1, 2, 3]
    assert salience_ranked_subset(np.zeros(5), 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="n_keep"):
        salience_ranked_subset(s, 6)


def test_h1_skip_is_used_in_high_dimension_and_matches_gudhi():
    calc = MetricCalculator(homology_dims=(0, 1))
    layer = calc.analyse(cloud(40, 60, seed=3))
    fitness = calc.subset_fitness(layer)
    rng = np.random.default_rng(4)
    subsets = [np.sort(rng.permutation(40)[:20]) for _ in range(6)]
    values = fitness.batch(subsets)
    assert fitness.skipped_higher > 0
    for sub, value in zip(subsets, values):
        ref = persistence_diagrams(layer.distances[np.ix_(sub, sub)], (0, 1), method="gudhi")
        want = max(gudhi.bottleneck_distance(layer.diagrams[d], ref[d], e=0) for d in (0, 1))
        assert value == pytest.approx(want, abs=1e-10)


def test_analyse_takes_the_distance_matrix_the_caller_has():
    """Issue 30: the engine computes the cloud's distances once (stored order) and hands the
    permuted matrix to analyse; the result is the one analyse computes itself."""
    from nni_topo_pruner.topology.distances import distance_matrix

    points = np.random.default_rng(5).standard_normal((30, 7))
    calc = MetricCalculator(distance="wasserstein")
    own = calc.analyse(points)
    given = calc.analyse(points, distances=distance_matrix(points))
    np.testing.assert_array_equal(given.distances, own.distances)
    np.testing.assert_array_equal(given.salience, own.salience)
    with pytest.raises(ValueError, match="distances must be 30 x 30"):
        calc.analyse(points, distances=distance_matrix(points[:29]))
    with pytest.raises(ValueError, match="distances must hold finite"):
        calc.analyse(points, distances=np.full((30, 30), np.nan))


def test_engine_distances_computed_once_equal_the_canonical_clouds_own():
    """The engine's distance matrix (computed in stored order, then permuted) equals, within
    rounding, the matrix of the canonically ordered cloud computed directly, with and without
    the zero anchor and under every metric; the kept neurons are the same either way."""
    from nni_topo_pruner.engine import AnalysedUnit, analyse_unit, choose_kept
    from nni_topo_pruner.evolutionary import GAConfig
    from nni_topo_pruner.topology.distances import distance_matrix

    rng = np.random.default_rng(6)
    points = rng.standard_normal((40, 9)) * rng.uniform(0.1, 2.0, size=(40, 1))
    for metric, anchored in (("euclidean", True), ("euclidean", False), ("cosine", False), ("manhattan", True)):
        calc = MetricCalculator(distance="wasserstein", cloud_metric=metric)
        unit = analyse_unit(calc, points, zero_anchor=anchored)
        cloud = points[unit.order]
        if anchored:
            cloud = np.vstack([np.zeros((1, 9)), cloud])
        np.testing.assert_allclose(unit.topology.distances, distance_matrix(cloud, metric), rtol=1e-12, atol=1e-13)
        reference = calc.analyse(cloud, skip_salience=(0,) if anchored else ())
        np.testing.assert_allclose(unit.topology.salience, reference.salience, rtol=1e-9, atol=1e-12)
        ga = GAConfig(seed=0, population_size=8, generations=3)
        direct = AnalysedUnit(unit.order, reference, anchored)
        assert np.array_equal(choose_kept(calc, unit, 20, ga).keep_mask, choose_kept(calc, direct, 20, ga).keep_mask)


def test_analyse_from_distances_alone_equals_analyse_from_points_and_needs_one_of_them():
    calc = MetricCalculator(distance="wasserstein")
    points = np.random.default_rng(4).normal(size=(12, 3))
    from_points = calc.analyse(points)
    from_distances = calc.analyse(None, distances=from_points.distances)
    np.testing.assert_array_equal(from_distances.salience, from_points.salience)
    np.testing.assert_array_equal(from_distances.diagrams[0], from_points.diagrams[0])
    with pytest.raises(ValueError, match="points or their distance matrix"):
        calc.analyse(None)
