"""Masks that rounding cannot change (issue 25).

Float results differ between CPUs, libraries and thread counts in their last bits. None of the
pruner's decisions may depend on them: on every pinned case (every criterion variant), relative
perturbations of 1e-9 and 1e-7 of the weights (and of the calibration images for
``cloud='activations'``) leave the masks identical; so do a function-preserving permutation of
an upstream layer's channels, rescaling a filter under the scale-free cosine metric, another
thread count and another CPU instruction set (``ONEDNN_MAX_CPU_ISA``).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.engine import analyse_unit, canonical_order, choose_kept
from nni_topo_pruner.evolutionary import GAConfig, evolve_neuron_mask, polish_by_swaps
from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.topology.ties import tie_groups, tolerant_argsort
from tests.test_mask_pinning import CASES, FIXTURE, pinned_view

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pinned():
    return json.loads(FIXTURE.read_text())


def perturbed(rel: float, seed: int = 0):
    """A model change: every floating parameter and buffer times ``1 + rel * N(0, 1)``."""
    def change(model: torch.nn.Module) -> torch.nn.Module:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for tensor in [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]:
                noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
                tensor.copy_((tensor.double() * (1 + rel * noise)).to(tensor.dtype))
        return model
    return change


def perturbed_images(rel: float, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return lambda batch: (batch.double() * (1 + rel * torch.randn(batch.shape, generator=generator,
                                                                     dtype=torch.float64))).to(batch.dtype)


@pytest.mark.parametrize("rel", [1e-9, 1e-7])
@pytest.mark.parametrize("name", sorted(CASES))
def test_tiny_perturbations_leave_every_mask_unchanged(pinned, name, rel):
    images = perturbed_images(rel) if CASES[name][2].get("cloud") == "activations" else None
    changed = pinned_view(name, model_change=perturbed(rel), images_change=images)
    assert changed == pinned[name]


def test_the_perturbation_is_real():
    """The property tests above would be vacuous if the perturbation did not reach the weights."""
    model = CASES["bn_cnn-default"][0]()
    before = model.features[0].weight.detach().clone()
    after = perturbed(1e-7)(copy.deepcopy(model)).features[0].weight.detach()
    assert not torch.equal(before, after)
    assert torch.allclose(before, after, rtol=1e-6, atol=0)


def test_activation_masks_downstream_of_a_permuted_layer_do_not_move(pinned):
    """Permuting features.0's channels (its conv, its BN, and features.3's input channels) leaves
    the network's function unchanged up to rounding: features.0's mask permutes, the rest stay."""
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))

    def permute(model: torch.nn.Module) -> torch.nn.Module:
        conv, bn, following = model.features[0], model.features[1], model.features[3]
        with torch.no_grad():
            conv.weight.copy_(conv.weight[perm].clone())
            conv.bias.copy_(conv.bias[perm].clone())
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(bn, name)[perm].clone())
            following.weight.copy_(following.weight[:, perm].clone())
        return model

    view = pinned_view("bn_cnn-activations", model_change=permute)
    reference = pinned["bn_cnn-activations"]
    for key, entry in reference.items():
        if key.startswith("features.0."):
            stored = np.zeros(12, dtype=bool)
            stored[entry["kept"]] = True
            assert view[key]["kept"] == np.flatnonzero(stored[perm.numpy()]).tolist(), key
        else:
            assert view[key] == entry, key


def test_rescaling_a_filter_under_cosine_keeps_the_kept_set():
    """Issue 25's reproduction: cosine distances ignore a filter's scale, so must the mask."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 3))

    def kept(model: torch.nn.Module) -> set:
        pruner = TopologicalPruner(copy.deepcopy(model), [{"op_names": ["0"], "sparse_ratio": 0.5}],
                                   cloud_metric="cosine", progress=False)
        pruner.compress()
        return set(pruner.report.units[0].kept_channels)

    reference = kept(net)
    for index, factor in ((17, 1.5), (3, 0.25), (40, 7.0)):
        model = copy.deepcopy(net)
        with torch.no_grad():
            model[0].weight[index] *= factor
            model[0].bias[index] *= factor
        assert kept(model) == reference, (index, factor)


