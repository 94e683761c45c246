"""No decision by index: permuting a layer's neurons permutes its mask, for every option.

The property is checked on the engine (plain arrays) and through the NNI pruner, on random
layers, on layers with planted near-duplicates and on trained layers.
"""
from __future__ import annotations

import copy
import itertools
import logging

import numpy as np
import pytest
import torch

from nni_topo_pruner import TopologicalPruner
from nni_topo_pruner.engine import analyse_unit, canonical_order, choose_kept
from nni_topo_pruner.evolutionary import GAConfig
from nni_topo_pruner.metric_calculator import MetricCalculator
from nni_topo_pruner.sparsity_allocator import channel_keep_mask

GA = GAConfig(population_size=8, generations=4, seed=3)
OPTIONS = [dict(distance=d, homology_dims=h, cloud_metric=m, wasserstein_order=q)
           for d, h, m, q in itertools.product(("bottleneck", "wasserstein"), ((0,), (0, 1)), ("euclidean", "cosine"),
                                               (1.0, 2.0))
           if not (d == "bottleneck" and q != 1.0)]


def trained_layer(rows: int = 24, seed: int = 0) -> np.ndarray:
    """First-layer weights of a small MLP trained for a few hundred steps on a toy task."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=generator)
    y = (x[:, :3].sum(dim=1) > 0).long() + (x[:, 3] > 0.5).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, rows), torch.nn.ReLU(), torch.nn.Linear(rows, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model[0].weight.detach().double().numpy()


def layers():
    rng = np.random.default_rng(0)
    clustered = np.repeat(rng.normal(size=(8, 6)), 3, axis=0) + 1e-3 * rng.normal(size=(24, 6))
    scaled = rng.normal(size=(24, 12)) * rng.uniform(0.2, 3.0, size=(24, 1))
    return {"gaussian": rng.normal(size=(24, 12)), "clustered": clustered, "scaled": scaled,
            "trained": trained_layer()}


def kept(points: np.ndarray, n_keep: int, options: dict) -> tuple[np.ndarray, np.ndarray]:
    calculator = MetricCalculator(**options)
    analysed = analyse_unit(calculator, points)
    return choose_kept(calculator, analysed, n_keep, GA).keep_mask, analysed.salience


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_engine_masks_are_equivariant_under_permutation(options):
    rng = np.random.default_rng(1)
    for name, points in layers().items():
        mask, salience = kept(points, 12, options)
        assert mask.sum() == 12
        for _ in range(2):
            perm = rng.permutation(len(points))
            mask_p, salience_p = kept(points[perm], 12, options)
            np.testing.assert_array_equal(mask_p, mask[perm], err_msg=f"{name} {options}")
            # the salience values are equal within rounding, not bit for bit: the distance matrix is
            # computed once in stored order (issue 30) and BLAS rounds by position; no decision rests on
            # those bits (issue 25), so the masks above are exactly equivariant
            np.testing.assert_allclose(salience_p, salience[perm], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} {options}")


def test_canonical_order_depends_only_on_the_rows():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(30, 5))
    points[7] = points[3]  # identical rows may be exchanged, nothing else
    reference = points[canonical_order(points)]
    for _ in range(5):
        perm = rng.permutation(30)
        np.testing.assert_array_equal(points[perm][canonical_order(points[perm])], reference)
    norms = np.linalg.norm(reference, axis=1)
    assert np.all(np.diff(norms) <= 1e-12)  # larger norm first


def conv_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    with torch.no_grad():  # filters of different scales, as after training
        model[0].weight.mul_(torch.rand(16, 1, 1, 1) * 3 + 0.2)
    return model.eval()


def permute_filters(model: torch.nn.Module, index: int, perm: torch.Tensor) -> torch.nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        model[index].weight.copy_(model[index].weight[perm])
        model[index].bias.copy_(model[index].bias[perm])
    return model


def pruner_masks(model: torch.nn.Module, config_list, **options):
    pruner = TopologicalPruner(model, copy.deepcopy(config_list), population_size=8, generations=4, progress=False,
                               **options)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return {name: channel_keep_mask(t["weight"]) for name, t in masks.items()}, pruner.report


@pytest.mark.parametrize("options", [dict(), dict(distance="bottleneck"), dict(distance="wasserstein"),
                                     dict(homology_dims=(0, 1)), dict(cloud_metric="cosine")],
                         ids=["default", "bottleneck", "wasserstein", "h0h1", "cosine"])
@pytest.mark.parametrize("global_group", [False, True])
def test_pruner_masks_are_equivariant_under_permutation(options, global_group):
    model = conv_model()
    config = {"op_names": ["0", "2"], "sparse_ratio": 0.5}
    if global_group:
        config["global_group_id"] = "g"
    masks, _ = pruner_masks(model, [config], seed=5, **options)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(4))
    masks_p, _ = pruner_masks(permute_filters(model, 0, perm), [config], seed=5, **options)
    np.testing.assert_array_equal(masks_p["0"], masks["0"][perm.numpy()])
    np.testing.assert_array_equal(masks_p["2"], masks["2"])  # the other layer's decisions do not move


def test_all_tied_layer_is_reported_and_logged(caplog, tmp_path):
    model = conv_model()
    with torch.no_grad():  # every filter at the same distance from every other: all saliences equal
        model[2].weight.zero_()
        for i in range(8):
            model[2].weight[i, i, 0, 0] = 1.0
    with caplog.at_level(logging.WARNING, logger="nni_topo_pruner.pruner"):
        _, report = pruner_masks(model, [{"op_names": ["0", "2"], "sparse_ratio": 0.5}], distance="bottleneck")
    assert report.unit("2").salience_tied and not report.unit("0").salience_tied
    assert any("'2'" in record.getMessage() and "same salience" in record.getMessage() for record in caplog.records)
    report.to_json(tmp_path / "report.json")
    loaded = type(report).from_json(tmp_path / "report.json")
    assert loaded.unit("2").salience_tied is True and loaded.unit("0").salience_tied is False


def test_activation_cloud_masks_are_equivariant_and_need_calibration_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 8, 3)).eval()
    loader = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    config = [{"op_names": ["0"], "sparse_ratio": 0.5}]
    options = dict(cloud="activations", calibration_loader=loader, num_images=32, seed=1)
    masks, report = pruner_masks(copy.deepcopy(model), config, **options)
    assert report.options["cloud"] == "activations" and masks["0"].sum() == 8
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    permuted = copy.deepcopy(model)
    with torch.no_grad():  # the same network with its first layer's channels stored in another order
        permuted[0].weight.copy_(model[0].weight[perm])
        permuted[0].bias.copy_(model[0].bias[perm])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(permuted[1], name).copy_(getattr(model[1], name)[perm])
        permuted[3].weight.copy_(model[3].weight[:, perm])
    masks_p, _ = pruner_masks(permuted, config, **options)
    np.testing.assert_array_equal(masks_p["0"], masks["0"][perm.numpy()])
    with pytest.raises(ValueError, match="cloud='activations' needs calibration images"):
        TopologicalPruner(copy.deepcopy(model), config, cloud="activations")
    with pytest.raises(ValueError, match="cloud must be one of"):
        TopologicalPruner(copy.deepcopy(model), config, cloud="features")
    bad = [torch.full((4, 3, 12, 12), float("nan"))]
    with pytest.raises(ValueError, match="layer '0'.*NaN"):
        pruner_masks(copy.deepcopy(model), config, cloud="activations", calibration_loader=bad, num_images=4)


def test_channel_response_cloud_measures_correlation():
    from nni_topo_pruner.pruner import channel_response_cloud

    rng = np.random.default_rng(0)
    responses = rng.normal(size=(50, 4))
    responses[:, 1] = 3 * responses[:, 0] + 7  # same response up to scale and shift (what BatchNorm undoes)
    cloud = channel_response_cloud(responses)
    np.testing.assert_allclose(cloud[0], cloud[1], atol=1e-12)
    correlation = np.corrcoef(responses[:, 2], responses[:, 3])[0, 1]
    assert np.linalg.norm(cloud[2] - cloud[3]) == pytest.approx(np.sqrt(2 * (1 - correlation)))


@pytest.mark.parametrize("distance", ["bottleneck", "wasserstein"])
def test_zero_anchor_masks_are_equivariant_and_fitness_is_the_anchored_diagram_distance(distance):
    import gudhi

    from nni_topo_pruner.topology.diagram_distance import diagram_distance

    calculator = MetricCalculator(distance=distance)
    rng = np.random.default_rng(5)
    for points in layers().values():
        analysed = analyse_unit(calculator, points, zero_anchor=True)
        kept = choose_kept(calculator, analysed, 12, GA)
        perm = rng.permutation(len(points))
        kept_p = choose_kept(calculator, analyse_unit(calculator, points[perm], zero_anchor=True), 12, GA)
        np.testing.assert_array_equal(kept_p.keep_mask, kept.keep_mask[perm])
        # the GA's fitness is the distance between the diagrams of cloud + {0} and kept + {0} (GUDHI reference)
        def h0(cloud):
            tree = gudhi.RipsComplex(points=cloud).create_simplex_tree(max_dimension=1)
            tree.compute_persistence()
            bars = tree.persistence_intervals_in_dimension(0)
            return {0: bars[np.isfinite(bars[:, 1]) & (bars[:, 1] > 0)]}
        zero = np.zeros((1, points.shape[1]))
        expected = diagram_distance(h0(np.vstack([zero, points])), h0(np.vstack([zero, points[kept.keep_mask]])),
                                    distance)
        assert kept.ga.best_fitness == pytest.approx(expected, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="zero_anchor needs a cloud_metric"):
        analyse_unit(MetricCalculator(cloud_metric="cosine"), layers()["gaussian"], zero_anchor=True)


def test_zero_anchor_through_the_pruner_prunes_small_filters_first():
    model = conv_model()
    with torch.no_grad():  # four tiny filters: zeroing them barely moves the anchored diagram
        model[0].weight[[1, 5, 9, 13]] *= 1e-3
    masks, report = pruner_masks(model, [{"op_names": ["0"], "sparse_ratio": 0.25}], zero_anchor=True,
                                 distance="wasserstein")
    assert report.options["zero_anchor"] is True
    assert not masks["0"][[1, 5, 9, 13]].any() and masks["0"].sum() == 12
    with pytest.raises(ValueError, match="zero_anchor"):
        TopologicalPruner(conv_model(), [{"op_names": ["0"], "sparse_ratio": 0.5}], zero_anchor=True,
                          cloud_metric="cosine")


def _canonical_order_per_group(points: np.ndarray, *, scale_free: bool = False, spread=None) -> np.ndarray:
    """The reference: canonical_order as first written (issue 25), one tie group at a time
    (group[labels == label] per label); the engine's one-sort refinement must equal it."""
    from nni_topo_pruner.topology.ties import RTOL, tie_groups, tolerance

    def split(groups, key, tol):
        out = []
        for g in groups:
            if len(g) == 1:
                out.append(g)
                continue
            labels = tie_groups(key[g], tol)
            out.extend(g[labels == label] for label in range(int(labels.max()) + 1))
        return out

    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    norms = np.array([np.sqrt(np.dot(r, r)) for r in (np.ascontiguousarray(points[i]) for i in range(n))])
    keyed = points / np.where(norms > 0, norms, 1.0)[:, None] if scale_free else points
    groups = [np.arange(n, dtype=np.intp)]
    if not scale_free:
        groups = split(groups, -norms, tolerance(np.max(norms, initial=0.0), RTOL))
    tied = np.concatenate([g for g in groups if len(g) > 1] or [np.zeros(0, dtype=np.intp)])
    if len(tied) and spread is not None:
        groups = split(groups, -spread, tolerance(np.max(spread[tied]), RTOL))
    elif len(tied):
        squared = np.sum(keyed * keyed, axis=1)
        gram = keyed[tied] @ keyed.T
        spread = np.zeros(n)
        spread[tied] = np.sqrt(np.maximum(squared[tied, None] + squared[None, :] - 2.0 * gram, 0.0)).sum(axis=1)
        groups = split(groups, -spread, tolerance(np.max(spread[tied]), RTOL))
    coordinate_tol = tolerance(np.max(np.abs(keyed), initial=0.0), RTOL)
    for column in range(keyed.shape[1]):
        if all(len(g) == 1 for g in groups):
            break
        groups = split(groups, keyed[:, column], coordinate_tol)
    order = []
    for g in groups:
        if len(g) > 1:
            g = sorted(g, key=lambda i: (keyed[i].tobytes(), points[i].tobytes()))
        order.extend(int(i) for i in g)
    return np.asarray(order, dtype=np.intp)


