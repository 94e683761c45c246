"""Evolutionary module (thesis module 4): a genetic algorithm, on pyeasyga, that picks which
``n_keep`` of a layer's ``n`` neurons to keep so that the kept cloud's persistence diagram
stays as close as possible to the whole layer's.

* Chromosome: a boolean mask of length n with exactly ``n_keep`` ones (a numpy array, so
  pyeasyga's deep copies are one memcpy).
* Operators keep the cardinality: random k-subsets; set crossover with repair (children
  keep the parents' common neurons and split the others between them); swap mutation
  (one kept neuron out, one pruned neuron in).
* The first population holds the salience-ranked subset (``initial_keep``) plus random
  k-subsets; elitism carries the best individual over; pyeasyga's tournament selection.
* Fitness (minimised) comes from :class:`~nni_topo_pruner.metric_calculator.SubsetFitness`
  with its cache, the whole population evaluated in one batch.
* Determinism: pyeasyga draws from the global :mod:`random` module. The GA seeds it with
  ``GAConfig.seed`` and restores the caller's :mod:`random` and ``numpy.random`` states
  afterwards, so the same seed gives the same mask and the caller sees no change. The
  global state is shared by all threads, so runs are serialised by a module lock: run
  layers in parallel in processes, not threads.
* Ties: fitness values within ``FITNESS_RTOL`` of the layer's diameter are ties
  (:mod:`~nni_topo_pruner.topology.ties`), so that no decision (ranking, tournaments, the
  best-so-far, the stop on the bound) hinges on float rounding, which differs between CPUs.
  Ranking is stable on ties and the elite stays first, so an individual is replaced only by
  one better beyond the tolerance; with all fitnesses tied (e.g. all-identical points) the
  result is ``initial_keep`` (or the first random individual when none is given).
* Polish (ours, not the thesis'): the GA's best individual is finished by a deterministic
  local search (:func:`polish_by_swaps`): best-improvement swaps of one kept and one pruned
  neuron until no swap improves beyond the tolerance or the lower bound is reached. The
  answer is then a local optimum of the fitness, not wherever the GA's random path stopped.
  Its work is capped (``GAConfig.polish_passes`` swaps, ``GAConfig.polish_budget`` distance
  lookups; a pass whose whole neighbourhood does not fit in what is left is not started),
  and ``GAResult.converged`` says whether it finished.

Search (``GAConfig.search``): ``'ga'`` (default) is the above; ``'local'`` skips the GA and
returns the polish of the salience-ranked start alone. That answer makes no random draw and
compares only along one deterministic path of best-improvement swaps, so a small change of the
inputs (a 1e-7 change of every weight, seen 40-400x larger in an untrained network's activation
cloud) cannot send it down another path: the GA's can, and its polish then ends in another
local optimum (``benchmarks/results/mask_stability``). Where the polish's budget does not cover
a layer, ``'local'`` keeps the salience-ranked start.

``generations`` counts the generations bred after the initial population, so ``history``
has ``generations + 1`` entries (pyeasyga's own ``run()`` counts the initial one). With
elitism the GA stops early once the best individual reaches the fitness's proven lower
bound (:meth:`SubsetFitness.lower_bound`), that is within the tie tolerance or within
``BOUND_TOLERANCE`` (one part in 10^5) of the bound, whichever is larger. Within the tie
tolerance nothing can change after that, so the result is the full run's, for fewer
evaluations; between the two, the answer is counted optimal though a longer run might have
shaved the rest. The salience-seeded individual is evaluated first, alone: when it already
sits on the bound (the usual case for the default criterion) the GA's population is never
evaluated and the result is that individual.

Example:
    >>> import numpy as np
    >>> from nni_topo_pruner.metric_calculator import MetricCalculator
    >>> calc = MetricCalculator()
    >>> cloud = np.array([[0.0], [0.0], [1.0], [1.0], [4.0], [4.0]])  # three planted duplicates
    >>> result = evolve_neuron_mask(calc.subset_fitness(calc.analyse(cloud)), 6, 3,
    ...                             GAConfig(population_size=8, generations=10))
    >>> result.best_fitness, sorted(set(cloud[result.keep_mask, 0].tolist()))
    (0.0, [0.0, 1.0, 4.0])
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

import numpy as np
from pyeasyga.pyeasyga import Chromosome, GeneticAlgorithm

from .metric_calculator import SubsetFitness, keep_indices
from .topology.ties import RTOL, tie_groups, tolerance, tolerant_argmin
from .topology.validation import check_bool, check_choice, check_int, check_probability

logger = logging.getLogger(__name__)

# A fitness within this fraction of the proven lower bound counts as on it (or within the tie
# tolerance, whichever is larger): the bound is a sum of k bars, and a subset that misses it by
# one part in 10^5 of that sum is as good as optimal for the criterion, while proving the last
# digits would cost whole generations on large layers (a ViT MLP group: 30 generations, 15 s, for
# a start 1e-8 relative above the bound that no generation improved).
BOUND_TOLERANCE = RTOL

#: Fitness differences up to this fraction of the layer's diameter are ties (see ties.RTOL).
FITNESS_RTOL = RTOL

#: GAConfig.search: the thesis' GA then the polish, or the polish of the salience-ranked start alone
SEARCHES = ("ga", "local")

#: Neighbours (kept x pruned swaps) evaluated per polish batch: bounds its memory.
POLISH_CHUNK = 4096

# pyeasyga uses the process-wide `random` module: one GA at a time per process.
_GLOBAL_RANDOM_LOCK = threading.Lock()


@dataclass(frozen=True)
class GAConfig:
    """Genetic algorithm settings (validated on construction).

    Attributes:
        population_size: individuals per generation (>= 2).
        generations: generations bred after the initial population (>= 0).
        crossover_probability: chance that a pair of parents is crossed over.
        mutation_probability: chance that both children get a swap mutation.
        elitism: carry the best individual into the next generation unchanged.
        seed: seed of the GA's random draws; ``None`` draws a fresh one (not reproducible).
        polish_passes: most improving swaps of the final local search (0: no polish).
        polish_budget: most work the local search may do, in distance lookups: a pass over
            the ``k (n - k)`` swaps of a ``k``-subset costs ``k (n - k) k^2`` (the batched
            Prim of each neighbour; homology above 0 costs more per neighbour and is not
            counted apart). The default (2e7, a few seconds) gives a 64-neuron layer at half
            sparsity (1e6 a pass) 19 passes and a 128-neuron one (1.7e7) one pass; larger
            layers keep the GA's answer (``GAResult.converged`` False).
        search: ``'ga'`` (default: the GA, then the polish) or ``'local'`` (the polish of the
            salience-ranked start alone: deterministic, no GA; see the module doc).

    Example:
        >>> GAConfig(population_size=16).generations >= 0
        True
    """

    population_size: int = 24
    generations: int = 30
    crossover_probability: float = 0.8
    mutation_probability: float = 0.2
    elitism: bool = True
    seed: int | None = 0
    polish_passes: int = 32
    polish_budget: int = 20_000_000
    search: str = "ga"

    def __post_init__(self) -> None:
        check_int(self.population_size, "population_size", 2)
        check_int(self.generations, "generations", 0)
        check_probability(self.crossover_probability, "crossover_probability")
        check_probability(self.mutation_probability, "mutation_probability")
        check_bool(self.elitism, "elitism")
        check_int(self.seed, "seed", 0, allow_none=True)
        check_int(self.polish_passes, "polish_passes", 0)
        check_int(self.polish_budget, "polish_budget", 0)
        object.__setattr__(self, "search", check_choice(self.search, "search", SEARCHES))


@dataclass
class GAResult:
    """Outcome of :func:`evolve_neuron_mask`.

    Attributes:
        keep_mask: bool (n,), exactly ``n_keep`` True: the best individual seen in any
            generation (the last generation's best when elitism is on).
        best_fitness: fitness of ``keep_mask`` (smaller is better).
        history: best fitness in each generation; index 0 is the initial population
            (non-increasing with elitism).
        evaluations: real (uncached) fitness evaluations this run made.
        initial_fitness: fitness of the salience-seeded individual (of the best initial
            individual when no seed subset was given).
        generations_run: generations actually bred; fewer than ``config.generations`` when
            the best individual reached ``lower_bound`` (with elitism nothing can change
            after that, so the mask and history are those of the full run).
        lower_bound: :meth:`SubsetFitness.lower_bound` for ``n_keep``.
        ga_fitness: the GA's own best fitness, before the polish (``best_fitness`` is after).
        polish_swaps: improving swaps the polish made.
        polish_evaluations: neighbours the polish evaluated (cached ones included).
        converged: the answer is at the lower bound or no single swap improves it (within
            the tolerance); False when a cap stopped the polish first.
    """

    keep_mask: np.ndarray
    best_fitness: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0
    initial_fitness: float = 0.0
    generations_run: int = 0
    lower_bound: float = 0.0
    ga_fitness: float = 0.0
    polish_swaps: int = 0
    polish_evaluations: int = 0
    converged: bool = False


# --- cardinality-preserving operators (all randomness from the global `random`, seeded) ---


def random_subset_mask(n: int, n_keep: int) -> np.ndarray:
    """A uniformly random mask with exactly ``n_keep`` of ``n`` entries True."""
    mask = np.zeros(n, dtype=bool)
    mask[random.sample(range(n), n_keep)] = True
    return mask


def set_crossover(parent_1: np.ndarray, parent_2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Set crossover with repair: both children keep the parents' common neurons and split
    the neurons kept by only one parent at random, so each child has the parents' size."""
    common = parent_1 & parent_2
    differing = np.flatnonzero(parent_1 ^ parent_2)
    shuffled = np.asarray(random.sample(differing.tolist(), len(differing)), dtype=np.intp)
    half = len(differing) // 2  # both parents have the same count, so the split is even
    child_1, child_2 = common.copy(), common.copy()
    child_1[shuffled[:half]] = True
    child_2[shuffled[half:]] = True
    return child_1, child_2


def swap_mutation(individual: np.ndarray) -> None:
    """In place: one kept neuron is pruned and one pruned neuron is kept (no-op when all
    or none are kept)."""
    kept = np.flatnonzero(individual)
    pruned = np.flatnonzero(~individual)
    if len(kept) == 0 or len(pruned) == 0:
        return
    individual[kept[random.randrange(len(kept))]] = False
    individual[pruned[random.randrange(len(pruned))]] = True


class NeuronMaskGA(GeneticAlgorithm):
    """pyeasyga's GA with k-subset masks, batched cached fitness, and a seeded first
    population. Minimises the fitness."""

    def __init__(
        self,
        fitness: SubsetFitness,
        n: int,
        n_keep: int,
        config: GAConfig,
        initial_mask: np.ndarray | None = None,
        tol: float = 0.0,
    ) -> None:
        super().__init__(
            list(range(n)),
            population_size=config.population_size,
            generations=config.generations,
            crossover_probability=config.crossover_probability,
            mutation_probability=config.mutation_probability,
            elitism=config.elitism,
            maximise_fitness=False,
        )
        self.subset_fitness = fitness
        self.n = n
        self.n_keep = n_keep
        self.initial_mask = initial_mask
        self.tournament_size = max(2, config.population_size // 10)
        self.create_individual = lambda seed_data: random_subset_mask(n, n_keep)
        self.crossover_function = set_crossover
        self.mutate_function = swap_mutation
        self.fitness_function = lambda genes, seed_data: fitness(genes)
        self.tol = tol
        self.selection_function = self.tolerant_tournament

    def rank_population(self) -> None:
        """Sort by fitness with values within ``tol`` tied, ties in population order (the
        elite, first, stays first): rounding cannot reorder the population."""
        values = np.array([ind.fitness for ind in self.current_generation], dtype=np.float64)
        order = np.lexsort((np.arange(len(values)), tie_groups(values, self.tol)))
        self.current_generation = [self.current_generation[i] for i in order]

    def tolerant_tournament(self, population: list) -> Chromosome:
        """pyeasyga's tournament (the same random draws) on a population ranked by
        :meth:`rank_population`: the winner is the sampled member ranked first."""
        members = random.sample(range(len(population)), self.tournament_size)
        return population[min(members)]

    def create_initial_population(self) -> None:
        population = []
        if self.initial_mask is not None:
            population.append(Chromosome(self.initial_mask.copy()))
        while len(population) < self.population_size:
            population.append(Chromosome(self.create_individual(self.seed_data)))
        self.current_generation = population

    def calculate_population_fitness(self) -> None:
        values = self.subset_fitness.batch([ind.genes for ind in self.current_generation])
        for individual, value in zip(self.current_generation, values):
            individual.fitness = float(value)


def evolve_neuron_mask(
    fitness: SubsetFitness,
    n: int,
    n_keep: int,
    config: GAConfig,
    *,
    initial_keep: np.ndarray | None = None,
) -> GAResult:
    """Choose ``n_keep`` of ``n`` neurons minimising ``fitness`` with a genetic algorithm.

    Args:
        fitness: the layer's :class:`SubsetFitness` (cached; batched).
        n: neurons in the layer (must equal ``fitness.n``).
        n_keep: neurons to keep, in ``[1, n]``; ``n_keep == n`` keeps all without a GA.
        config: GA settings.
        initial_keep: indices (or bool mask) of the salience-ranked subset that seeds the
            first population; must have exactly ``n_keep`` neurons.

    Returns:
        :class:`GAResult` with an exact-cardinality mask.
    """
    check_int(n, "n", 1)
    if n != fitness.n:
        raise ValueError(f"n={n} does not match the layer the fitness was built for ({fitness.n} neurons)")
    check_int(n_keep, "n_keep", 1)
    if n_keep > n:
        raise ValueError(f"n_keep must be in [1, n={n}], got {n_keep}")
    if not isinstance(config, GAConfig):
        raise TypeError(f"config must be a GAConfig, got {type(config).__name__}")
    initial_mask = None
    if initial_keep is not None:
        initial_mask = np.zeros(n, dtype=bool)
        initial_mask[keep_indices(initial_keep, n)] = True
        if initial_mask.sum() != n_keep:
            raise ValueError(f"initial_keep has {int(initial_mask.sum())} neurons, expected n_keep={n_keep}")
    if n_keep == n:
        # Nothing to choose: the full cloud has exactly the layer's diagram.
        return GAResult(np.ones(n, dtype=bool), 0.0, [0.0] * (config.generations + 1), 0, 0.0, 0, 0.0,
                        converged=True)

    before = fitness.evaluations
    lower_bound = fitness.lower_bound(n_keep)
    tol = fitness_tolerance(fitness)
    reached = lower_bound + max(tol, BOUND_TOLERANCE * abs(lower_bound))
    if initial_mask is not None and config.elitism:
        initial_fitness = fitness(initial_mask)
        if initial_fitness <= reached:  # optimal already: the GA's first generation could not beat it
            logger.debug("GA n=%d keep=%d: the salience-seeded subset is on the bound (%.6g <= %.6g); no GA run",
                         n, n_keep, initial_fitness, lower_bound)
            return GAResult(initial_mask, float(initial_fitness), [float(initial_fitness)] * (config.generations + 1),
                            fitness.evaluations - before, float(initial_fitness), 0, lower_bound,
                            ga_fitness=float(initial_fitness), converged=True)
    if config.search == "local":
        return _local_search(fitness, n, n_keep, config, initial_mask, tol, reached, lower_bound, before)
    with _GLOBAL_RANDOM_LOCK:
        saved_random = random.getstate()
        saved_numpy = np.random.get_state()
        try:
            random.seed(config.seed)
            ga = NeuronMaskGA(fitness, n, n_keep, config, initial_mask, tol)
            ga.create_first_generation()
            initial_fitness = (
                fitness(initial_mask) if initial_mask is not None else float(ga.current_generation[0].fitness)
            )
            best_fitness, best_genes = ga.best_individual()
            best_genes = best_genes.copy()
            history = [float(best_fitness)]
            generations_run = 0
            for _ in range(config.generations):
                if config.elitism and best_fitness <= reached:
                    # Optimal: the elite stays first (stable ranking, strict improvement only),
                    # so the remaining generations would repeat this value and this mask.
                    history.extend([float(best_fitness)] * (config.generations - generations_run))
                    break
                generations_run += 1
                ga.create_next_generation()
                fitness_now, genes_now = ga.best_individual()
                history.append(float(fitness_now))
                if fitness_now < best_fitness - tol:  # beyond the tolerance: ties keep the earlier individual
                    best_fitness, best_genes = fitness_now, genes_now.copy()
        finally:
            random.setstate(saved_random)
            np.random.set_state(saved_numpy)
    ga_fitness = float(best_fitness)
    polished = polish_by_swaps(fitness, np.asarray(best_genes, dtype=bool), ga_fitness, tol=tol, reached=reached,
                               max_passes=config.polish_passes, budget=config.polish_budget)
    keep_mask = polished.keep_mask
    if int(keep_mask.sum()) != n_keep:  # the operators guarantee this; never return a wrong mask
        raise RuntimeError(f"GA produced a mask with {int(keep_mask.sum())} neurons instead of {n_keep}")
    logger.debug(
        "GA n=%d keep=%d: fitness %.6g -> %.6g (GA) -> %.6g (%d swaps, bound %.6g%s) in %d evaluations",
        n,
        n_keep,
        initial_fitness,
        ga_fitness,
        polished.fitness,
        polished.swaps,
        lower_bound,
        "" if polished.converged else ", polish capped",
        fitness.evaluations - before,
    )
    return GAResult(
        keep_mask,
        float(polished.fitness),
        history,
        fitness.evaluations - before,
        float(initial_fitness),
        generations_run,
        lower_bound,
        ga_fitness=ga_fitness,
        polish_swaps=polished.swaps,
        polish_evaluations=polished.evaluations,
        converged=polished.converged,
    )


def _local_search(fitness: SubsetFitness, n: int, n_keep: int, config: GAConfig, initial_mask: np.ndarray | None,
                  tol: float, reached: float, lower_bound: float, before: int) -> GAResult:
    """``search='local'``: the polish of the salience-ranked start (of the first ``n_keep``
    neurons in canonical order when none is given), no GA."""
    if initial_mask is None:
        initial_mask = np.zeros(n, dtype=bool)
        initial_mask[:n_keep] = True
    initial_fitness = float(fitness(initial_mask))
    polished = polish_by_swaps(fitness, initial_mask, initial_fitness, tol=tol, reached=reached,
                               max_passes=config.polish_passes, budget=config.polish_budget)
    logger.debug("local search n=%d keep=%d: fitness %.6g -> %.6g (%d swaps, bound %.6g%s)", n, n_keep,
                 initial_fitness, polished.fitness, polished.swaps, lower_bound,
                 "" if polished.converged else ", polish capped")
    return GAResult(polished.keep_mask, float(polished.fitness), [initial_fitness] * (config.generations + 1),
                    fitness.evaluations - before, initial_fitness, 0, lower_bound, ga_fitness=initial_fitness,
                    polish_swaps=polished.swaps, polish_evaluations=polished.evaluations,
                    converged=polished.converged)


def fitness_tolerance(fitness: SubsetFitness) -> float:
    """Fitness differences up to this are ties: ``FITNESS_RTOL`` of the fitness's ``scale``
    (the layer's diameter; 0 for a fitness object without one)."""
    return tolerance(getattr(fitness, "scale", 0.0), FITNESS_RTOL)


@dataclass
class PolishResult:
    """Outcome of :func:`polish_by_swaps`."""

    keep_mask: np.ndarray
    fitness: float
    swaps: int
    evaluations: int
    converged: bool


def polish_by_swaps(
    fitness: SubsetFitness,
    keep_mask: np.ndarray,
    value: float,
    *,
    tol: float,
    reached: float,
    max_passes: int,
    budget: int,
) -> PolishResult:
    """Best-improvement local search over single swaps (one kept neuron out, one pruned in).

    Each pass evaluates every swap in batches (``fitness.batch``, cached) and makes the one
    with the lowest fitness if it improves on ``value`` by more than ``tol``; fitnesses
    within ``tol`` of each other are ties, broken by the swap's canonical positions (the
    earlier kept neuron out, then the earlier pruned neuron in). Stops when the fitness is at
    most ``reached`` (the lower bound, within tolerance), when no swap improves
    (``converged``), or when ``max_passes`` swaps were made or the next pass would exceed
    ``budget`` (not converged); a pass costs ``k (n - k) k^2`` distance lookups (the batched
    Prim of each of its neighbours). Deterministic: no random draws.

    Example:
        >>> from nni_topo_pruner.metric_calculator import MetricCalculator
        >>> calc = MetricCalculator()
        >>> fit = calc.subset_fitness(calc.analyse(np.array([[0.0], [0.0], [1.0], [1.0], [4.0], [4.0]])))
        >>> start = np.array([True, True, True, False, False, False])   # both copies of 0: distance 1.5
        >>> result = polish_by_swaps(fit, start, fit(start), tol=0.0, reached=0.0, max_passes=5, budget=10**4)
        >>> result.keep_mask.tolist(), result.fitness, result.swaps, result.converged
        ([False, True, True, False, True, False], 0.0, 1, True)
    """
    mask = np.asarray(keep_mask, dtype=bool).copy()
    value = float(value)
    swaps = evaluated = spent = 0
    while True:
        if value <= reached:
            return PolishResult(mask, value, swaps, evaluated, True)
        kept, pruned = np.flatnonzero(mask), np.flatnonzero(~mask)
        size = len(kept) * len(pruned)
        cost = size * len(kept) ** 2
        if swaps >= max_passes or spent + cost > budget or size == 0:
            return PolishResult(mask, value, swaps, evaluated, size == 0)
        values = np.empty(size)
        per_out = len(pruned)
        outs_per_chunk = max(1, POLISH_CHUNK // per_out)
        for first in range(0, len(kept), outs_per_chunk):
            chunk = []
            for i in range(first, min(first + outs_per_chunk, len(kept))):
                rest = np.delete(kept, i)
                chunk.append(np.concatenate([np.broadcast_to(rest, (per_out, len(rest))), pruned[:, None]], axis=1))
            subsets = np.sort(np.concatenate(chunk), axis=1)
            values[first * per_out:first * per_out + len(subsets)] = fitness.batch(list(subsets))
        evaluated += size
        spent += cost
        improving = np.flatnonzero(values < value - tol)
        if len(improving) == 0:
            return PolishResult(mask, value, swaps, evaluated, True)
        best = int(improving[tolerant_argmin(values[improving], tol)])  # ties: first in (out, in) order
        mask[kept[best // per_out]] = False
        mask[pruned[best % per_out]] = True
        value = float(values[best])
        swaps += 1
