"""The Torch-Pruning front door (nni_topo_pruner.torch_pruning): same engine, same kept channels.

CI subset: the issue's usage on a small model, Torch-Pruning's count (ratio, per-layer ratios,
round_to, iterative steps, channel groups), scores, options, lazy import, and equal kept channels
with TopologicalPruner on CIFAR VGG-16 (width 0.25) and ResNet-18. Slow: the torchvision matrix
(``pytest -m slow tests/test_torch_pruning.py``).
"""
from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from typing import Dict, List

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import torch_pruning as tp

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.engine import analyse_unit, build_criterion, choose_kept, unit_ga_config
from nni_topo_pruner.torch_pruning import TESTED_TORCH_PRUNING_VERSION, TopologicalImportance

# Small GA: the tests compare the two front doors, not the search's quality.
FAST_GA = dict(population_size=6, generations=3)


class OddCNN(nn.Module):
    """Odd widths, so that Torch-Pruning's rounding (int(n * (1 - r))) matters."""

    def __init__(self, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 13, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(13)
        self.conv2 = nn.Conv2d(13, 10, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(10)
        self.conv3 = nn.Conv2d(10, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1, groups=groups)
        self.bn4 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        x = torch.relu(self.bn4(self.conv4(x)))
        return self.head(x.mean(dim=(2, 3)))


def odd_cnn(groups: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return OddCNN(groups).eval()


def mark_channels(model: nn.Module) -> Dict[str, nn.BatchNorm2d]:
    """Write each channel's index into the running mean of the BatchNorm after each conv (a
    buffer no criterion reads): after pruning, it says which original channels survived."""
    marked, conv = {}, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            conv = name
        elif isinstance(module, nn.BatchNorm2d) and conv is not None:
            module.running_mean.copy_(torch.arange(module.num_features, dtype=torch.float32))
            marked[conv], conv = module, None
    return marked


def surviving(marked: Dict[str, nn.BatchNorm2d]) -> Dict[str, List[int]]:
    return {name: bn.running_mean.round().long().tolist() for name, bn in marked.items()}


def nni_kept(model: nn.Module, example: torch.Tensor, dependency_groups: bool, **options) -> Dict[str, List[int]]:
    """Kept output channels of every Conv2d by TopologicalPruner at sparse_ratio 0.5 (a copy of model)."""
    model = copy.deepcopy(model)
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    if dependency_groups:
        from nni.compression.utils import auto_set_denpendency_group_ids
        config = auto_set_denpendency_group_ids(model, config, example)
    pruner = TopologicalPruner(model, config, progress=False, **options)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return {name: torch.nonzero(m["weight"].flatten(1).abs().sum(1)).flatten().tolist() for name, m in masks.items()}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- the issue's usage
def test_issue_usage_prunes_model_physically():
    model = odd_cnn()
    example = torch.rand(1, 3, 16, 16)
    before, shape = n_params(model), model(example).shape
    imp = TopologicalImportance(seed=0)
    assert isinstance(imp, tp.pruner.importance.Importance)
    pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5, ignored_layers=[model.head])
    pruner.step()
    assert model(example).shape == shape
    assert n_params(model) < before
    assert [model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels] == [6, 5, 8]
    assert sorted(imp.choices) == ["conv1", "conv2", "conv3", "conv4"]
    assert imp.choices["conv1"].members == ["conv1"] and imp.choices["conv1"].cloud == "out_rows"


# --------------------------------------------------------------------------- Torch-Pruning's count
@pytest.mark.parametrize("settings", [
    dict(pruning_ratio=0.3),
    dict(pruning_ratio=0.45, round_to=4),
    dict(pruning_ratio=0.5, pruning_ratio_dict="conv2:0.7"),
    dict(pruning_ratio=0.6, iterative_steps=2),
], ids=["ratio0.3", "round_to4", "ratio_dict", "iterative"])
def test_kept_channels_are_the_engine_choice(settings):
    """Whatever Torch-Pruning's count, the channels it keeps are exactly the engine's n_keep."""
    model = odd_cnn()
    example = torch.rand(1, 3, 16, 16)
    settings = dict(settings)
    if "pruning_ratio_dict" in settings:
        layer, ratio = settings.pop("pruning_ratio_dict").split(":")
        settings["pruning_ratio_dict"] = {getattr(model, layer): float(ratio)}
    steps = settings.get("iterative_steps", 1)
    marked = mark_channels(model)
    imp = TopologicalImportance(seed=1, distance="wasserstein", **FAST_GA)
    pruner = tp.pruner.BasePruner(model, example, importance=imp, ignored_layers=[model.head], **settings)
    for _ in range(steps):
        before = {name: getattr(model, name).out_channels for name in ("conv1", "conv2", "conv3", "conv4")}
        indices = surviving(marked)
        imp.choices.clear()
        pruner.step()
        for name, width in before.items():
            choice = imp.choices[name]
            assert choice.n == width
            assert getattr(model, name).out_channels == choice.n_keep < width
            assert surviving(marked)[name] == [indices[name][i] for i in choice.kept]
        model(example)
    if settings.get("round_to"):
        assert all(getattr(model, n).out_channels % 4 == 0 for n in ("conv1", "conv2", "conv3", "conv4"))
    if "pruning_ratio_dict" in settings:
        assert model.conv2.out_channels == int(10 * (1 - 0.7))


def test_global_pruning_runs_and_says_counts_are_torch_prunings(caplog):
    model = odd_cnn()
    example = torch.rand(1, 3, 16, 16)
    before = n_params(model)
    imp = TopologicalImportance(seed=0, **FAST_GA)
    with caplog.at_level("WARNING", logger="nni_topo_pruner.torch_pruning"):
        tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5, global_pruning=True,
                             ignored_layers=[model.head]).step()
    assert "global or isomorphic" in caplog.text
    assert model(example).shape == (1, 4) and n_params(model) < before


def test_grouped_conv_shares_one_choice_per_channel_group():
    model = odd_cnn(groups=4)
    example = torch.rand(1, 3, 16, 16)
    marked = mark_channels(model)
    imp = TopologicalImportance(seed=0, **FAST_GA)
    pruner = tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5, ignored_layers=[model.head])
    pruner.step()
    model(example)
    grouped = [c for c in imp.choices.values() if c.channel_groups == 4]
    assert grouped, {name: c.channel_groups for name, c in imp.choices.items()}
    for choice in grouped:
        assert choice.n == 4 and choice.n_keep == 2
    kept = surviving(marked)["conv4"]
    assert len(kept) == 8
    blocks = [[k - 4 * g for k in kept if 4 * g <= k < 4 * (g + 1)] for g in range(4)]
    assert all(block == blocks[0] for block in blocks)          # the same channels in every channel group


