"""Betti numbers at a scale (nni_topo_pruner.topology.betti) on clouds whose topology is known."""
from __future__ import annotations

import math

import gudhi
import numpy as np
import pytest

from nni_topo_pruner.topology.betti import (
    BettiScale,
    betti_at_scale,
    betti_numbers,
    h0_intervals,
    pairwise_distances,
    persistence_intervals,
)


def circle(n=80, radius=1.0, centre=(0.0, 0.0), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    pts = np.c_[np.cos(t), np.sin(t)] * radius + np.asarray(centre)
    return pts + rng.normal(scale=noise, size=pts.shape)


def sphere(n=400, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("complex_", ["rips", "alpha"])
def test_circle_is_one_component_one_loop(complex_):
    pts = circle(120, noise=0.01)
    assert betti_numbers(pts, dims=(0, 1), scale=0.4, scale_reference="absolute", complex=complex_) == (1, 1)
    # far below the sampling gap every point is its own component, no loop yet
    assert betti_numbers(pts, dims=(0, 1), scale=1e-6, scale_reference="absolute", complex=complex_) == (120, 0)
    # beyond the circle's size the loop is filled
    assert betti_numbers(pts, dims=(0, 1), scale=2.5, scale_reference="absolute", complex=complex_) == (1, 0)


@pytest.mark.parametrize("complex_", ["rips", "alpha"])
def test_two_circles(complex_):
    pts = np.vstack([circle(100, seed=1), circle(100, radius=0.5, centre=(4.0, 0.0), seed=2)])
    assert betti_numbers(pts, dims=(0, 1), scale=0.3, scale_reference="absolute", complex=complex_) == (2, 2)


def test_sphere_has_a_void_alpha():
    pts = sphere(500)
    assert betti_numbers(pts, dims=(0, 1, 2), scale=0.8, scale_reference="absolute", complex="alpha") == (1, 0, 1)
    # solid ball: no void
    rng = np.random.default_rng(3)
    ball = rng.uniform(-1, 1, size=(3000, 3))
    ball = ball[np.linalg.norm(ball, axis=1) <= 1]
    assert betti_numbers(ball, dims=(0, 1, 2), scale=0.6, scale_reference="absolute", complex="alpha") == (1, 0, 0)


def test_sphere_rips_components_and_loops():
    pts = sphere(150, seed=4)
    assert betti_numbers(pts, dims=(0, 1), scale=1.0, scale_reference="absolute") == (1, 0)


def test_relative_scale_ignores_units():
    pts = np.vstack([circle(60, seed=5), circle(60, centre=(5.0, 0.0), seed=6)])
    a = betti_numbers(pts, dims=(0, 1), scale=0.15)
    b = betti_numbers(pts * 7.0, dims=(0, 1), scale=0.15)
    assert a == b == (2, 2)


def test_scale_resolution():
    assert BettiScale(0.25, "diameter").resolve(8.0) == 2.0
    assert BettiScale(0.25, "absolute").resolve(8.0) == 0.25
    assert BettiScale(0.5, "median").resolve(8.0, median=3.0) == 1.5
    with pytest.raises(ValueError, match="median"):
        BettiScale(0.5, "median").resolve(8.0)
    with pytest.raises(ValueError, match="scale"):
        BettiScale(-1.0)
    with pytest.raises(ValueError, match="scale_reference"):
        BettiScale(0.5, "mean")
    with pytest.raises(ValueError, match="count"):
        BettiScale(0.5, "diameter", "all")


def test_alive_and_persistent_counts():
    bars = {0: np.array([[0.0, 0.5], [0.0, 2.0], [0.0, np.inf]]), 1: np.array([[1.0, 1.2], [0.2, 3.0]])}
    assert betti_at_scale(bars, 1.1, "alive") == {0: 2, 1: 2}
    assert betti_at_scale(bars, 0.5, "alive") == {0: 2, 1: 1}     # death == scale: already dead
    assert betti_at_scale(bars, 0.5, "persistent") == {0: 2, 1: 1}
    assert betti_at_scale(bars, 0.1, "persistent") == {0: 3, 1: 2}


def test_rips_h0_matches_alpha_h0_in_edge_length_units():
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(60, 3))
    rips = np.sort(persistence_intervals(pts, max_dimension=0)[0][:, 1])
    alpha = np.sort(persistence_intervals(pts, max_dimension=0, complex="alpha")[0][:, 1])
    np.testing.assert_allclose(rips, alpha, rtol=1e-9)


def test_edge_collapse_keeps_gudhi_persistence():
    rng = np.random.default_rng(8)
    pts = np.vstack([circle(40, seed=9, noise=0.05), rng.normal(size=(30, 2)) * 0.3 + 3])
    ours = persistence_intervals(pts, max_dimension=1)
    st = gudhi.RipsComplex(points=pts).create_simplex_tree(max_dimension=2)  # no collapse
    st.persistence()
    for k in (0, 1):
        ref = np.asarray(st.persistence_intervals_in_dimension(k)).reshape(-1, 2)
        np.testing.assert_allclose(np.sort(ours[k], axis=0), np.sort(ref, axis=0), rtol=1e-9)


def test_truncated_complex_gives_same_betti_as_full_filtration():
    rng = np.random.default_rng(10)
    pts = rng.normal(size=(70, 4))
    dm = pairwise_distances(pts)
    full = persistence_intervals(distance_matrix=dm, max_dimension=1)
    for frac in (0.2, 0.35, 0.5):
        s = frac * dm.max()
        assert betti_numbers(distance_matrix=dm, dims=(0, 1), scale=frac) == tuple(betti_at_scale(full, s).values())


def test_points_and_distance_matrix_agree():
    pts = circle(50, seed=11)
    assert betti_numbers(pts, dims=(0, 1), scale=0.1) == betti_numbers(
        distance_matrix=pairwise_distances(pts), dims=(0, 1), scale=0.1)


def test_coincident_points_are_one_component():
    assert betti_numbers(np.zeros((10, 5)), scale=0.5) == (1,)
    assert betti_numbers(np.ones((1, 3)), dims=(0, 1), scale=0.5) == (1, 0)


def test_pairwise_distances_matches_scipy():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(12)
    x = rng.normal(size=(30, 16))
    np.testing.assert_allclose(pairwise_distances(x), cdist(x, x), atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "exactly one"),
        (dict(points=np.zeros((3, 2)), distance_matrix=np.zeros((3, 3))), "exactly one"),
        (dict(distance_matrix=np.zeros((3, 3)), complex="alpha"), "alpha"),
        (dict(points=np.zeros((3, 2)), complex="cech"), "complex"),
        (dict(points=np.zeros((3, 2)), max_dimension=-1), "max_dimension"),
        (dict(points=np.zeros((0, 2))), "non-empty"),
        (dict(points=np.array([[0.0, np.nan]])), "NaN"),
        (dict(distance_matrix=np.zeros((3, 2))), "square"),
        (dict(distance_matrix=-np.ones((2, 2))), "non-negative"),
    ],
)
def test_bad_input_persistence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        persistence_intervals(**kwargs)


