"""The compiled kernels (numba) against the same code run by CPython (``kernel.py_func``),
bit for bit, on random and on tied inputs; and against independent references (NumPy's
fancy indexing, SciPy's minimum spanning tree)."""
import json

import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from nni_topo_pruner.topology import kernels, mst
from nni_topo_pruner.topology.distances import reordered
from nni_topo_pruner.topology.mst import mst_edge_lengths_batch, mst_edges

from tests.test_mask_pinning import FIXTURE, pinned_view


def _matrices(seed: int):
    """A random Euclidean matrix, one with many exact ties (integer distances), one with
    duplicate points (zero distances), sizes around Prim's edge cases."""
    rng = np.random.default_rng(seed)
    for n in (2, 3, 17, 64):
        yield squareform(pdist(rng.standard_normal((n, 5))))
        ties = rng.integers(1, 4, size=(n, n)).astype(np.float64)
        ties = np.triu(ties, 1) + np.triu(ties, 1).T
        yield ties
        points = rng.standard_normal((n, 3))
        points[n // 2] = points[0]
        yield squareform(pdist(points))


@pytest.mark.parametrize("seed", [0, 1])
def test_prim_compiled_equals_its_python_code_and_scipy(seed):
    for dist in _matrices(seed):
        n = len(dist)
        compiled = [np.empty(n - 1, np.intp), np.empty(n - 1, np.intp), np.empty(n - 1)]
        python = [np.empty(n - 1, np.intp), np.empty(n - 1, np.intp), np.empty(n - 1)]
        kernels.prim_edges(dist, *compiled)
        kernels.prim_edges.py_func(dist, *python)
        for got, want in zip(compiled, python):
            assert np.array_equal(got, want)
        us, vs, ws = mst_edges(dist)
        assert np.array_equal(ws, python[2]) and np.array_equal(dist[us, vs], ws)
        # a spanning tree (n - 1 edges joining every vertex) of the minimum total weight
        assert len(set(vs.tolist()) | {0}) == n
        if (dist[~np.eye(n, dtype=bool)] > 0).all():  # scipy reads a zero as "no edge"
            assert ws.sum() == pytest.approx(minimum_spanning_tree(dist).toarray().sum(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_prim_compiled_equals_its_python_code_and_single_prim(seed):
    rng = np.random.default_rng(seed)
    for dist in _matrices(seed):
        n = len(dist)
        for k in sorted({2, max(2, n // 2), n}):
            subsets = np.array([rng.permutation(n)[:k] for _ in range(5)], dtype=np.intp)
            compiled, python = np.empty((5, k - 1)), np.empty((5, k - 1))
            kernels.prim_subset_weights(dist, subsets, compiled)
            kernels.prim_subset_weights.py_func(dist, subsets, python)
            assert np.array_equal(compiled, python)
            for row, subset in zip(compiled, subsets):  # Prim from the row's first vertex, same ties
                assert np.array_equal(row, mst_edges(dist[np.ix_(subset, subset)])[2])
            assert np.array_equal(mst_edge_lengths_batch(dist, subsets), compiled)


def test_slope_trick_compiled_equals_its_python_code():
    rng = np.random.default_rng(3)
    for _ in range(300):
        m, n = rng.integers(0, 40, size=2)
        scale = rng.choice([1e-3, 1.0, 1e3])
        a = np.sort(rng.random(m) * scale)
        b = np.sort(rng.random(n) * scale)
        if rng.random() < 0.3:  # shared values and exact ties between the diagrams
            b = np.sort(np.concatenate([b, a[: m // 2]]))
            a = np.round(a, 1)
        assert kernels.wasserstein1_h0_slope_kernel(a, b) == kernels.wasserstein1_h0_slope_kernel.py_func(a, b)
    rows_a, rows_b = np.sort(rng.random((6, 30)), axis=1), np.sort(rng.random((6, 45)), axis=1)
    out = np.empty(6)
    kernels.wasserstein1_h0_slope_rows(rows_a, rows_b, out)
    assert out.tolist() == [kernels.wasserstein1_h0_slope_kernel.py_func(a, b) for a, b in zip(rows_a, rows_b)]


def test_gather_square_equals_fancy_indexing():
    rng = np.random.default_rng(4)
    for n in (1, 2, 50):
        dist = rng.random((n, n))
        order = rng.permutation(n)
        assert np.array_equal(reordered(dist, order), dist[np.ix_(order, order)])
        out = np.empty((n, n))
        kernels.gather_square.py_func(dist, order, out)
        assert np.array_equal(out, dist[np.ix_(order, order)])


def test_kernels_reject_indices_out_of_range():
    """The compiled loops do not check bounds; their public callers do, with a message."""
    dist = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"order must be .* in \[0, 3\)"):
        reordered(dist, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"order must be .* in \[0, 3\)"):
        reordered(dist, np.array([-1, 1, 2]))
    with pytest.raises(ValueError, match=r"subsets must hold vertex indices in \[0, 3\)"):
        mst_edge_lengths_batch(dist, np.array([[0, 5]]))


def test_warm_up_compiles_every_kernel():
    assert kernels.warm_up() >= 0.0
    for kernel in (kernels.prim_edges, kernels.prim_subset_weights, kernels.wasserstein1_h0_slope_kernel,
                   kernels.wasserstein1_h0_slope_rows, kernels.gather_square, kernels.gram_to_squared_distances,
                   kernels.close_pairs, kernels.squared_to_symmetric_distances):
        assert kernel.signatures, f"{kernel.py_func.__name__} was not compiled by warm_up()"


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """numba raises at decoration time when it finds no writable cache location (a read-only
    install, a user without a home): the kernels then compile once per process instead."""
    import numba

    real = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            def fail(function):
                raise RuntimeError(f"cannot cache function {function.__name__!r}: no locator available for file 'x'")
            return fail
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    kernel = kernels.compiled(kernels.wasserstein1_h0_slope_kernel.py_func)
    assert kernel(np.array([1.0, 2.0]), np.array([2.0])) == 0.5
    assert kernel.signatures  # compiled, not the Python function


@pytest.fixture
def python_kernels(monkeypatch):
    """Every compiled kernel replaced, where its callers find it, by its own Python code."""
    from nni_topo_pruner.topology import diagram_distance, distances

    for module in (mst, distances, diagram_distance, kernels):
        for name in ("prim_edges", "prim_subset_weights", "gather_square", "gram_to_squared_distances", "close_pairs",
                     "squared_to_symmetric_distances", "wasserstein1_h0_slope_kernel", "wasserstein1_h0_slope_rows"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(kernels, name).py_func)


@pytest.mark.parametrize("case", ["bn_cnn-default", "bn_cnn-activations", "vgg_chain-seed7", "mlp-bottleneck-no_anchor",
                                  "residual-dependency"])
def test_pinned_masks_are_the_same_with_the_kernels_run_as_python(python_kernels, case):
    """End to end, the fast path equals its reference: the pruner keeps the pinned channels
    (tests/test_mask_pinning.py) with every kernel run as plain Python."""
    assert not hasattr(mst.prim_edges, "py_func")  # the fixture is in effect
    assert pinned_view(case) == json.loads(FIXTURE.read_text())[case]
