"""The pyeasyga-based GA: cardinality, planted duplicates, determinism, RNG hygiene, edges."""
from __future__ import annotations

import random

import numpy as np
import pytest

from nni_topo_pruner.evolutionary import (
    GAConfig,
    GAResult,
    NeuronMaskGA,
    evolve_neuron_mask,
    fitness_tolerance,
    random_subset_mask,
    set_crossover,
    swap_mutation,
)
from nni_topo_pruner.metric_calculator import MetricCalculator, salience_ranked_subset


def layer_fitness(x, **options):
    calc = MetricCalculator(**options)
    layer = calc.analyse(x)
    return layer, calc.subset_fitness(layer)


def planted_duplicates(m=24, d=5, seed=0):
    """m distinct points, each twice, rows shuffled: keeping one copy of each is optimal."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, d))
    x = np.vstack([a, a])
    perm = rng.permutation(2 * m)
    return x[perm], perm % m  # x and the id of each row's original point


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"population_size": 1}, "population_size"),
        ({"population_size": 2.5}, "population_size"),
        ({"generations": -1}, "generations"),
        ({"crossover_probability": 1.5}, "crossover_probability"),
        ({"mutation_probability": -0.1}, "mutation_probability"),
        ({"elitism": "yes"}, "elitism"),
        ({"seed": -3}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_config_validation_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GAConfig(**kwargs)


def test_every_operator_preserves_cardinality():
    random.seed(123)
    for n, k in [(2, 1), (10, 1), (10, 9), (50, 20), (64, 32)]:
        for _ in range(200):
            a, b = random_subset_mask(n, k), random_subset_mask(n, k)
            assert a.sum() == k and b.sum() == k
            c1, c2 = set_crossover(a, b)
            assert c1.sum() == k and c2.sum() == k
            assert np.all(c1[a & b]) and np.all(c2[a & b])  # common neurons kept
            assert np.all((c1 | c2) == (a | b))  # nothing from outside the parents
            before = c1.copy()
            swap_mutation(c1)
            assert c1.sum() == k and (c1 != before).sum() == 2


def test_ga_population_keeps_cardinality_through_generations():
    x, _ = planted_duplicates(10)
    _, fitness = layer_fitness(x)
    random.seed(0)
    ga = NeuronMaskGA(fitness, 20, 7, GAConfig(population_size=12))
    ga.create_first_generation()
    for _ in range(15):
        ga.create_next_generation()
        assert all(ind.genes.sum() == 7 and ind.genes.dtype == bool for ind in ga.current_generation)
        assert len(ga.current_generation) == 12


def test_ga_removes_planted_duplicates_and_random_subsets_do_not():
    x, ident = planted_duplicates(24)
    layer, fitness = layer_fitness(x)
    seed_subset = salience_ranked_subset(layer.salience, 24)
    result = evolve_neuron_mask(fitness, 48, 24, GAConfig(seed=0), initial_keep=seed_subset)
    assert result.best_fitness == 0.0
    assert sorted(ident[result.keep_mask]) == list(range(24))  # one copy of every point
    assert result.initial_fitness > 0.0  # the salience-ranked start was not optimal
    rng = np.random.default_rng(1)
    random_values = fitness.batch([rng.permutation(48)[:24] for _ in range(result.evaluations)])
    assert random_values.min() > 0.0


def test_history_and_evaluations_are_consistent():
    x, _ = planted_duplicates(12)
    layer, fitness = layer_fitness(x)
    cfg = GAConfig(population_size=10, generations=7, seed=3)
    result = evolve_neuron_mask(fitness, 24, 12, cfg, initial_keep=salience_ranked_subset(layer.salience, 12))
    assert isinstance(result, GAResult)
    assert len(result.history) == 8
    assert all(a >= b for a, b in zip(result.history, result.history[1:]))  # elitism
    assert result.history[0] <= result.initial_fitness
    assert result.ga_fitness == result.history[-1]  # the GA's own best; the polish comes after
    assert result.best_fitness == fitness(result.keep_mask) <= result.ga_fitness
    assert 0 < result.evaluations <= 10 * 8 + result.polish_evaluations
    assert result.keep_mask.dtype == bool and result.keep_mask.sum() == 12


def test_same_seed_same_mask_and_different_seed_valid_mask():
    x = np.random.default_rng(5).standard_normal((40, 6))
    masks = []
    for seed in (7, 7, 8):
        _, fitness = layer_fitness(x)  # fresh cache each time
        masks.append(evolve_neuron_mask(fitness, 40, 15, GAConfig(population_size=10, generations=6, seed=seed)))
    assert np.array_equal(masks[0].keep_mask, masks[1].keep_mask)
    assert masks[0].history == masks[1].history
    assert masks[2].keep_mask.sum() == 15
    assert masks[2].best_fitness <= masks[2].history[0]


def test_callers_global_rng_state_is_untouched():
    x = np.random.default_rng(6).standard_normal((20, 3))
    _, fitness = layer_fitness(x)
    random.seed(99)
    np.random.seed(99)
    expected_random, expected_numpy = random.random(), np.random.random()
    random.seed(99)
    np.random.seed(99)
    evolve_neuron_mask(fitness, 20, 8, GAConfig(population_size=6, generations=3, seed=1))
    assert random.random() == expected_random
    assert np.random.random() == expected_numpy


def test_rng_state_restored_even_when_fitness_fails():
    x = np.random.default_rng(6).standard_normal((20, 3))
    _, fitness = layer_fitness(x)

    def broken(keeps):
        raise RuntimeError("boom")

    fitness.batch = broken
    state = random.getstate()
    with pytest.raises(RuntimeError, match="boom"):
        evolve_neuron_mask(fitness, 20, 8, GAConfig(seed=1))
    assert random.getstate() == state


def test_keep_all_runs_no_ga():
    _, fitness = layer_fitness(np.random.default_rng(0).standard_normal((6, 2)))
    result = evolve_neuron_mask(fitness, 6, 6, GAConfig(generations=4))
    assert result.keep_mask.all() and result.best_fitness == 0.0
    assert result.evaluations == 0 and len(result.history) == 5


def test_single_neuron_layer_keeps_it():
    _, fitness = layer_fitness(np.ones((1, 3)))
    result = evolve_neuron_mask(fitness, 1, 1, GAConfig())
    assert result.keep_mask.tolist() == [True]


def test_all_identical_points_return_the_seed_subset():
    _, fitness = layer_fitness(np.ones((10, 4)))
    seed_subset = np.array([1, 3, 5, 7])
    result = evolve_neuron_mask(fitness, 10, 4, GAConfig(population_size=8, generations=5), initial_keep=seed_subset)
    assert result.best_fitness == 0.0 and all(h == 0.0 for h in result.history)
    assert np.flatnonzero(result.keep_mask).tolist() == [1, 3, 5, 7]


@pytest.mark.parametrize(
    "n, n_keep, initial, words",
    [
        (10, 0, None, "n_keep must be an int >= 1"),
        (10, 11, None, "n_keep must be in [1, n=10]"),
        (9, 3, None, "does not match"),
        (10, 3, np.array([0, 1]), "expected n_keep=3"),
    ],
)
def test_bad_arguments_are_rejected(n, n_keep, initial, words):
    _, fitness = layer_fitness(np.random.default_rng(0).standard_normal((10, 2)))
    with pytest.raises(ValueError) as err:
        evolve_neuron_mask(fitness, n, n_keep, GAConfig(), initial_keep=initial)
    assert words in str(err.value)


def test_config_must_be_a_gaconfig():
    _, fitness = layer_fitness(np.random.default_rng(0).standard_normal((10, 2)))
    with pytest.raises(TypeError, match="GAConfig"):
        evolve_neuron_mask(fitness, 10, 3, {"population_size": 4})


class _NoBound:
    """Wraps a SubsetFitness but hides its lower bound, so the GA never stops early."""

    def __init__(self, fitness):
        self._fitness = fitness

    def lower_bound(self, n_keep):
        return -np.inf

    def __call__(self, keep):
        return self._fitness(keep)

    def __getattr__(self, name):
        return getattr(self._fitness, name)


@pytest.mark.parametrize("distance", ["bottleneck", "wasserstein"])
def test_lower_bound_holds_for_random_subsets(distance):
    x = np.random.default_rng(12).standard_normal((30, 4))
    _, fitness = layer_fitness(x, distance=distance)
    rng = np.random.default_rng(13)
    for k in (1, 5, 15, 29):
        bound = fitness.lower_bound(k)
        values = fitness.batch([rng.permutation(30)[:k] for _ in range(200)])
        assert values.min() >= bound - 1e-12
    assert fitness.lower_bound(30) == 0.0


def test_early_stop_at_the_lower_bound_gives_the_full_runs_result():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((64, 30))  # Gaussian cloud: almost every subset sits at the bound
    layer, fitness = layer_fitness(x)
    seed_subset = salience_ranked_subset(layer.salience, 32)
    cfg = GAConfig(population_size=10, generations=12, seed=4)
    early = evolve_neuron_mask(fitness, 64, 32, cfg, initial_keep=seed_subset)
    _, fresh = layer_fitness(x)
    full = evolve_neuron_mask(_NoBound(fresh), 64, 32, cfg, initial_keep=seed_subset)
    assert early.generations_run < full.generations_run == 12
    assert early.best_fitness == early.lower_bound
    assert np.array_equal(early.keep_mask, full.keep_mask)
    assert early.history == full.history
    assert early.evaluations < full.evaluations


@pytest.mark.parametrize("shape", [(16, 64), (40, 200), (96, 400)])
def test_a_start_on_the_bound_costs_one_evaluation_and_keeps_the_full_runs_mask(shape):
    """Issue 30: the salience-seeded subset is evaluated first and alone; when it is on the bound
    (zero-anchored Gaussian rows, as in a randomly initialised layer) the result (mask, fitness,
    history) is the full run's, for one evaluation instead of a population and generations."""
    from nni_topo_pruner.engine import AnchoredFitness, analyse_unit, salience_seed

    calc = MetricCalculator(distance="wasserstein")
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal(shape)
        unit = analyse_unit(calc, x, zero_anchor=True)
        n_keep = shape[0] // 2
        start = salience_seed(unit.canonical_salience, n_keep, unit.tolerance)
        cfg = GAConfig(population_size=12, generations=5, seed=seed)
        early = evolve_neuron_mask(AnchoredFitness(calc.subset_fitness(unit.topology)), shape[0], n_keep, cfg,
                                   initial_keep=start)
        full = evolve_neuron_mask(_NoBound(AnchoredFitness(calc.subset_fitness(unit.topology))), shape[0], n_keep,
                                  cfg, initial_keep=start)
        assert early.initial_fitness <= early.lower_bound + fitness_tolerance(calc.subset_fitness(unit.topology))
        assert (early.evaluations, early.generations_run, early.converged) == (1, 0, True)
        assert full.generations_run == 5 and full.evaluations > 12
        assert np.array_equal(early.keep_mask, full.keep_mask)
        assert early.best_fitness == full.best_fitness and early.history == full.history