def _run_pinned(names, threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {name: pinned_view(name) for name in names}
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_pinned_masks_hold_with_another_thread_count(pinned, threads):
    names = ["bn_cnn-activations", "bn_cnn-cosine", "vgg_chain-default", "tiny-h01"]
    assert _run_pinned(names, threads) == {name: pinned[name] for name in names}


def test_pinned_masks_hold_with_another_instruction_set(pinned, tmp_path):
    """A fresh process that may use only AVX2 in oneDNN's kernels (other rounding of float32
    convolutions than AVX-512 where the CPU has it) computes the pinned masks."""
    out = tmp_path / "masks.json"
    script = ("import json, sys; from pathlib import Path; from tests.test_mask_pinning import CASES, pinned_view; "
              "Path(sys.argv[1]).write_text(json.dumps({n: pinned_view(n) for n in sorted(CASES)}))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True, timeout=600,
                   check=True)
    assert json.loads(out.read_text()) == pinned


# ----------------------------------------------------------------- the engine on arrays


def test_canonical_order_ignores_rounding_and_the_scale_it_must_ignore():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(40, 9))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)  # all norms 1: the activation case
    order = canonical_order(directions)
    for rel in (1e-12, 1e-9, 1e-7):
        noisy = directions * (1 + rel * rng.normal(size=directions.shape))
        assert canonical_order(noisy).tolist() == order.tolist(), rel
    scaled = directions * rng.uniform(0.1, 10.0, size=(40, 1))
    assert canonical_order(scaled, scale_free=True).tolist() == canonical_order(directions, scale_free=True).tolist()
    assert canonical_order(scaled).tolist() != order.tolist()  # norm-sensitive metrics do see the scale
    perm = rng.permutation(40)
    assert perm[canonical_order(directions[perm])].tolist() == order.tolist()


def test_ties_are_groups_of_small_gaps():
    values = np.array([1.0, 3.0, 1.0 + 4e-7, 1.0 + 8e-7, 2.0])
    assert tie_groups(values, 5e-7).tolist() == [0, 2, 0, 0, 1]  # a chain of small gaps is one group
    assert tie_groups(values, 1e-7).tolist() == [0, 4, 1, 2, 3]
    assert tolerant_argsort(values[[3, 1, 2, 0, 4]], 5e-7).tolist() == [0, 2, 3, 4, 1]  # ties by index


class NoisyFitness:
    """A fitness whose values carry a deterministic pseudo-random error of ``rel`` of the scale
    (what another CPU's rounding does); the GA must not see it."""

    def __init__(self, inner, rel: float, salt: int) -> None:
        self.inner, self.rel, self.salt = inner, rel, salt

    n = property(lambda self: self.inner.n)
    scale = property(lambda self: self.inner.scale)
    evaluations = property(lambda self: self.inner.evaluations)

    def lower_bound(self, n_keep):
        return self.inner.lower_bound(n_keep)

    def batch(self, keeps):
        values = self.inner.batch(keeps)
        noise = [np.random.default_rng([self.salt, *np.flatnonzero(np.asarray(k)).tolist()]).normal()
                 if np.asarray(k).dtype == bool else np.random.default_rng([self.salt, *np.sort(k).tolist()]).normal()
                 for k in keeps]
        return values + self.rel * self.inner.scale * np.asarray(noise)

    def __call__(self, keep):
        return float(self.batch([keep])[0])


@pytest.mark.parametrize("distance", ["bottleneck", "wasserstein"])
def test_the_ga_and_its_polish_do_not_see_rounding_noise(distance):
    rng = np.random.default_rng(4)
    points = np.repeat(rng.normal(size=(10, 5)), 3, axis=0) + 0.05 * rng.normal(size=(30, 5))
    calculator = MetricCalculator(distance=distance)
    layer = calculator.analyse(points)
    config = GAConfig(population_size=10, generations=8, seed=1)
    reference = evolve_neuron_mask(calculator.subset_fitness(layer), 30, 12, config)
    for salt in range(3):
        noisy = evolve_neuron_mask(NoisyFitness(calculator.subset_fitness(layer), 1e-8, salt), 30, 12, config)
        np.testing.assert_array_equal(noisy.keep_mask, reference.keep_mask)


def test_polish_ends_on_a_local_optimum_and_reports_it():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(20, 4))
    calculator = MetricCalculator(distance="wasserstein")
    fitness = calculator.subset_fitness(calculator.analyse(points))
    result = evolve_neuron_mask(fitness, 20, 8, GAConfig(population_size=4, generations=0, seed=0))
    assert result.converged and result.best_fitness <= result.ga_fitness
    assert result.best_fitness >= result.lower_bound - 1e-12
    kept, pruned = np.flatnonzero(result.keep_mask), np.flatnonzero(~result.keep_mask)
    neighbours = [np.sort(np.append(np.delete(kept, i), j)) for i in range(len(kept)) for j in pruned]
    assert fitness.batch(neighbours).min() >= result.best_fitness - 1e-5 * fitness.scale  # no swap improves
    # a random start is rarely a local optimum: the polish must have worked here
    assert result.polish_swaps > 0 and result.best_fitness < result.ga_fitness
    capped = polish_by_swaps(fitness, np.arange(20) < 8, fitness(np.arange(20) < 8), tol=0.0, reached=0.0,
                             max_passes=1, budget=10**9)
    assert capped.swaps == 1 and not capped.converged
    skipped = polish_by_swaps(fitness, np.arange(20) < 8, fitness(np.arange(20) < 8), tol=0.0, reached=0.0,
                              max_passes=10, budget=8 * 12 * 8**2 - 1)
    assert skipped.swaps == 0 and skipped.evaluations == 0 and not skipped.converged