@pytest.mark.parametrize("scale_free", [False, True])
def test_canonical_order_equals_the_per_group_reference(scale_free):
    """Property: on random clouds with every kind of tie (equal norms, sign flips, duplicate
    rows, integer grids, near-ties within the tolerance, rows equal to 1e-9) the one-sort
    refinement gives exactly the order of the per-group implementation it replaced, for float64
    and float32 clouds."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        n, d = int(rng.integers(1, 60)), int(rng.integers(1, 6))
        kind = trial % 5
        if kind == 0:
            points = rng.normal(size=(n, d))
        elif kind == 1:
            points = rng.integers(-2, 3, size=(n, d)).astype(float)  # many exact ties
        elif kind == 2:
            base = rng.normal(size=(max(1, n // 3), d))
            points = base[rng.integers(0, len(base), n)] * rng.choice([-1.0, 1.0], size=(n, 1))
        elif kind == 3:
            points = rng.normal(size=(n, d))
            points /= np.linalg.norm(points, axis=1, keepdims=True)  # every norm tied
            points *= 1.0 + 1e-9 * rng.normal(size=(n, 1))
        else:
            points = np.round(rng.normal(size=(n, d)), 1) * (1.0 + 3e-6 * rng.normal(size=(n, d)))
        np.testing.assert_array_equal(canonical_order(points, scale_free=scale_free),
                                      _canonical_order_per_group(points, scale_free=scale_free),
                                      err_msg=f"trial {trial}")
        single = points.astype(np.float32)  # a float32 cloud is ordered as its exact float64 copy
        np.testing.assert_array_equal(canonical_order(single, scale_free=scale_free),
                                      _canonical_order_per_group(single, scale_free=scale_free),
                                      err_msg=f"trial {trial} float32")
        spread = np.round(rng.normal(size=n), 1)  # a caller's spread key with ties
        np.testing.assert_array_equal(canonical_order(points, scale_free=scale_free, spread=spread),
                                      _canonical_order_per_group(points, scale_free=scale_free, spread=spread),
                                      err_msg=f"trial {trial} with spread")