def test_a_start_off_the_bound_still_runs_the_ga():
    from nni_topo_pruner.engine import analyse_unit, salience_seed

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 27)) * rng.uniform(0.01, 1.0, size=(40, 1))  # spread norms: off the bound
    calc = MetricCalculator(distance="wasserstein")
    unit = analyse_unit(calc, x)
    start = salience_seed(unit.canonical_salience, 20, unit.tolerance)
    result = evolve_neuron_mask(calc.subset_fitness(unit.topology), 40, 20,
                                GAConfig(population_size=8, generations=3, seed=0), initial_keep=start)
    assert result.initial_fitness > result.lower_bound
    assert result.generations_run == 3 and result.evaluations > 8


def test_the_anchored_fitness_compares_with_the_layers_tolerance_not_exactly():
    """Regression (issue 25): the zero-anchored fitness (the default criterion's) exposed no
    ``scale``, so the GA compared its values exactly and rounding could decide between subsets
    whose fitness differs by float noise. Its tolerance is the anchored cloud's diameter's."""
    from nni_topo_pruner.engine import AnchoredFitness, analyse_unit

    x = np.random.default_rng(3).standard_normal((24, 50))
    calc = MetricCalculator(distance="wasserstein")
    unit = analyse_unit(calc, x, zero_anchor=True)
    inner = calc.subset_fitness(unit.topology)
    anchored = AnchoredFitness(inner)
    assert fitness_tolerance(anchored) == fitness_tolerance(inner) > 0
    assert anchored.scale == pytest.approx(float(np.max(unit.topology.distances)))
