"""Topology maths against the real libraries (scipy, GUDHI, POT) on the same inputs."""
from __future__ import annotations

import gudhi
import numpy as np
import pytest
from gudhi.hera import wasserstein_distance as hera_wasserstein
from scipy.spatial.distance import pdist, squareform

from nni_topo_pruner.topology import (
    SUPPORTED_CLOUD_METRICS,
    bottleneck_h0,
    diagram_distance,
    distance_matrix,
    leave_one_out_salience,
    mst_edge_lengths,
    mst_edge_lengths_batch,
    mst_edges,
    persistence_diagrams,
    subset_mst_edge_lengths,
    subtree_edge_lengths,
    wasserstein_exact,
    wasserstein1_h0_slope,
    wasserstein_h0,
    wasserstein_h0_dp,
    wasserstein_h0_sorted,
)

SCIPY_NAME = {"euclidean": "euclidean", "cosine": "cosine", "manhattan": "cityblock", "chebyshev": "chebyshev"}


def clouds(seed: int = 0):
    """Random clouds of several sizes, with planted duplicates and ties (grid points)."""
    rng = np.random.default_rng(seed)
    for n in (2, 3, 5, 17, 40, 90):
        x = rng.standard_normal((n, 4))
        yield f"gauss{n}", x
        dup = x.copy()
        dup[n // 2] = dup[0]
        if n > 3:
            dup[-1] = dup[1]
        yield f"dup{n}", dup
        yield f"grid{n}", rng.integers(0, 3, size=(n, 3)).astype(float)  # many equal distances


def same_diagram(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.asarray(a).reshape(-1, 2)
    b = np.asarray(b).reshape(-1, 2)
    a = a[np.lexsort((a[:, 1], a[:, 0]))]
    b = b[np.lexsort((b[:, 1], b[:, 0]))]
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=1e-12)


# --- distance matrices -------------------------------------------------------------------


@pytest.mark.parametrize("metric", SUPPORTED_CLOUD_METRICS)
def test_distance_matrix_matches_scipy(metric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 30)) * 3 + 1
    x[7] = x[3]
    got = distance_matrix(x, metric)
    want = squareform(pdist(x, SCIPY_NAME[metric]))
    assert got.dtype == np.float64 and got.shape == (60, 60)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.array_equal(got, got.T)
    assert np.all(np.diag(got) == 0)
    assert got[3, 7] == 0.0


