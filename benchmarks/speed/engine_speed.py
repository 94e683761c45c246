"""Speed, memory and quality of the topology engine (no torch, no NNI needed).

Sections (each measured in this one run, ratios printed side by side):

1. ``evals``   fitness evaluations per second: the engine (batched Prim + exact 1-D
               distance, cached) against the naive reference (GUDHI Rips complex + GUDHI
               bottleneck per subset), with the values checked equal.
2. ``scaling`` layer sizes n = 64 .. 4096: distance matrix, analyse (diagrams + salience)
               and one GA with the early stop disabled, H0 and H0+H1; wall time and peak
               traced memory, and the growth exponent between sizes.
3. ``vgg``     full-width CIFAR VGG-16 shapes (13 conv layers, 4224 filters, sparse ratio
               0.5): analyse + GA per layer with default options, then with H0+H1.
4. ``quality`` GA final distance against the salience-ranked subset and the best of as many
               random subsets as the GA evaluated, for bottleneck and Wasserstein.
5. ``imagenet`` (opt-in) the largest layers of torchvision's vgg16 and resnet50 heads:
               time and peak memory of analyse.

Weights are synthetic unless ``--weights FILE.npz`` gives real ones (one array per layer,
first axis = output neurons): Kaiming-normal (fan-out) like torchvision's VGG init, or
clustered clouds with near-duplicate filters (what pruning hopes to find).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.speed.engine_speed            # sections 1-4
    OMP_NUM_THREADS=1 python -m benchmarks.speed.engine_speed --quick    # seconds, for tests
    OMP_NUM_THREADS=1 python -m benchmarks.speed.engine_speed --sections imagenet
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gudhi
import numpy as np

from nni_topo_pruner.evolutionary import GAConfig, evolve_neuron_mask
from nni_topo_pruner.metric_calculator import MetricCalculator, SubsetFitness, salience_ranked_subset
from nni_topo_pruner.topology import distance_matrix

from ..core.cli import ConfigParser

CIFAR_VGG16 = [(o, 9 * i) for o, i in [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
                                       (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]]
# (filters, fan-in = in_channels * 3 * 3)
IMAGENET_LAYERS = [  # (name, out, fan-in): the largest weight matrices of the two heads
    ("vgg16.classifier.0 Linear", 4096, 25088),
    ("vgg16.classifier.3 Linear", 4096, 4096),
    ("vgg16.features.28 Conv 3x3", 512, 4608),
    ("resnet50.layer4.2.conv3 Conv 1x1", 2048, 512),
    ("resnet50.layer4.0.conv2 Conv 3x3", 512, 4608),
    ("resnet50.fc Linear", 1000, 2048),
]


def kaiming_layer(out: int, fan_in: int, rng: np.random.Generator, fan_out: int | None = None) -> np.ndarray:
    """Weights like torchvision's VGG init (kaiming normal, mode fan_out), float32."""
    std = math.sqrt(2.0 / (fan_out or out))
    return (rng.standard_normal((out, fan_in), dtype=np.float32) * std).astype(np.float32)