def test_scores_put_every_kept_channel_above_every_pruned_one():
    model = odd_cnn()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.rand(1, 3, 16, 16))
    group = graph.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(13)))
    imp = TopologicalImportance(seed=0, pruning_ratio=0.5, **FAST_GA)
    scores = imp(group)
    assert scores.shape == (13,) and len(set(scores.tolist())) == 13
    kept = imp.choices["conv1"].kept
    assert len(kept) == 6
    assert scores[kept].min() > 1.0 > scores[np.setdiff1d(np.arange(13), kept)].max()


# --------------------------------------------------------------------------- the importance contract
def issue_group():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    g = tp.DependencyGraph().build_dependency(m, example_inputs=torch.randn(1, 3, 16, 16)).get_pruning_group(
        m[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    return m, g


def test_direct_call_returns_the_criterions_ranking():
    """Called as Torch-Pruning's tests call any importance (the issue's snippet): one score per
    channel, the salience order (ties: canonical order), no count needed and no GA run."""
    m, g = issue_group()
    assert tp.importance.RandomImportance()(g).shape == (8,)
    imp = TopologicalImportance()
    scores = imp(g)
    assert scores.shape == (8,) and scores.dtype == torch.float32
    assert len(set(scores.tolist())) == 8 and 0 < scores.min() and scores.max() < 1
    assert imp.choices == {}                                    # nothing was chosen
    calculator, _ = build_criterion()
    points = m[0].weight.detach().flatten(1).double().numpy()
    analysed = analyse_unit(calculator, points, zero_anchor=True)
    salience = analysed.salience
    assert np.array_equal(np.argsort(scores.numpy(), kind="stable"), np.argsort(salience, kind="stable"))
    # the top-k of the ranking is the engine's salience-seeded start for every k
    for k in range(1, 8):
        top = np.sort(np.argsort(-scores.numpy())[:k])
        assert top.tolist() == np.sort(choose_kept(calculator, analysed, k, unit_ga_config(
            build_criterion()[1], "0")).initial_keep).tolist()


def test_direct_call_ranking_is_permutation_equivariant():
    m, g = issue_group()
    before = TopologicalImportance()(g).numpy()
    perm = np.random.default_rng(3).permutation(8)
    with torch.no_grad():
        m[0].weight.copy_(m[0].weight[perm].clone())
        m[0].bias.copy_(m[0].bias[perm].clone())
    after = TopologicalImportance()(g).numpy()
    assert np.array_equal(after, before[perm])


class _SubclassPruner(tp.pruner.BasePruner):
    """A MetaPruner-style subclass, as Torch-Pruning's algorithms are."""


@pytest.mark.parametrize("options", [
    dict(),
    dict(iterative_steps=3),
    dict(global_pruning=True),
    dict(isomorphic=True, global_pruning=True),
], ids=["local", "iterative", "global", "isomorphic"])
@pytest.mark.parametrize("pruner_class", [tp.pruner.BasePruner, tp.pruner.MetaPruner, _SubclassPruner],
                         ids=["BasePruner", "MetaPruner", "subclass"])
def test_inside_any_pruner_the_count_is_torch_prunings(pruner_class, options):
    """Inside a pruner (any subclass, local / iterative / global / isomorphic) the importance finds
    the pruner and chooses Torch-Pruning's count: every step prunes what Torch-Pruning asked for."""
    model = odd_cnn()
    imp = TopologicalImportance(seed=0, **FAST_GA)
    pruner = pruner_class(model, torch.rand(1, 3, 16, 16), importance=imp, pruning_ratio=0.5,
                          ignored_layers=[model.head], **options)
    stock = copy.deepcopy(model)
    reference = pruner_class(stock, torch.rand(1, 3, 16, 16), importance=tp.importance.MagnitudeImportance(p=2),
                             pruning_ratio=0.5, ignored_layers=[stock.head], **options)
    for _ in range(options.get("iterative_steps", 1)):
        pruner.step()
        reference.step()
        widths = [model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels]
        if not options.get("global_pruning"):   # local counts do not depend on the importance
            assert widths == [stock.conv1.out_channels, stock.conv2.out_channels, stock.conv3.out_channels]
        for name, choice in imp.choices.items():
            assert choice.n_keep < choice.n              # a count, not the direct-call ranking
    assert imp.choices and model(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert n_params(model) < n_params(odd_cnn())


@pytest.mark.parametrize("pruner_name", ["GroupNormPruner", "GrowingRegPruner"])
def test_sparse_training_gets_the_ranking_and_regularize_every_bounds_its_cost(monkeypatch, pruner_name):
    """regularize() asks for every group on every batch: the importance answers with the ranking
    (no count, no GA), recomputed on every regularize_every-th call; step() still cuts by count."""
    model = odd_cnn()
    imp = TopologicalImportance(seed=0, regularize_every=2, **FAST_GA)
    calls = []
    ranking = TopologicalImportance._ranking
    monkeypatch.setattr(TopologicalImportance, "_ranking", lambda self, points: calls.append(len(points))
                        or ranking(self, points))
    pruner = getattr(tp.pruner, pruner_name)(model, torch.rand(1, 3, 16, 16), importance=imp, pruning_ratio=0.5,
                                             ignored_layers=[model.head])
    groups = len(list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                               root_module_types=pruner.root_module_types)))
    before = model.conv1.weight.detach().clone()
    for _ in range(3):
        model.zero_grad()
        model(torch.rand(4, 3, 16, 16)).sum().backward()
        pruner.regularize(model)
    assert imp.choices == {}                       # no count was chosen, no GA ran
    assert len(calls) == 2 * groups                # calls 1 and 3 of each group; call 2 reused
    assert torch.equal(model.conv1.weight, before)  # regularize changes gradients only
    pruner.step()
    assert imp.choices and all(c.n_keep < c.n for c in imp.choices.values())
    with pytest.raises(ValueError, match="regularize_every"):
        TopologicalImportance(regularize_every=0)


def test_choice_is_the_engine_call_on_the_group_cloud(residual_cnn):
    """A residual add couples conv1 and conv3: one cloud, their rows side by side, named 'conv1+conv3'."""
    model = residual_cnn
    imp = TopologicalImportance(seed=2, distance="wasserstein", **FAST_GA)
    pruner = tp.pruner.BasePruner(model, torch.rand(1, 3, 8, 8), importance=imp, pruning_ratio=0.5,
                                  ignored_layers=[model.head])
    points = np.concatenate([model.conv1.weight.detach().flatten(1).double().numpy(),
                             model.conv3.weight.detach().flatten(1).double().numpy()], axis=1)
    pruner.step()
    calculator, ga = build_criterion(seed=2, distance="wasserstein", **FAST_GA)
    analysed = analyse_unit(calculator, points, zero_anchor=True)  # the default for weight clouds
    expected = choose_kept(calculator, analysed, 6, unit_ga_config(ga, "conv1+conv3"))
    assert imp.choices["conv1+conv3"].members == ["conv1", "conv3"]
    assert imp.choices["conv1+conv3"].kept.tolist() == np.flatnonzero(expected.keep_mask).tolist()
    assert model.conv1.out_channels == model.conv3.out_channels == 6


def test_options_are_validated_like_the_pruner():
    with pytest.raises(ValueError, match="distance"):
        TopologicalImportance(distance="manhattan")
    with pytest.raises(ValueError, match="pruning_ratio"):
        TopologicalImportance(pruning_ratio=1.0)
    with pytest.raises(ValueError, match="homology_dims"):
        TopologicalImportance(homology_dims=0)


def test_torch_pruning_is_imported_lazily_and_missing_one_is_explained(monkeypatch):
    code = ("import sys, nni_topo_pruner, nni_topo_pruner.torch_pruning; "
            "assert 'torch_pruning' not in sys.modules, 'imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    monkeypatch.setitem(sys.modules, "torch_pruning", None)     # as if not installed
    with pytest.raises(ImportError, match=r"nni-topo-pruner\[torch-pruning\]"):
        TopologicalImportance()


def test_module_docstring_example_runs():
    import doctest
    import nni_topo_pruner.torch_pruning as module
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pinned_version_is_the_one_installed():
    from importlib.metadata import version
    # (torch_pruning.__version__ of the 1.6.1 wheel still says 1.6.0: ask the distribution)
    assert version("torch-pruning") == TESTED_TORCH_PRUNING_VERSION


# --------------------------------------------------------------------------- same channels as the NNI plugin
def test_cifar_vgg16_keeps_the_same_channels_as_topological_pruner():
    from benchmarks.core.models import build_vgg16
    torch.manual_seed(0)
    model = build_vgg16(width=0.25).eval()
    example = torch.rand(1, 3, 32, 32)
    expected = nni_kept(model, example, dependency_groups=False, seed=0)     # the default options
    marked = mark_channels(model)
    imp = TopologicalImportance(seed=0)
    tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5,
                         ignored_layers=[model.classifier]).step()
    assert len(expected) == 13
    assert surviving(marked) == expected
    assert {name: c.kept.tolist() for name, c in imp.choices.items()} == expected
    assert model(example).shape == (1, 10)


def test_resnet18_keeps_the_same_channels_as_topological_pruner():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    example = torch.rand(1, 3, 32, 32)
    options = dict(seed=0, distance="wasserstein", **FAST_GA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nni_kept(model, example, dependency_groups=True, **options)
    before = n_params(model)
    marked = mark_channels(model)
    imp = TopologicalImportance(**options)
    tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc]).step()
    assert len(expected) == 20
    assert surviving(marked) == expected
    assert "conv1+layer1.0.conv2+layer1.1.conv2" in imp.choices         # the NNI dependency group's name
    assert model(example).shape == (1, 10) and n_params(model) < before