def test_pruner_report_has_the_ga_before_and_after_the_polish():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3), torch.nn.ReLU(), torch.nn.Conv2d(24, 8, 3))
    pruner = TopologicalPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], population_size=4, generations=0,
                               progress=False)
    pruner.compress()
    unit = pruner.report.units[0]
    assert unit.lower_bound <= unit.final_distance <= unit.ga_distance <= unit.initial_distance + 1e-12
    assert unit.converged is True and unit.polish_swaps >= 0
    assert "bound" in pruner.report.summary()


@pytest.mark.parametrize("options", [dict(), dict(zero_anchor=False), dict(distance="bottleneck"),
                                     dict(cloud_metric="cosine"), dict(homology_dims=(0, 1))],
                         ids=["default", "no_anchor", "bottleneck", "cosine", "h01"])
def test_engine_masks_survive_tiny_perturbations(options):
    rng = np.random.default_rng(11)
    points = rng.normal(size=(16 if options.get("homology_dims") else 40, 6)) * rng.uniform(0.5, 2, size=(1, 1))
    zero_anchor = options.pop("zero_anchor", options.get("cloud_metric") != "cosine")
    calculator = MetricCalculator(distance=options.pop("distance", "wasserstein"), **options)
    config = GAConfig(population_size=8, generations=5, seed=2)

    def mask(cloud):
        unit = analyse_unit(calculator, cloud, zero_anchor=zero_anchor)
        return choose_kept(calculator, unit, len(cloud) // 2, config).keep_mask

    reference = mask(points)
    for rel in (1e-9, 1e-7):
        for trial in range(3):
            noisy = points * (1 + rel * np.random.default_rng(trial).normal(size=points.shape))
            np.testing.assert_array_equal(mask(noisy), reference, err_msg=f"{options} rel={rel}")


def test_the_stability_benchmark_explains_a_moved_mask_from_the_two_reports():
    """``python -m benchmarks.studies.mask_stability --explain``: the salience movement and the cut
    gap are relative to the largest salience; each run's GA outcome is named."""
    from benchmarks.studies.mask_stability import explain
    from nni_topo_pruner.report import UnitReport

    def unit(salience, final):
        return UnitReport(name="features.0", members=["features.0.weight"], neurons=4, kept=2, kept_channels=[0, 1],
                          salience=salience, ga_history=[5.0, 4.0, 3.5], initial_distance=5.0, final_distance=final,
                          evaluations=10, seconds_analyse=0.0, seconds_ga=0.0, ga_distance=final, lower_bound=3.0,
                          polish_swaps=0, converged=False)

    text = explain(unit([4.0, 3.0, 2.0, 1.0], 3.5), unit([4.0, 3.0, 2.2, 1.0], 3.25))
    assert "salience moved 0.05" in text and "gap at the cut 0.25" in text
    assert "final 3.5" in text and "final 3.25" in text and "2 generations" in text and "bound 3" in text


def test_the_stability_benchmark_calibrates_on_real_images_when_given_a_data_set(tmp_path):
    """``--data``: the activation variant's calibration batches are fixed training images of that data
    set (the same ones every call, normalised), not random tensors; a bad spec names the data flag."""
    from benchmarks.studies.mask_stability import build_parser, calibration

    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 80),
             x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 20))
    first, again = calibration(data=str(npz)), calibration(data=str(npz))
    assert len(first) == 2 and all(images.shape == (32, 3, 32, 32) for images, _ in first)
    for (a, _), (b, _) in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(first[0][0].mean().abs()) < 1.0 < float(first[0][0].std()) * 2  # normalised, not in [0, 1]
    random_images = calibration()
    assert all(isinstance(batch, torch.Tensor) and float(batch.min()) >= 0.0 for batch in random_images)
    _, config = build_parser().parse_config(["--data", str(npz), "--variants", "activations"])
    assert config.data == str(npz)
    with pytest.raises(ValueError, match="npz"):
        calibration(data="not-a-data-set")


def test_activation_masks_are_the_same_under_other_thread_counts_and_instruction_sets():
    """``mask_stability --environments``: the same model and images pruned in child processes under
    2 threads, oneDNN up to AVX2 and no SIMD at all (ATen's scalar kernels, oneDNN SSE4.1: what
    differs between machines) against 1 thread. With the calibration pass in float64 (the
    default) the activation masks are identical in every one. (The weight cloud runs no
    convolution; the study covers the other environments and variants.)"""
    from benchmarks.studies.mask_stability import ENVIRONMENTS, build_model, calibration, measure_environments

    chosen = [ENVIRONMENTS[0], ENVIRONMENTS[2], ENVIRONMENTS[5]]
    results = measure_environments(build_model(0.0625, None, 0), 0.0625, {"cloud": "activations", "num_images": 16},
                                   0.5, [batch[:8] for batch in calibration()], chosen)
    assert [r["environment"] for r in results] == [label for label, _ in chosen]
    assert all(r["layers"] == 13 for r in results)
    assert [r["changed"] for r in results] == [0, 0, 0], results
