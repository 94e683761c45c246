"""The benchmark's two backends (benchmarks/grid/backends.py): NNI and Torch-Pruning prune the same
layers by the same counts; for l1, l2 and topological they keep the same channels.

A tiny CIFAR VGG-16 (width 0.125, random weights): no data. CI subset: l1 and topological at
0.3 (where the two libraries' roundings differ) and random; l1/l2/fpgm at 0.5 and betti behind
the slow marker (``pytest -m slow tests/test_benchmark_backends.py``).
"""
from __future__ import annotations

import copy
from typing import Dict

import pytest
import torch

from benchmarks.grid.backends import (build_importance, check_backend_pruners, layer_ratios, prune_with_backend, torch_pruning_name,
                                 torch_pruning_ratio)
from benchmarks.core.baseline import measure_size
from benchmarks.core.config import apply_overrides, preset_config, run_key, stable_hash, validate
from benchmarks.core.measure import layer_widths
from benchmarks.core.models import build_vgg16
from benchmarks.run import build_parser, resolve_config

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vgg16(width=0.125).eval()


def prune(vgg: torch.nn.Module, pruner: str, backend: str, sparsity: float, options: Dict = None):
    settings = [f"backend={backend}", f"pruners={pruner}"]
    if options:
        import json
        settings.append(f"pruner_options={json.dumps(options)}")
    config = validate(apply_overrides(preset_config("smoke"), settings))
    model = copy.deepcopy(vgg)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(16, 3, 32, 32, generator=generator) for _ in range(4)]  # betti's calibration data
    return prune_with_backend(config, model, pruner, config.config_list(sparsity), 0, torch.rand(2, 3, 32, 32),
                              calibration=lambda: images, progress=False)


# ---------------------------------------------------------------------------------- agreement
SLOW = pytest.mark.slow


@pytest.mark.parametrize("pruner, sparsity", [("l1", 0.3), ("topological", 0.3), ("random", 0.5),
                                              pytest.param("l1", 0.5, marks=SLOW), pytest.param("l2", 0.5, marks=SLOW),
                                              pytest.param("fpgm", 0.5, marks=SLOW),
                                              pytest.param("betti", 0.3, marks=SLOW)])
def test_backends_prune_the_same_counts_and_criteria_keep_the_same_channels(vgg, pruner, sparsity):
    nni = prune(vgg, pruner, "nni", sparsity, {"topological": {"population_size": 6, "generations": 3}}
                if pruner == "topological" else None)
    tp = prune(vgg, pruner, "torch-pruning", sparsity, {"topological": {"population_size": 6, "generations": 3}}
               if pruner == "topological" else None)
    assert measure_size(nni.model) == measure_size(tp.model)
    widths = layer_widths(tp.model)
    assert widths == layer_widths(nni.model)
    original = layer_widths(vgg)
    for name, width in original.items():  # NNI's count: int(n * ratio) pruned from every Conv2d, none elsewhere
        expected = width - int(width * sparsity) if name.startswith("features") else width
        assert widths[name] == expected, name
    assert sorted(tp.kept_channels) == sorted(nni.kept_channels) == sorted(n for n in original if n != "classifier")
    if pruner in ("l1", "l2", "topological", "betti"):
        assert tp.kept_channels == nni.kept_channels
    # the reported kept channels are the ones left in the model (first conv: its input is untouched)
    for result in (nni, tp):
        kept = result.kept_channels["features.0"]
        assert torch.equal(result.model.features[0].weight, vgg.features[0].weight[kept])
    assert tp.importance is not None and nni.importance is None


def test_l1_kept_channels_are_the_largest_filters(vgg):
    tp = prune(vgg, "l1", "torch-pruning", 0.5)
    norms = vgg.features[3].weight.abs().sum(dim=(1, 2, 3))
    expected = sorted(torch.argsort(norms, descending=True)[:4].tolist())
    assert tp.kept_channels["features.3"] == expected


# ---------------------------------------------------------------------------------- counts
def test_torch_pruning_ratio_gives_nnis_count():
    for n in range(1, 300):
        for ratio in (0.05, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99):
            r = torch_pruning_ratio(n, ratio)
            assert 0.0 <= r < 1.0
            assert n - int(n * (1 - r)) == int(n * ratio), (n, ratio)