# --------------------------------------------------------------------------- the Betti criterion
class CountingLoader:
    """Calibration batches that count how often they are iterated (one pass per collection)."""

    def __init__(self, batches: List[torch.Tensor]):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


def calibration_images(batches: int = 4, seed: int = 1) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(16, 3, 32, 32, generator=generator) for _ in range(batches)]


def tp_kept(model: nn.Module, example: torch.Tensor, importance, **settings) -> Dict[str, List[int]]:
    """Prune ``model`` with Torch-Pruning; the kept output channels of every group root, by name."""
    names = {module: name for name, module in model.named_modules()}
    widths = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    kept = {}
    for group in tp.pruner.BasePruner(model, example, importance=importance, **settings).step(interactive=True):
        dep, idxs = group[0]
        name = names[dep.target.module]
        kept[name] = sorted(set(range(widths[name])) - {int(i) for i in idxs})
        group.prune()
    return kept


def test_betti_importance_keeps_betti_pruners_channels():
    from benchmarks.grid.backends import torch_pruning_ratio
    from benchmarks.core.models import build_vgg16
    from nni_topo_pruner.bmvc.pruner import BettiPruner
    from nni_topo_pruner.torch_pruning import BettiImportance

    torch.manual_seed(0)
    model = build_vgg16(width=0.125).eval()
    example = torch.rand(1, 3, 32, 32)
    images = calibration_images()
    reference = copy.deepcopy(model)
    nni = BettiPruner(reference, [{"op_types": ["Conv2d"], "sparse_ratio": 0.3}], calibration_loader=images,
                      num_images=64, progress=False)
    _, masks = nni.compress()
    nni.unwrap_model()
    expected = {name: torch.nonzero(m["weight"].flatten(1).abs().sum(1)).flatten().tolist() for name, m in masks.items()}
    loader = CountingLoader(images)
    imp = BettiImportance(loader, num_images=64)
    assert isinstance(imp, tp.pruner.importance.Importance)
    ratios = {m: torch_pruning_ratio(m.out_channels, 0.3) for m in model.modules() if isinstance(m, nn.Conv2d)}
    kept = tp_kept(model, example, imp, pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=[model.classifier])
    assert len(expected) == 13 and kept == expected
    assert all(np.array_equal(imp.scores[name], nni.scores[name]) for name in nni.scores)
    assert imp.images_used == nni.images_used and set(imp.images_used.values()) == {64}
    assert loader.passes == 1                    # every layer's feature maps from one pass over the data
    assert model(example).shape == (1, 10)