def test_euclidean_gram_path_is_accurate_for_near_duplicates_far_from_origin():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((1, 500)) * 1e4  # large norms: the Gram formula cancels badly
    x = base + rng.standard_normal((40, 500)) * 1e-5
    got = distance_matrix(x)
    want = squareform(pdist(x))
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gram_distances_refine_near_duplicates(metric):
    """Near-duplicates (the exact-refinement path) anywhere in the matrix: scipy's distances
    within rounding, exact duplicates exactly 0 apart, a symmetric matrix."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((70, 40)) * 2 + 3).astype(np.float32)
    x[1] = x[0]
    x[50] = x[2] * np.float32(1 + 1e-6)
    x[69] = x[33] + np.float32(1e-5)
    got = distance_matrix(x, metric)
    want = squareform(pdist(np.asarray(x, np.float64), SCIPY_NAME[metric]))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert got[0, 1] == 0.0 and np.array_equal(got, got.T)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 130])
def test_compiled_distance_passes_equal_their_numpy_formulas(n):
    """The compiled passes of the Gram distances do, bit for bit, what the numpy expressions
    say: the Gram formula in the same order of operations, the count and list of nearly
    coincident pairs, the clamped square roots mirrored (tiles of 64: sizes around a tile)."""
    from nni_topo_pruner.topology.kernels import close_pairs, gram_to_squared_distances, squared_to_symmetric_distances

    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 7))
    x[n // 2] = x[0] * (1 + 1e-9)  # a nearly coincident pair (for n >= 2)
    gram = x @ x.T
    sq = np.diag(gram).copy()
    refine = 1e-6
    want = (gram * -2.0 + sq[:, None]) + sq[None, :]
    upper = np.triu(np.ones((n, n), dtype=bool))
    strict = np.triu(np.ones((n, n), dtype=bool), 1)
    close = strict & (want <= refine * (sq[:, None] + sq[None, :]))
    got = gram.copy()
    assert gram_to_squared_distances(got, sq, refine) == close.sum()
    assert np.array_equal(got[upper], want[upper])
    rows, cols = np.empty(close.sum(), np.intp), np.empty(close.sum(), np.intp)
    close_pairs(got, sq, refine, rows, cols)
    assert (rows.tolist(), cols.tolist()) == tuple(a.tolist() for a in np.nonzero(close))
    squared_to_symmetric_distances(got)
    root = np.sqrt(np.maximum(want, 0.0))
    assert np.array_equal(got[upper], root[upper]) and np.array_equal(got, got.T)


def test_cosine_zero_vectors_have_documented_distances():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    d = distance_matrix(x, "cosine")
    assert d[0, 1] == 1.0 and d[0, 3] == 1.0
    assert d[0, 2] == 0.0
    assert d[1, 3] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), ["NaN", "rows 0"]),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), ["Inf", "rows 1"]),
        (np.zeros(5), ["2-D"]),
        (np.zeros((0, 3)), ["at least one point"]),
    ],
)
def test_distance_matrix_rejects_bad_points_with_a_clear_message(bad, words):
    with pytest.raises(ValueError) as err:
        distance_matrix(bad)
    for word in words:
        assert word in str(err.value)


def test_distance_matrix_rejects_unknown_metric():
    with pytest.raises(ValueError, match="cloud_metric must be one of"):
        distance_matrix(np.zeros((2, 2)), "mahalanobis")


# --- persistence diagrams ----------------------------------------------------------------


@pytest.mark.parametrize("name, x", list(clouds()))
def test_fast_h0_equals_gudhi(name, x):
    dist = distance_matrix(x)
    fast = persistence_diagrams(dist, (0,), method="fast")[0]
    ref = gudhi.RipsComplex(distance_matrix=dist).create_simplex_tree(max_dimension=1)
    ref.compute_persistence()
    ref_h0 = ref.persistence_intervals_in_dimension(0)
    finite = ref_h0[np.isfinite(ref_h0[:, 1])]
    assert same_diagram(fast, finite), name
    # exactly one essential bar dropped: bars = distinct points - 1
    assert len(fast) == len(np.unique(x, axis=0)) - 1


@pytest.mark.parametrize("name, x", [c for c in clouds(3) if len(c[1]) <= 40])
def test_h1_ripser_and_fast_equal_gudhi(name, x):
    dist = distance_matrix(x)
    ref = persistence_diagrams(dist, (0, 1), method="gudhi")
    for method in ("ripser", "fast", "auto"):
        got = persistence_diagrams(dist, (0, 1), method=method)
        assert same_diagram(got[0], ref[0]) and same_diagram(got[1], ref[1]), (name, method)


def test_persistence_of_tiny_clouds_and_bad_input():
    assert persistence_diagrams(np.zeros((1, 1)))[0].shape == (0, 2)
    assert persistence_diagrams(np.zeros((2, 2)), (0, 1))[0].shape == (0, 2)  # duplicates: no bars
    with pytest.raises(ValueError, match="method must be one of"):
        persistence_diagrams(np.zeros((2, 2)), method="magic")
    with pytest.raises(ValueError, match="homology_dims"):
        persistence_diagrams(np.zeros((2, 2)), (-1,))
    with pytest.raises(ValueError, match="square"):
        persistence_diagrams(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        persistence_diagrams(np.array([[0.0, np.nan], [np.nan, 0.0]]))


def test_mst_batch_equals_single_prim_and_gudhi_h0():
    rng = np.random.default_rng(4)
    dist = distance_matrix(rng.standard_normal((50, 6)))
    subsets = np.stack([np.sort(rng.permutation(50)[:20]) for _ in range(7)])
    batch = mst_edge_lengths_batch(dist, subsets)
    for row, sub in zip(batch, subsets):
        single = mst_edge_lengths(dist[np.ix_(sub, sub)])
        np.testing.assert_allclose(np.sort(row), np.sort(single))
        ref = persistence_diagrams(dist[np.ix_(sub, sub)], method="gudhi")[0][:, 1]
        np.testing.assert_allclose(np.sort(row), np.sort(ref))


def _grown_subtree(rng, tree, n, k):
    """k vertices spanning a connected part of ``tree``, grown from a random vertex."""
    u, v, _ = tree
    chosen = {int(rng.integers(n))}
    while len(chosen) < k:
        frontier = [int(b) for a, b in zip(u, v) if a in chosen and b not in chosen]
        frontier += [int(a) for a, b in zip(u, v) if b in chosen and a not in chosen]
        chosen.add(frontier[int(rng.integers(len(frontier)))])
    return np.array(sorted(chosen))


@pytest.mark.parametrize("ties", [False, True])
def test_subsets_read_from_the_tree_have_exactly_prims_deaths(ties):
    # The fast path for subsets spanning a connected part of the whole cloud's MST gives the
    # same multiset of H0 deaths, bit for bit, as a Prim on the subset; on clouds with many
    # tied distances (integer grid points) as well, and mixed with subsets that do not span one.
    rng = np.random.default_rng(11 + ties)
    for trial in range(20):
        n = int(rng.integers(8, 60))
        points = rng.integers(0, 4, size=(n, 3)).astype(float) if ties else rng.standard_normal((n, 5))
        dist = distance_matrix(points)
        tree = mst_edges(dist)
        k = int(rng.integers(2, n + 1))
        grown = np.stack([_grown_subtree(rng, tree, n, k) for _ in range(4)])
        scattered = np.stack([np.sort(rng.permutation(n)[:k]) for _ in range(4)])
        subsets = np.concatenate([grown, scattered])
        connected, _ = subtree_edge_lengths(tree, n, subsets)
        assert connected[:4].all()  # grown subtrees take the fast path
        fast = subset_mst_edge_lengths(dist, subsets, tree)
        prim = mst_edge_lengths_batch(dist, subsets)
        np.testing.assert_array_equal(np.sort(fast, axis=1), np.sort(prim, axis=1))


def test_metric_calculator_fitness_is_unchanged_by_the_tree_path():
    # SubsetFitness with the layer's tree equals the same fitness without it (Prim everywhere),
    # exactly, for both diagram distances, on the salience-ranked subsets and random ones.
    from dataclasses import replace

    from nni_topo_pruner.metric_calculator import MetricCalculator, salience_ranked_subset

    rng = np.random.default_rng(3)
    for distance in ("wasserstein", "bottleneck"):
        calc = MetricCalculator(distance=distance)
        layer = calc.analyse(rng.standard_normal((40, 6)))
        assert layer.tree is not None
        with_tree, without = calc.subset_fitness(layer), calc.subset_fitness(replace(layer, tree=None))
        for k in (5, 20, 39):
            subsets = [salience_ranked_subset(layer.salience, k)] + [np.sort(rng.permutation(40)[:k]) for _ in range(5)]
            np.testing.assert_array_equal(with_tree.batch(subsets), without.batch(subsets))


# --- diagram distances -------------------------------------------------------------------


def random_h0_diagrams(rng, count=60):
    for _ in range(count):
        m, n = rng.integers(0, 12, size=2)
        if rng.random() < 0.5:  # ties
            a, b = rng.integers(1, 5, size=m) / 2, rng.integers(1, 5, size=n) / 2
        else:
            a, b = rng.random(m) * 3, rng.random(n) * 3
        yield np.column_stack([np.zeros(m), a]), np.column_stack([np.zeros(n), b])


def test_fast_bottleneck_h0_equals_gudhi():
    rng = np.random.default_rng(5)
    for a, b in random_h0_diagrams(rng, 300):
        assert bottleneck_h0(a, b) == pytest.approx(gudhi.bottleneck_distance(a, b, e=0), abs=1e-12)


def test_fast_bottleneck_on_real_h0_diagrams_equals_gudhi():
    for (_, x), (_, y) in zip(clouds(6), clouds(7)):
        a = persistence_diagrams(distance_matrix(x))[0]
        b = persistence_diagrams(distance_matrix(y))[0]
        assert diagram_distance({0: a}, {0: b}) == pytest.approx(gudhi.bottleneck_distance(a, b, e=0), abs=1e-12)


@pytest.mark.parametrize("order", [1.0, 2.0])
def test_exact_wasserstein_equals_pot_and_hera(order):
    import ot  # POT: a declared dependency (gudhi.wasserstein)
    assert ot is not None
    from gudhi.wasserstein import wasserstein_distance as pot_wasserstein

    rng = np.random.default_rng(8)
    pairs = list(random_h0_diagrams(rng, 40))
    for _ in range(20):  # general (H1-like) diagrams, births > 0
        m, n = rng.integers(0, 9, size=2)
        births_a, births_b = rng.random(m), rng.random(n)
        pairs.append(
            (
                np.column_stack([births_a, births_a + rng.random(m)]),
                np.column_stack([births_b, births_b + rng.random(n)]),
            )
        )
    for a, b in pairs:
        ours = wasserstein_exact(a, b, order)
        assert ours == pytest.approx(pot_wasserstein(a, b, order=order, internal_p=np.inf), abs=1e-9)
        if len(a) and len(b):
            hera = hera_wasserstein(a, b, order=order, internal_p=np.inf, delta=1e-4)
            assert ours == pytest.approx(hera, rel=1e-3, abs=1e-9)


@pytest.mark.parametrize("order", [1.0, 2.0, 3.5])
def test_fast_wasserstein_h0_equals_pot(order):
    import ot  # noqa: F401  POT: a declared dependency (gudhi.wasserstein)
    from gudhi.wasserstein import wasserstein_distance as pot_wasserstein

    rng = np.random.default_rng(15)
    for a, b in random_h0_diagrams(rng, 200):
        want = pot_wasserstein(a, b, order=order, internal_p=np.inf)
        assert wasserstein_h0(a, b, order) == pytest.approx(want, rel=1e-10, abs=1e-10)
    # batched form: one diagram against several, zero padding changes nothing
    full = np.sort(rng.random(20))
    subs = np.sort(rng.random((4, 9)), axis=1)
    subs[1, :3] = 0.0
    batch = wasserstein_h0_sorted(full, subs, order)
    for row, value in zip(subs, batch):
        row = row[row > 0]
        want = pot_wasserstein(
            np.column_stack([np.zeros(20), full]), np.column_stack([np.zeros(len(row)), row]), order=order, internal_p=np.inf
        )
        assert value == pytest.approx(want, rel=1e-10)


def test_fast_wasserstein_h0_equals_the_assignment_problem():
    # Independent of POT: the DP against scipy's exact assignment on the augmented matrix.
    rng = np.random.default_rng(18)
    for a, b in random_h0_diagrams(rng, 150):
        for order in (1.0, 2.0, 3.5):
            assert wasserstein_h0(a, b, order) == pytest.approx(wasserstein_exact(a, b, order), rel=1e-10, abs=1e-10)


def test_slope_trick_wasserstein1_equals_pot_and_the_dynamic_programme():
    # The O(m log m) path against POT's exact solver and against the DP, on diagrams with ties,
    # zero-length bars, one side empty and very unequal sizes.
    import ot  # noqa: F401
    from gudhi.wasserstein import wasserstein_distance as pot_wasserstein

    rng = np.random.default_rng(31)
    for a, b in random_h0_diagrams(rng, 200):
        a_asc, b_asc = np.sort(a[:, 1]), np.sort(b[:, 1])
        want = pot_wasserstein(a, b, order=1.0, internal_p=np.inf)
        assert wasserstein1_h0_slope(a_asc, b_asc) == pytest.approx(want, rel=1e-10, abs=1e-10)
    for trial in range(300):
        m, n = rng.integers(0, 60, size=2)
        a_asc = np.sort(rng.exponential(1.0, m) * (rng.random(m) < 0.85))  # some zero-length bars
        b_asc = np.sort(rng.exponential(1.0, n))
        if trial % 3 == 0:  # many exact ties, within and across the diagrams
            a_asc, b_asc = np.sort(np.round(a_asc, 1)), np.sort(np.round(b_asc, 1))
        want = float(wasserstein_h0_dp(a_asc, b_asc, 1.0)) if m + n else 0.0
        assert wasserstein1_h0_slope(a_asc, b_asc) == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert wasserstein1_h0_slope(b_asc, a_asc) == pytest.approx(want, rel=1e-9, abs=1e-12)  # symmetric


def test_wasserstein_h0_sorted_takes_the_slope_trick_for_order_1_and_agrees_with_the_dp():
    # Sizes from 2 points to a ConvNeXt group (a 3,072-point cloud keeping 2,304): order 1 is the
    # slope trick, whose values equal the DP's within rounding; a batch or a single diagram.
    rng = np.random.default_rng(5)
    for n_full, n_keep in ((2, 1), (9, 4), (768, 576), (3072, 2304)):
        full = np.sort(rng.random(n_full - 1))
        subs = np.sort(rng.random((3, n_keep - 1)) * 1.1, axis=1)
        dispatched = wasserstein_h0_sorted(full, subs, 1.0)
        reference = wasserstein_h0_dp(full, subs, 1.0)
        np.testing.assert_allclose(dispatched, reference, rtol=1e-10, atol=1e-15)
        np.testing.assert_array_equal(dispatched, [wasserstein1_h0_slope(full, row) for row in subs])
        assert wasserstein_h0_sorted(full, subs[0], 1.0) == wasserstein1_h0_slope(full, subs[0])
    # order 2 always takes the DP
    full, subs = np.sort(rng.random(400)), np.sort(rng.random((2, 300)), axis=1)
    np.testing.assert_array_equal(wasserstein_h0_sorted(full, subs, 2.0), wasserstein_h0_dp(full, subs, 2.0))


def test_diagram_distance_combines_dimensions_as_documented():
    a = {0: np.array([[0.0, 2.0]]), 1: np.array([[1.0, 4.0]])}
    b = {0: np.empty((0, 2)), 1: np.empty((0, 2))}
    # per-dim: H0 bar to the diagonal 1.0, H1 bar 1.5
    assert diagram_distance(a, b) == pytest.approx(1.5)
    assert diagram_distance(a, b, "wasserstein", order=1) == pytest.approx(2.5)
    assert diagram_distance(a, b, "wasserstein", order=2) == pytest.approx(np.sqrt(1.0 + 2.25))
    assert diagram_distance(a, {}) == pytest.approx(1.5)  # a missing dim is an empty diagram
    with pytest.raises(ValueError, match="distance must be one of"):
        diagram_distance(a, b, "hausdorff")
    with pytest.raises(ValueError, match="order must be a finite number >= 1"):
        diagram_distance(a, b, "wasserstein", order=0.5)


# --- leave-one-out salience --------------------------------------------------------------


def brute_force_salience(dist, dims, kind):
    from gudhi.wasserstein import wasserstein_distance as pot_wasserstein

    n = len(dist)
    full = persistence_diagrams(dist, dims, method="gudhi")
    out = []
    for i in range(n):
        keep = np.arange(n) != i
        sub = persistence_diagrams(dist[np.ix_(keep, keep)], dims, method="gudhi")
        if kind == "bottleneck":
            out.append(max(gudhi.bottleneck_distance(full[d], sub[d], e=0) for d in dims))
        else:
            out.append(sum(pot_wasserstein(full[d], sub[d], order=1, internal_p=np.inf) for d in dims))
    return np.array(out)


@pytest.mark.parametrize("name, x", [c for c in clouds(9) if len(c[1]) <= 40])
def test_h0_salience_equals_brute_force_gudhi(name, x):
    import ot  # noqa: F401  POT: a declared dependency (gudhi.wasserstein)
    dist = distance_matrix(x)
    for kind in ("bottleneck", "wasserstein"):
        np.testing.assert_allclose(
            leave_one_out_salience(dist, (0,), kind), brute_force_salience(dist, (0,), kind), atol=1e-10, err_msg=name
        )


def test_h0_salience_on_a_long_path_and_a_star():
    # inner vertices of high degree and long chains exercise the reconnection search
    path = np.arange(30, dtype=float)[:, None] ** 1.1
    star = np.vstack([np.zeros((1, 2)), np.column_stack([np.cos(np.arange(12)), np.sin(np.arange(12))])])
    for x in (path, star):
        dist = distance_matrix(x)
        np.testing.assert_allclose(
            leave_one_out_salience(dist), brute_force_salience(dist, (0,), "bottleneck"), atol=1e-10
        )


def test_h0_h1_salience_equals_brute_force_gudhi():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((14, 2))
    dist = distance_matrix(x)
    np.testing.assert_allclose(
        leave_one_out_salience(dist, (0, 1)), brute_force_salience(dist, (0, 1), "bottleneck"), atol=1e-10
    )


def test_duplicate_points_have_zero_salience():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((10, 3))
    x[4] = x[2]
    s = leave_one_out_salience(distance_matrix(x))
    assert s[2] == 0.0 and s[4] == 0.0
    assert np.all(np.delete(s, [2, 4]) > 0)


def test_higher_dim_bounds_hold_and_skip_is_exact():
    from nni_topo_pruner.topology.bounds import (
        enclosing_radius,
        enclosing_radius_without_each,
        higher_dim_bottleneck_bound,
        max_persistence,
        smallest_positive_distance,
    )

    rng = np.random.default_rng(16)
    x = rng.standard_normal((22, 40))  # high-dimensional: H1 is tiny next to H0
    dist = distance_matrix(x)
    full = persistence_diagrams(dist, (0, 1), method="gudhi")
    radius_without = enclosing_radius_without_each(dist)
    m, p = smallest_positive_distance(dist), max_persistence(full, (1,))
    for v in range(22):
        keep = np.arange(22) != v
        sub = dist[np.ix_(keep, keep)]
        assert radius_without[v] == enclosing_radius(sub)
        sub_dgm = persistence_diagrams(sub, (1,), method="gudhi")[1]
        assert gudhi.bottleneck_distance(full[1], sub_dgm, e=0) <= higher_dim_bottleneck_bound(radius_without[v], m, p) + 1e-12
    # the (0, 1) salience, which skips most H1 recomputations here, equals brute force
    np.testing.assert_allclose(
        leave_one_out_salience(dist, (0, 1)), brute_force_salience(dist, (0, 1), "bottleneck"), atol=1e-10
    )


def test_capped_filtration_is_exact_at_the_enclosing_radius_and_bounded_below_it():
    rng = np.random.default_rng(17)
    dist = distance_matrix(rng.standard_normal((30, 2)))
    exact = persistence_diagrams(dist, (0, 1), method="gudhi")
    radius = dist.max(axis=1).min()
    capped = persistence_diagrams(dist, (0, 1), max_edge_length=radius)
    assert same_diagram(capped[1], exact[1]) and same_diagram(capped[0], exact[0])
    cap = float(np.quantile(exact[1][:, 1], 0.5))
    low = persistence_diagrams(dist, (0, 1), max_edge_length=cap)
    assert same_diagram(low[0], exact[0])  # H0 is never capped
    assert np.all(low[1][:, 1] <= cap)
    assert gudhi.bottleneck_distance(low[1], exact[1], e=0) <= radius - cap
    with pytest.raises(ValueError, match="max_edge_length"):
        persistence_diagrams(dist, (0, 1), max_edge_length=-1.0)


def test_h0_salience_over_several_blocks_with_a_skipped_point_equals_leave_one_out_msts():
    """The leave-one-out search works a block of points at a time (512): across block
    boundaries, with a skipped point and a tied (integer-grid) cloud, every salience equals
    the diagram distance to the MST of the cloud without that point, for W1, W2 and bottleneck."""
    from nni_topo_pruner.topology.diagram_distance import bottleneck_h0, wasserstein_h0
    from nni_topo_pruner.topology.mst import mst_edge_lengths

    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(size=(500, 6)), rng.integers(-1, 2, size=(30, 6)).astype(float)])
    dist = distance_matrix(x)
    full = np.column_stack([np.zeros(len(x) - 1), mst_edge_lengths(dist)])
    without = []
    for v in range(len(x)):
        keep = np.arange(len(x)) != v
        lengths = mst_edge_lengths(dist[np.ix_(keep, keep)])
        without.append(np.column_stack([np.zeros(len(lengths)), lengths]))
    for kind, order, distance in (("wasserstein", 1.0, lambda a, b: wasserstein_h0(a, b, 1.0)),
                                  ("wasserstein", 2.0, lambda a, b: wasserstein_h0(a, b, 2.0)),
                                  ("bottleneck", 1.0, bottleneck_h0)):
        salience = leave_one_out_salience(dist, (0,), kind, order=order, skip=(0, 515))
        checked = np.arange(len(x)) if order == 1.0 else np.r_[0:len(x):9, 512:520]  # W2's exact DP is slow
        expected = np.array([0.0 if v in (0, 515) else distance(full, without[v]) for v in checked])
        np.testing.assert_allclose(salience[checked], expected, rtol=1e-9, atol=1e-12, err_msg=f"{kind} {order}")