def clustered_layer(out: int, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """A cloud of ``out`` filters in ~out/8 clusters of very different spreads, plus a few
    exact duplicates and dead (zero) filters: redundancy that pruning should find."""
    clusters = max(2, out // 8)
    centres = rng.standard_normal((clusters, fan_in))
    spread = rng.uniform(0.02, 0.6, size=clusters)
    label = rng.integers(0, clusters, size=out)
    x = centres[label] + rng.standard_normal((out, fan_in)) * spread[label, None]
    dup = rng.choice(out, size=max(1, out // 16), replace=False)
    x[dup] = x[rng.choice(out, size=len(dup))]
    x[rng.choice(out, size=max(1, out // 32), replace=False)] = 0.0
    return x.astype(np.float32)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (the machine is shared: the minimum is the honest one)."""
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def traced_peak(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall time and peak traced memory (MiB; numpy buffers included) of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return elapsed, peak, out


class _NoEarlyStop:
    """A SubsetFitness whose lower bound is hidden: the GA runs every generation."""

    def __init__(self, fitness: SubsetFitness) -> None:
        self._fitness = fitness

    def lower_bound(self, n_keep: int) -> float:
        return -math.inf

    def __call__(self, keep):
        return self._fitness(keep)

    def __getattr__(self, name: str):
        return getattr(self._fitness, name)


def naive_fitness(dist: np.ndarray, reference: dict[int, np.ndarray], dims: tuple[int, ...], keep: np.ndarray) -> float:
    """The textbook evaluation: a GUDHI Rips complex of the kept cloud and GUDHI's bottleneck."""
    sub = dist[np.ix_(keep, keep)]
    tree = gudhi.RipsComplex(distance_matrix=sub).create_simplex_tree(max_dimension=max(dims) + 1)
    tree.compute_persistence()
    values = []
    for d in dims:
        bars = tree.persistence_intervals_in_dimension(d)
        bars = bars[np.isfinite(bars[:, 1])] if len(bars) else np.empty((0, 2))
        values.append(gudhi.bottleneck_distance(reference[d], bars, e=0))
    return max(values)


def section_evals(sizes: Sequence[int], naive_budget_s: float, rng: np.random.Generator) -> list[dict]:
    print("\n## 1. Fitness evaluations per second (keep n/2; batches of 24 subsets)")
    print("| n | fan-in | dims | engine evals/s | GUDHI-naive evals/s | speed-up | max |diff| |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for n in sizes:
        fan_in = 9 * n
        points = kaiming_layer(n, fan_in, rng)
        for dims in ((0,), (0, 1)):
            calc = MetricCalculator(homology_dims=dims)
            layer = calc.analyse(points)
            subsets = [np.sort(rng.permutation(n)[: n // 2]) for _ in range(24)]
            fitness = calc.subset_fitness(layer)
            t_fast, fast_values = timed(lambda: calc.subset_fitness(layer).batch(subsets), repeat=3)
            naive_values, spent, done = [], 0.0, 0
            for keep in subsets:  # as many as fit in the budget (at least one)
                t, v = timed(lambda: naive_fitness(layer.distances, layer.diagrams, dims, keep))
                naive_values.append(v)
                spent += t
                done += 1
                if spent > naive_budget_s:
                    break
            fast_rate = len(subsets) / t_fast
            naive_rate = done / spent
            diff = float(np.max(np.abs(np.asarray(naive_values) - fast_values[:done])))
            rows.append({"n": n, "fan_in": fan_in, "dims": list(dims), "engine_evals_per_s": fast_rate,
                         "naive_evals_per_s": naive_rate, "naive_evaluated": done, "max_abs_diff": diff})
            print(f"| {n} | {fan_in} | {dims} | {fast_rate:,.0f} | {naive_rate:,.2f} | {fast_rate / naive_rate:,.0f}x | {diff:.1e} |")
            del fitness
    return rows


def _growth(prev: dict | None, row: dict, key: str) -> str:
    if prev is None or prev[key] <= 0 or row[key] <= 0:
        return ""
    return f"{math.log(row[key] / prev[key]) / math.log(row['n'] / prev['n']):.1f}"


def section_scaling(sizes: Sequence[int], fan_in: int, h1_max_n: int, config: GAConfig, rng: np.random.Generator) -> list[dict]:
    print(f"\n## 2. Scaling with layer size (fan-in {fan_in}, keep n/2, GA {config.population_size}x{config.generations} "
          "with the early stop disabled)")
    print("| n | dims | distances s | analyse s | GA s | GA evals | analyse peak MiB | GA peak MiB | time growth (analyse, GA) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    for dims in ((0,), (0, 1)):
        prev = None
        for n in sizes:
            if max(dims) > 0 and n > h1_max_n:
                print(f"| {n} | {dims} | not run (over --h1-max-n {h1_max_n}) | | | | | | |")
                continue
            points = kaiming_layer(n, fan_in, rng)
            t_dist, _ = timed(lambda: distance_matrix(points))
            calc = MetricCalculator(homology_dims=dims)
            t_an, peak_an, layer = traced_peak(lambda: calc.analyse(points))
            k = n - round(0.5 * n)
            seed_subset = salience_ranked_subset(layer.salience, k)
            fitness = _NoEarlyStop(calc.subset_fitness(layer))
            t_ga, peak_ga, result = traced_peak(
                lambda: evolve_neuron_mask(fitness, n, k, config, initial_keep=seed_subset))
            row = {"n": n, "fan_in": fan_in, "dims": list(dims), "distance_s": t_dist, "analyse_s": t_an,
                   "ga_s": t_ga, "ga_evaluations": result.evaluations, "analyse_peak_mib": peak_an, "ga_peak_mib": peak_ga,
                   "dense_nxn_mib": n * n * 8 / 2**20}
            print(f"| {n} | {dims} | {t_dist:.3f} | {t_an:.3f} | {t_ga:.3f} | {result.evaluations} | {peak_an:.1f} | "
                  f"{peak_ga:.1f} | {_growth(prev, row, 'analyse_s')}, {_growth(prev, row, 'ga_s')} |")
            rows.append(row)
            prev = row
    return rows


def run_layers(shapes: Sequence[tuple[int, int]], make: Callable[[int, int], np.ndarray], calc: MetricCalculator,
               config: GAConfig, sparse_ratio: float) -> dict:
    per_layer, total_an, total_ga = [], 0.0, 0.0
    for out, fan_in in shapes:
        points = make(out, fan_in)
        t_an, layer = timed(lambda: calc.analyse(points))
        k = out - round(sparse_ratio * out)
        fitness = calc.subset_fitness(layer)
        t_ga, result = timed(lambda: evolve_neuron_mask(fitness, out, k, config,
                                                          initial_keep=salience_ranked_subset(layer.salience, k)))
        total_an += t_an
        total_ga += t_ga
        per_layer.append({"n": out, "fan_in": fan_in, "analyse_s": t_an, "ga_s": t_ga, "evaluations": result.evaluations,
                          "generations_run": result.generations_run, "initial": result.initial_fitness,
                          "best": result.best_fitness, "lower_bound": result.lower_bound})
    return {"layers": per_layer, "analyse_s": total_an, "ga_s": total_ga, "total_s": total_an + total_ga}


def section_vgg(shapes: Sequence[tuple[int, int]], config: GAConfig, rng: np.random.Generator,
                weights: dict[str, np.ndarray] | None) -> dict:
    print(f"\n## 3. CIFAR VGG-16 shapes ({sum(o for o, _ in shapes)} filters, sparse ratio 0.5, "
          f"GA {config.population_size}x{config.generations})")
    if weights is not None:
        arrays = [w.reshape(w.shape[0], -1) for w in weights.values()]
        shapes = [a.shape for a in arrays]
        it = iter(arrays)
        make = lambda out, fan_in: next(it)  # noqa: E731
        kind = "weights from --weights"
    else:
        make = lambda out, fan_in: kaiming_layer(out, fan_in, rng, fan_out=9 * out)  # noqa: E731
        kind = "Kaiming-normal synthetic weights"
    results = {}
    print(f"({kind})")
    print("| options | analyse s | GA s | total s | layers stopped at the proven optimum | GA evaluations |")
    print("|---|---|---|---|---|---|")
    for label, calc in (("H0, bottleneck (default)", MetricCalculator()),
                        ("H0+H1, bottleneck", MetricCalculator(homology_dims=(0, 1))),
                        ("H0, Wasserstein q=1", MetricCalculator(distance="wasserstein"))):
        if weights is not None:
            it = iter(arrays)
        res = run_layers(shapes, make, calc, config, 0.5)
        stopped = sum(1 for l in res["layers"] if l["best"] <= l["lower_bound"])
        evals = sum(l["evaluations"] for l in res["layers"])
        print(f"| {label} | {res['analyse_s']:.2f} | {res['ga_s']:.2f} | {res['total_s']:.2f} | {stopped}/{len(shapes)} | {evals} |")
        results[label] = res
    return results


def section_quality(n: int, fan_in: int, config: GAConfig, rng: np.random.Generator) -> list[dict]:
    print(f"\n## 4. GA quality (n={n}, fan-in {fan_in}, keep n/2, GA {config.population_size}x{config.generations}; "
          "random = best of as many random subsets as the GA evaluated; lower = better)")
    print("| cloud | distance | lower bound | salience-only | best random | GA | GA gain over salience | GA gain over random |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    clouds = {"kaiming": kaiming_layer(n, fan_in, rng), "clustered": clustered_layer(n, fan_in, rng)}
    for cloud_name, points in clouds.items():
        for distance in ("bottleneck", "wasserstein"):
            calc = MetricCalculator(distance=distance)
            layer = calc.analyse(points)
            k = n - round(0.5 * n)
            seed_subset = salience_ranked_subset(layer.salience, k)
            fitness = calc.subset_fitness(layer)
            result = evolve_neuron_mask(fitness, n, k, config, initial_keep=seed_subset)
            draws = max(result.evaluations, config.population_size)
            random_best = float(fitness.batch([rng.permutation(n)[:k] for _ in range(draws)]).min())
            salience_only = result.initial_fitness
            gain_s = (salience_only - result.best_fitness) / salience_only if salience_only else 0.0
            gain_r = (random_best - result.best_fitness) / random_best if random_best else 0.0
            rows.append({"cloud": cloud_name, "distance": distance, "lower_bound": result.lower_bound,
                         "salience_only": salience_only, "random_best": random_best, "ga": result.best_fitness,
                         "random_draws": draws, "ga_evaluations": result.evaluations})
            print(f"| {cloud_name} | {distance} | {result.lower_bound:.4f} | {salience_only:.4f} | {random_best:.4f} | "
                  f"{result.best_fitness:.4f} | {100 * gain_s:.1f}% | {100 * gain_r:.1f}% |")
    return rows


def section_imagenet(rng: np.random.Generator) -> list[dict]:
    print("\n## 5. Largest ImageNet-head layers (torchvision vgg16 / resnet50 shapes), H0 bottleneck analyse")
    print("| layer | n x fan-in | input MiB (float32) | analyse s | peak traced MiB | n x n float64 MiB |")
    print("|---|---|---|---|---|---|")
    rows = []
    calc = MetricCalculator()
    for name, out, fan_in in IMAGENET_LAYERS:
        points = kaiming_layer(out, fan_in, rng)
        t, peak, _ = traced_peak(lambda p=points: calc.analyse(p))
        rows.append({"layer": name, "n": out, "fan_in": fan_in, "analyse_s": t, "peak_mib": peak})
        print(f"| {name} | {out} x {fan_in} | {points.nbytes / 2**20:.0f} | {t:.1f} | {peak:.0f} | {out * out * 8 / 2**20:.0f} |")
        del points
    return rows


SECTIONS = ("evals", "scaling", "vgg", "quality", "imagenet")


@dataclass
class EngineSpeedConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    sections: list[str] = field(default_factory=lambda: ["evals", "scaling", "vgg", "quality"])
    weights: str = ""  # npz with one weight array per layer for the vgg section ('' = synthetic)
    h1_max_n: int = 1024  # largest n for H0+H1 in the scaling table
    seed: int = 0
    quick: bool = False  # tiny sizes (seconds), for tests


PRESETS = {"default": EngineSpeedConfig(), "quick": EngineSpeedConfig(quick=True)}


def check(config: EngineSpeedConfig) -> None:
    unknown = sorted(set(config.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections (--sections): unknown sections {unknown}; choose from {', '.join(SECTIONS)}")


def build_parser() -> ConfigParser[EngineSpeedConfig]:
    parser = ConfigParser("python -m benchmarks.speed.engine_speed", PRESETS, description=__doc__, check=check,
                          out_dir_help="also write every figure to DIR/results.json (like --json)")
    parser.add_shorthand("--sections", field="sections", help="comma list of evals, scaling, vgg, quality, imagenet "
                                                               "(default: evals,scaling,vgg,quality)")
    parser.add_shorthand("--weights", field="weights",
                         help="npz with one weight array per layer (first axis = neurons) for the vgg section")
    parser.add_shorthand("--h1-max-n", field="h1_max_n", type=int,
                         help="largest n for H0+H1 in the scaling table (default 1024)")
    parser.add_shorthand("--seed", field="seed", type=int, help="default 0")
    parser.add_argument("--json", help="write every figure to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args, config = build_parser().parse_config(argv)
    sections = set(config.sections)
    rng = np.random.default_rng(config.seed)
    ga = GAConfig()
    if config.quick:
        eval_sizes, scale_sizes, fan_in, vgg, q_n = (32,), (16, 32), 64, [(16, 27), (32, 144)], 24
        ga = replace(ga, population_size=6, generations=3)
        naive_budget = 0.5
    else:
        eval_sizes, scale_sizes, fan_in, vgg, q_n = (128, 256, 512), (64, 128, 256, 512, 1024, 2048, 4096), 4608, CIFAR_VGG16, 256
        naive_budget = 20.0
    print("# Topology engine benchmark")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"Python {platform.python_version()}, numpy {np.__version__}, gudhi {gudhi.__version__}; "
          f"command: {' '.join([os.path.basename(sys.argv[0])] + list(argv if argv is not None else sys.argv[1:]))}")
    report: dict[str, Any] = {"quick": config.quick,
                              "ga_config": {f: getattr(ga, f) for f in ("population_size", "generations",
                                            "crossover_probability", "mutation_probability", "elitism", "seed")}}
    weights = dict(np.load(config.weights)) if config.weights else None
    if "evals" in sections:
        report["evals"] = section_evals(eval_sizes, naive_budget, rng)
    if "scaling" in sections:
        report["scaling"] = section_scaling(scale_sizes, fan_in, config.h1_max_n if not config.quick else 32, ga, rng)
    if "vgg" in sections:
        report["vgg"] = section_vgg(vgg, ga, rng, weights)
    if "quality" in sections:
        report["quality"] = section_quality(q_n, fan_in if not config.quick else 64, ga, rng)
    if "imagenet" in sections:
        report["imagenet"] = section_imagenet(rng)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in (args.json, args.out_dir / "results.json" if args.out_dir is not None else None):
        if path is not None:
            with open(path, "w") as fh:
                json.dump(report, fh, indent=2, default=float)
    return report


if __name__ == "__main__":
    main()