def test_betti_importance_prunes_the_largest_scores_and_leaves_non_conv_groups(caplog):
    """Filters 0-3 see only channel 0 (4 clustered prototype images: b0 about 4), filters 4-7 only
    channel 1 (independent noise: b0 = N): the noise filters have the largest Betti numbers and go."""
    from nni_topo_pruner.torch_pruning import BettiImportance

    generator = torch.Generator().manual_seed(0)
    prototypes = torch.rand(4, 32, 32, generator=generator)
    images = torch.zeros(32, 3, 32, 32)
    images[:, 0] = prototypes[torch.arange(32) % 4] + 0.01 * torch.rand(32, 32, 32, generator=generator)
    images[:, 1] = torch.rand(32, 32, 32, generator=generator)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 6), nn.ReLU(),
                          nn.Linear(6, 2)).eval()
    with torch.no_grad():
        weight = torch.rand(8, 3, 3, 3, generator=generator) + 0.5
        weight[:4, 1:] = 0
        weight[4:, [0, 2]] = 0
        model[0].weight.copy_(weight)
    imp = BettiImportance([images[:16], images[16:]], num_images=32)
    with caplog.at_level("WARNING", logger="nni_topo_pruner.torch_pruning"):
        kept = tp_kept(model, torch.rand(1, 3, 32, 32), imp, pruning_ratio=0.5, ignored_layers=[model[5]])
    assert kept["0"] == [0, 1, 2, 3], imp.scores["0"]
    assert max(imp.scores["0"][:4]) < min(imp.scores["0"][4:])
    assert model[0].out_channels == 4 and model[3].out_features == 6      # the Linear group is left alone
    assert "group rooted at 3 (Linear) is left unpruned" in caplog.text