def test_layer_ratios_follow_nni_selection_and_reject_what_torch_pruning_cannot_do(vgg):
    ratios = layer_ratios(vgg, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5},
                                {"op_names": ["features.0"], "sparse_ratio": 0.25},
                                {"op_names": ["features.3"], "exclude": True}])
    assert ratios["features.0"] == 0.25 and "features.3" not in ratios and ratios["features.7"] == 0.5
    assert "classifier" not in ratios
    with pytest.raises(ValueError, match=r"max_sparse_ratio.*--backend nni"):
        layer_ratios(vgg, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "max_sparse_ratio": 0.8}])


# ---------------------------------------------------------------------------------- options
def test_importances_get_the_pruners_options():
    config = validate(apply_overrides(preset_config("smoke"), [
        "backend=torch-pruning", "pruners=l1,topo_w2=topological",
        'pruner_options={"topo_w2": {"wasserstein_order": 2, "progress": false}}']))
    importance, options, _ = build_importance(config, "topo_w2=topological", seed=7)
    assert options == {"wasserstein_order": 2, "seed": 7}
    assert importance.calculator.wasserstein_order == 2 and importance.ga_config.seed == 7
    l1, _, _ = build_importance(config, "l1", seed=7)
    assert l1.p == 1 and l1.group_reduction == "first" and l1.normalizer is None


@pytest.mark.parametrize("pruner, options, message", [
    ("topological", {"cloud": "activations"}, r"cloud='activations'.*--backend nni"),
    ("betti", {"betti_threshold": 300}, r"betti_threshold is not available.*--backend nni"),
    ("l1", {"mode": "dependency_aware"}, r"\['mode'\].*--backend nni"),
])
def test_options_without_a_torch_pruning_counterpart_are_refused(pruner, options, message):
    config = apply_overrides(preset_config("smoke"), ["backend=torch-pruning", f"pruners={pruner}"])
    config.pruner_options = {pruner: options}
    with pytest.raises(ValueError, match=message):
        build_importance(config, pruner, seed=0)


# ---------------------------------------------------------------------------------- config and CLI
def test_backend_is_validated_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"backend must be one of 'nni', 'torch-pruning'.*got 'foo'"):
        validate(apply_overrides(preset_config("smoke"), ["backend=foo"]))
    with pytest.raises(ValueError, match=r"'slim' has no Torch-Pruning importance.*l1, l2, random, topological"):
        check_backend_pruners(validate(apply_overrides(preset_config("smoke"), ["backend=torch-pruning", "pruners=l1,slim"])))
    assert torch_pruning_name("topo_w2=topological") == "topological"


def test_cli_flag_and_set_both_select_the_backend():
    parser = build_parser()
    assert resolve_config(parser.parse_args(["--preset", "smoke"])).backend == "nni"
    assert resolve_config(parser.parse_args(["--preset", "smoke", "--backend", "torch-pruning"])).backend == \
        "torch-pruning"
    assert resolve_config(parser.parse_args(["--preset", "smoke", "--set", "backend=torch-pruning"])).backend == \
        "torch-pruning"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_config(parser.parse_args(["--preset", "smoke", "--backend", "tensorflow"]))


def test_run_key_of_nni_runs_is_unchanged_and_torch_pruning_runs_get_their_own():
    # Hashes of the key before backends existed: committed records are found by them.
    config = preset_config("smoke")
    assert stable_hash(run_key(config, "b", "l1", 0.5, 0)) == "7b0c6e36beeb008b"
    variant = apply_overrides(config, ["pruners=l1,topo_w2=topological",
                                       'pruner_options={"topo_w2": {"wasserstein_order": 2}}'])
    assert stable_hash(run_key(variant, "b", "topo_w2=topological", 0.5, 1)) == "4bde46317b2b935c"
    assert "backend" not in run_key(apply_overrides(config, ["backend=nni"]), "b", "l1", 0.5, 0)
    tp_key = run_key(apply_overrides(config, ["backend=torch-pruning"]), "b", "l1", 0.5, 0)
    assert tp_key["backend"] == "torch-pruning" and stable_hash(tp_key) != "7b0c6e36beeb008b"
