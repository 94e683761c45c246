"""``search='local'`` (issue 25): the polish of the salience-ranked start alone, without the GA.

What it promises: the answer is exactly :func:`polish_by_swaps` from the salience-ranked start
(no random draw, so every seed gives the same mask), it is a local optimum (no single swap
improves it beyond the tolerance) unless the polish's budget stopped it, masks are permuted with
the neurons, and a bad value is refused naming the option.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.engine import analyse_unit, build_criterion, choose_kept
from nni_topo_pruner.evolutionary import GAConfig, evolve_neuron_mask, fitness_tolerance, polish_by_swaps
from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.topology.validation import InvalidParameterError


def clouds():
    rng = np.random.default_rng(5)
    return {"gaussian": rng.normal(size=(20, 6)),
            "clustered": np.repeat(rng.normal(size=(5, 4)), 4, axis=0) + 1e-3 * rng.normal(size=(20, 4)),
            "unit": (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(20, 8)))}


def circle() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 2 * np.pi, 16)
    return np.c_[np.cos(t), np.sin(t)] + 0.1 * rng.normal(size=(16, 2))


@pytest.mark.parametrize("name, options", [("gaussian", {}), ("clustered", {}), ("unit", {}),
                                           ("circle", {"homology_dims": (0, 1)})])
def test_local_search_is_the_polish_of_the_salience_start_and_a_local_optimum(name, options):
    points = circle() if name == "circle" else clouds()[name]
    n, k = len(points), len(points) // 2
    calc = MetricCalculator(**options)
    fitness = calc.subset_fitness(calc.analyse(points))
    start = np.arange(n - 1, n - 1 - k, -1)  # any fixed start: the search must polish exactly it
    result = evolve_neuron_mask(fitness, n, k, GAConfig(search="local", polish_budget=10**9), initial_keep=start)
    mask = np.zeros(n, dtype=bool)
    mask[start] = True
    tol, bound = fitness_tolerance(fitness), fitness.lower_bound(k)
    reached = bound + max(tol, 1e-5 * abs(bound))
    reference = polish_by_swaps(fitness, mask, fitness(mask), tol=tol, reached=reached,
                                max_passes=GAConfig().polish_passes, budget=10**9)
    np.testing.assert_array_equal(result.keep_mask, reference.keep_mask)
    assert result.best_fitness == pytest.approx(reference.fitness) and result.generations_run == 0
    assert result.best_fitness <= result.initial_fitness and result.converged
    if name == "circle":  # H0+H1 on a noisy circle: the polish stops above the bound, so check it is a local optimum
        assert result.best_fitness > reached
        kept, pruned = np.flatnonzero(result.keep_mask), np.flatnonzero(~result.keep_mask)
        for out in kept:
            for into in pruned:
                trial = result.keep_mask.copy()
                trial[out], trial[into] = False, True
                assert fitness(trial) >= result.best_fitness - tol


@pytest.mark.parametrize("name", ["gaussian", "clustered", "unit"])
def test_local_search_masks_do_not_depend_on_the_seed_and_follow_a_permutation(name):
    points = clouds()[name]
    calc = MetricCalculator()

    def keep(cloud, seed):
        return choose_kept(calc, analyse_unit(calc, cloud), 8, GAConfig(search="local", seed=seed)).keep_mask

    reference = keep(points, 0)
    for seed in (1, 7, None):
        np.testing.assert_array_equal(keep(points, seed), reference)
    perm = np.random.default_rng(3).permutation(len(points))
    np.testing.assert_array_equal(keep(points[perm], 0), reference[perm])


@pytest.mark.parametrize("value", ["tabu", "GA ", 1, None])
def test_bad_search_names_the_option(value):
    with pytest.raises(InvalidParameterError, match="search"):
        GAConfig(search=value)
    with pytest.raises(InvalidParameterError, match="search"):
        build_criterion(search=value)
    with pytest.raises(InvalidParameterError, match="search"):
        TopologicalPruner(torch.nn.Sequential(torch.nn.Linear(4, 6)), [{"op_names": ["0"], "sparse_ratio": 0.5}],
                          search=value, progress=False)


def test_search_is_case_insensitive_and_reported():
    torch.manual_seed(0)
    pruner = TopologicalPruner(torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2)),
                               [{"op_names": ["0"], "sparse_ratio": 0.5}], search="LOCAL", progress=False)
    pruner.compress()
    assert pruner.report.options["ga"]["search"] == "local"
    assert pruner.report.units[0].kept == 6