@pytest.mark.parametrize("options, error, message", [
    (dict(num_images=2), ValueError, "num_images must be an int >= 3"),
    (dict(feature_reduction="pca"), ValueError, "feature_reduction must be one of"),
    (dict(scale=-1.0), ValueError, "scale must be a finite number >= 0"),
    (dict(homology_dims=()), ValueError, "homology_dims must be a non-empty"),
    (dict(seed=0.5), ValueError, "seed must be an int"),
])
def test_betti_importance_options_are_validated(options, error, message):
    from nni_topo_pruner.torch_pruning import BettiImportance

    with pytest.raises(error, match=message):
        BettiImportance(calibration_images(1), **options)
    with pytest.raises(TypeError, match="calibration_loader must be an iterable of batches"):
        BettiImportance(torch.rand(4, 3, 8, 8))


# --------------------------------------------------------------------------- torchvision matrix (slow)
def _matrix_case(name: str):
    if name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None, image_size=32)
        # conv_proj writes the residual stream, whose width torchvision's ViT fixes (hidden_dim):
        # ignoring it leaves the 12 MLP groups (3072 -> 1536 channels each).
        return model, torch.rand(1, 3, 32, 32), [model.heads, model.conv_proj]
    if name == "swin_t":
        model = torchvision.models.swin_t(weights=None)
        # Torch-Pruning 1.6.1 cannot build swin_t's residual-stream group: its index lists grow
        # through every flatten (_FlattenIndexMapping) until MemoryError, whatever the importance.
        # Ignoring the layers that write the stream leaves the 12 MLP groups (hidden channels).
        writers = [m for n, m in model.named_modules() if n.endswith(("attn.proj", "mlp.3", "reduction"))]
        return model, torch.rand(1, 3, 64, 64), [model.head, model.features[0][0], *writers]
    model = getattr(torchvision.models, name)(weights=None)
    size = 32 if name in ("resnet18", "mobilenet_v2") else 64
    head = {"resnet18": lambda m: m.fc, "densenet121": lambda m: m.classifier,
            "mobilenet_v2": lambda m: m.classifier[-1], "convnext_tiny": lambda m: m.classifier[-1]}[name](model)
    return model, torch.rand(1, 3, size, size), [head]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121", "convnext_tiny", "vit_b_16", "swin_t"])
def test_torchvision_matrix(name):
    """Ratio 0.5: the model runs, same output shape, strictly fewer parameters."""
    torch.manual_seed(0)
    model, example, ignored = _matrix_case(name)
    model.eval()
    with torch.no_grad():
        shape = model(example).shape
    before = n_params(model)
    imp = TopologicalImportance(seed=0, **FAST_GA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=0.5, ignored_layers=ignored).step()
    with torch.no_grad():
        assert model(example).shape == shape
    assert n_params(model) < before
    assert imp.choices and all(c.n_keep < c.n for c in imp.choices.values())


def test_choice_records_what_torch_pruning_keeps_when_it_refuses_to_empty_a_layer():
    """Issue 26, item 23: ratio 0.6 with round_to=4 asks to prune all 8 channels; Torch-Pruning
    refuses (check_pruning_group) and keeps them, and the recorded choice must say so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    imp = TopologicalImportance(seed=0)
    tp.pruner.BasePruner(model, torch.rand(1, 3, 16, 16), importance=imp, pruning_ratio=0.6, round_to=4,
                         ignored_layers=[model[2]]).step()
    assert model[0].out_channels == 8
    assert imp.choices["0"].n_keep == 8 and imp.choices["0"].kept.tolist() == list(range(8))