def test_bad_input_betti_numbers():
    with pytest.raises(ValueError, match="dims"):
        betti_numbers(np.zeros((3, 2)), dims=())
    with pytest.raises(ValueError, match="dims"):
        betti_numbers(np.zeros((3, 2)), dims=(-1,))
    with pytest.raises(ValueError, match="alpha"):
        betti_numbers(distance_matrix=np.zeros((2, 2)), complex="alpha")
    with pytest.raises(ValueError, match="scale"):
        betti_numbers(np.zeros((3, 2)), scale=math.nan)


def test_median_reference_is_robust_to_an_outlier():
    pts = circle(80, seed=13)
    far = np.vstack([pts, [[100.0, 0.0]]])
    assert betti_numbers(pts, dims=(0, 1), scale=0.3, scale_reference="median") == (1, 1)
    # the median barely moves: the circle keeps its loop, the outlier is a second component
    assert betti_numbers(far, dims=(0, 1), scale=0.3, scale_reference="median") == (2, 1)
    # the outlier alone sets the diameter: 0.3 x diameter (~30) fills the circle in
    assert betti_numbers(far, dims=(0, 1), scale=0.3, scale_reference="diameter") == (2, 0)
    dm = pairwise_distances(far)
    diameter, median = BettiScale.distance_stats(dm)
    assert diameter == pytest.approx(dm.max()) and median == pytest.approx(np.median(dm[np.triu_indices(81, 1)]))


def test_median_reference_refuses_huge_point_clouds():
    with pytest.raises(ValueError, match="subsample"):
        betti_numbers(np.zeros((5000, 3)), scale=0.5, scale_reference="median", complex="alpha")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_h0_from_mst_matches_gudhi(seed):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(120, 7))
    pts[5] = pts[6]                                   # a duplicate point: a zero-length bar
    dm = pairwise_distances(pts)
    ours = h0_intervals(dm)
    ref = persistence_intervals(distance_matrix=dm, max_dimension=0)[0]
    np.testing.assert_allclose(np.sort(ours[ours[:, 1] > 0][:, 1]), np.sort(ref[:, 1]), rtol=1e-12)
    for s in np.quantile(dm, [0.01, 0.05, 0.2, 0.5]):
        for count in ("alive", "persistent"):
            assert betti_at_scale({0: ours}, s, count) == betti_at_scale({0: ref}, s, count)
