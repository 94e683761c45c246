"""BettiPruner: masks from Betti numbers of feature-map clouds, NNI config semantics, ModelSpeedup."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from nni_topo_pruner.bmvc.pruner import BettiPruner
from nni_topo_pruner.bmvc.scoring import layer_betti
from nni_topo_pruner.feature_collector import FeatureCollector
from nni_topo_pruner.speedup import speedup_model
from nni_topo_pruner.topology.betti import BettiScale, betti_numbers

N_IMAGES = 48


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def _model(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN()
    model.eval()
    return model


def _loader(n=N_IMAGES, batch=16, seed=1, size=8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _prune(model, config_list, **options):
    options.setdefault("calibration_loader", _loader())
    options.setdefault("num_images", N_IMAGES)
    options.setdefault("progress", False)
    pruner = BettiPruner(model, config_list, **options)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return pruner, masks


def _kept(masks, name):
    return masks[name]["weight"].flatten(1).sum(1).ne(0)


def _features(model, loader, layer):
    maps = []
    handle = getattr(model, layer).register_forward_hook(lambda m, i, o: maps.append(o.detach()))
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    handle.remove()
    return torch.cat(maps)


def test_exact_sparsity_per_layer_and_bias_follows_weight():
    pruner, masks = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    assert _kept(masks, "conv1").sum() == 4 and _kept(masks, "conv2").sum() == 3
    for name in ("conv1", "conv2"):
        assert torch.equal(masks[name]["bias"].bool(), _kept(masks, name))
    assert set(pruner.scores) == {"conv1", "conv2"} and pruner.images_used == {"conv1": N_IMAGES, "conv2": N_IMAGES}


def test_prunes_the_filters_with_the_largest_scores():
    pruner, masks = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    for name in ("conv1", "conv2"):
        kept, score = _kept(masks, name).numpy(), pruner.scores[name]
        assert score[~kept].min() >= score[kept].max()


def test_scores_are_betti_numbers_of_the_feature_clouds():
    # recompute every filter's cloud with a plain hook and GUDHI (betti_numbers) and compare
    model = _model()
    maps = _features(model, _loader(), "conv1")
    pruner, _ = _prune(model, [{"op_names": ["conv1"], "sparse_ratio": 0.25}])
    expected = [betti_numbers(maps[:, c].flatten(1).double().numpy(), dims=(0,), scale=0.5,
                              scale_reference="median")[0] for c in range(maps.shape[1])]
    assert pruner.scores["conv1"].tolist() == expected


def test_scores_with_h1_and_diameter_scale_match_gudhi():
    model = _model()
    maps = _features(model, _loader(), "conv2")
    pruner, _ = _prune(model, [{"op_names": ["conv2"], "sparse_ratio": 0.5}], homology_dims=(0, 1),
                       scale=0.3, scale_reference="diameter")
    for c in range(maps.shape[1]):
        b = betti_numbers(maps[:, c].flatten(1).double().numpy(), dims=(0, 1), scale=0.3, scale_reference="diameter")
        assert pruner.betti["conv2"][c].tolist() == list(b)
        assert pruner.scores["conv2"][c] == sum(b)


class IdentityOrConstant(nn.Module):
    """conv: filters 0-2 copy the input's first channel (scattered clouds: b0 = N),
    filters 3-5 output a constant (one point: b0 = 1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:3, 0, 1, 1] = 1.0
            self.conv.bias.copy_(torch.arange(6.0))
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def _noise_loader(n=40):
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(10, 1, 6, 6, generator=gen) for _ in range(n // 10)]


def test_known_topology_scattered_filters_go_first():
    model = IdentityOrConstant()
    pruner, masks = _prune(model, [{"op_names": ["conv"], "sparse_ratio": 0.5}],
                           calibration_loader=_noise_loader(), num_images=40)
    assert pruner.scores["conv"].tolist() == [40, 40, 40, 1, 1, 1]
    assert _kept(masks, "conv").tolist() == [False, False, False, True, True, True]


def test_threshold_mode_prunes_scores_above_threshold():
    model = IdentityOrConstant()
    pruner, masks = _prune(model, [{"op_names": ["conv"]}], betti_threshold=39,
                           calibration_loader=_noise_loader(), num_images=40)
    assert _kept(masks, "conv").tolist() == [False, False, False, True, True, True]
    # a score equal to the threshold is kept ("greater than T are removed")
    _, masks = _prune(IdentityOrConstant(), [{"op_names": ["conv"]}], betti_threshold=40,
                      calibration_loader=_noise_loader(), num_images=40)
    assert _kept(masks, "conv").all()


def test_threshold_mode_warns_when_a_layer_loses_every_filter(caplog):
    with caplog.at_level(logging.WARNING, logger="nni_topo_pruner.bmvc.pruner"):
        _, masks = _prune(IdentityOrConstant(), [{"op_names": ["conv"]}], betti_threshold=0,
                          calibration_loader=_noise_loader(), num_images=40)
    assert not _kept(masks, "conv").any()
    assert "conv loses every filter" in caplog.text and "max_sparse_ratio" in caplog.text


def test_threshold_mode_honours_max_sparse_ratio():
    _, masks = _prune(_model(), [{"op_types": ["Conv2d"], "max_sparse_ratio": 0.25}], betti_threshold=0)
    assert _kept(masks, "conv1").sum() == 6 and _kept(masks, "conv2").sum() == 5


def test_threshold_mode_leaves_nnis_target_spaces_as_configured():
    # the threshold reaches NNI's generate_sparsity through a view of the target spaces
    pruner, masks = _prune(_model(), [{"op_types": ["Conv2d"], "max_sparse_ratio": 0.25}], betti_threshold=0)
    assert all(space.sparse_threshold is None and space.sparse_ratio is None
               for spaces in pruner._target_spaces.values() for space in spaces.values())
    assert _kept(masks, "conv1").sum() == 6


def test_paper_threshold_300_on_clouds_of_fewer_points_prunes_nothing():
    _, masks = _prune(_model(), [{"op_types": ["Conv2d"]}], betti_threshold=300)
    assert _kept(masks, "conv1").all() and _kept(masks, "conv2").all()


def test_model_speedup_shrinks_the_model():
    model = _model()
    dummy = torch.rand(2, 3, 8, 8)
    _, masks = _prune(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    params_before = sum(p.numel() for p in model.parameters())
    speedup_model(model, dummy, masks)
    assert model.conv1.out_channels == 4 and model.bn1.num_features == 4
    assert model.conv2.in_channels == 4 and model.conv2.out_channels == 3 and model.fc.in_features == 12
    assert model(dummy).shape == (2, 3)
    assert sum(p.numel() for p in model.parameters()) < params_before


def test_speedup_output_equals_masked_model_output():
    model = _model()
    dummy = torch.rand(4, 3, 8, 8)
    pruner = BettiPruner(model, [{"op_names": ["conv2"], "sparse_ratio": 0.5}], calibration_loader=_loader(),
                         num_images=N_IMAGES, progress=False)
    _, masks = pruner.compress()
    with torch.no_grad():
        masked = model(dummy)      # still wrapped: masks applied
    pruner.unwrap_model()
    speedup_model(model, dummy, masks)
    with torch.no_grad():
        assert torch.allclose(model(dummy), masked, atol=1e-5)


def test_dependency_group_shares_one_mask():
    # NNI's dependency-group rule: both layers get the same channel mask
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
    _, masks = _prune(model, [{"op_names": ["0", "2"], "sparse_ratio": 0.5, "dependency_group_id": 1}])
    assert torch.equal(_kept(masks, "0"), _kept(masks, "2")) and _kept(masks, "0").sum() == 3


def test_num_images_caps_and_short_data_warns(caplog):
    pruner, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], num_images=20)
    assert pruner.images_used["conv1"] == 20
    with caplog.at_level(logging.WARNING, logger="nni_topo_pruner.bmvc.pruner"):
        pruner, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], num_images=100)
    assert pruner.images_used["conv1"] == N_IMAGES and "ran out after 48 images" in caplog.text


def test_plain_tensor_batches_work():
    loader = [x for x, _ in _loader()]
    pruner, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=loader)
    reference, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    assert all(np.array_equal(pruner.scores[k], reference.scores[k]) for k in reference.scores)


def test_dataloader_works():
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.cat([b[0] for b in _loader()])
    y = torch.cat([b[1] for b in _loader()])
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    pruner, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=loader)
    reference, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    assert all(np.array_equal(pruner.scores[k], reference.scores[k]) for k in reference.scores)


def test_nni_evaluator_path_matches_loader_path():
    import nni
    from nni.compression.utils import TorchEvaluator

    batches = _loader()

    def evaluating_func(model):
        with torch.no_grad():
            for x, _ in batches:
                model(x)
        return 0.0

    model = _model()
    optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.01)
    evaluator = TorchEvaluator(training_func=lambda *a, **k: None, optimizers=optimizer,
                               training_step=lambda batch, model: 0.0, evaluating_func=evaluating_func)
    pruner = BettiPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], evaluator,
                         num_images=N_IMAGES, progress=False)
    _, masks = pruner.compress()
    reference, ref_masks = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    for name in ("conv1", "conv2"):
        assert np.array_equal(pruner.scores[name], reference.scores[name])
        assert torch.equal(masks[name]["weight"], ref_masks[name]["weight"])


def test_registry_builds_it_with_calibration_data():
    from nni_topo_pruner.registry import create_pruner, get_pruner

    assert get_pruner("betti") is BettiPruner and BettiPruner.requires_calibration_data is True
    pruner = create_pruner("betti", _model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                           calibration_loader=_loader(), num_images=N_IMAGES, progress=False)
    _, masks = pruner.compress()
    assert _kept(masks, "conv1").sum() == 4


# ----------------------------------------------------------------------- memory bound

def _collect(reduction, max_dim, size=16):
    model = _model()
    collector = FeatureCollector({"conv1": model.conv1}, 32, max_dim, reduction, seed=0)
    with collector.hooked(), torch.no_grad():
        for x, _ in _loader(n=32, size=size):
            model(x)
    return model, collector.result()["conv1"]


def test_random_projection_bounds_memory_and_keeps_distances():
    model, reduced = _collect("random_projection", 64, size=16)     # 256 -> 64 values per map
    assert reduced.shape == (32, 8, 64) and reduced.dtype == torch.float32
    full = _features(model, _loader(n=32, size=16), "conv1").flatten(2)
    for c in (0, 5):
        d_full = torch.cdist(full[:, c].double(), full[:, c].double())
        d_red = torch.cdist(reduced[:, c].double(), reduced[:, c].double())
        off = ~torch.eye(32, dtype=torch.bool)
        ratio = d_red[off] / d_full[off]
        assert 0.6 < ratio.min() and ratio.max() < 1.4      # Johnson-Lindenstrauss, k=64


def test_avgpool_reduction_and_none():
    model, pooled = _collect("avgpool", 16, size=16)
    assert pooled.shape == (32, 8, 16)
    full = _features(model, _loader(n=32, size=16), "conv1")
    assert torch.allclose(pooled, torch.nn.functional.adaptive_avg_pool2d(full, 4).flatten(2), atol=1e-6)
    _, kept = _collect("none", 16, size=16)
    assert kept.shape == (32, 8, 256)


def test_layer_betti_h0_fast_path_equals_gudhi_path():
    gen = torch.Generator().manual_seed(5)
    cloud = torch.randn(60, 4, 10, generator=gen) * torch.tensor([1.0, 3.0, 0.1, 1.0])[None, :, None]
    cloud[:, 3] = cloud[:, 3].round()        # ties / duplicates
    for ref in ("median", "diameter"):
        fast, tie_fast = layer_betti(cloud, BettiScale(0.6, ref), (0,))
        for c in range(4):
            pts = cloud[:, c].double().numpy()
            assert fast[c, 0] == betti_numbers(pts, dims=(0,), scale=0.6, scale_reference=ref)[0]
        assert np.all((0 <= tie_fast) & (tie_fast < 1))


# ----------------------------------------------------------------------- bad input

def _unchanged_after(error, match, model, config_list, **options):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        BettiPruner(model, config_list, **options)
    assert not any("ModuleWrapper" in type(m).__name__ for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_calibration_data_is_a_clear_error():
    _unchanged_after(ValueError, "calibration_loader", _model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])


def test_non_conv_target_is_a_clear_error():
    _unchanged_after(ValueError, r"fc: .*Linear is not a Conv1d/Conv2d/Conv3d.*op_types=\['Conv2d'\]", _model(),
                     [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}], calibration_loader=_loader())


@pytest.mark.parametrize("options, error, match", [
    (dict(calibration_loader=torch.rand(4, 3, 8, 8)), TypeError, "iterable of batches"),
    (dict(calibration_loader=_loader(), num_images=2), ValueError, "num_images"),
    (dict(calibration_loader=_loader(), scale=-1.0), ValueError, "scale"),
    (dict(calibration_loader=_loader(), scale_reference="mean"), ValueError, "scale_reference"),
    (dict(calibration_loader=_loader(), homology_dims=()), ValueError, "homology_dims"),
    (dict(calibration_loader=_loader(), betti_threshold=-3), ValueError, "betti_threshold"),
    (dict(calibration_loader=_loader(), feature_reduction="pca"), ValueError, "feature_reduction"),
    (dict(calibration_loader=_loader(), max_feature_dim=0), ValueError, "max_feature_dim"),
])
def test_bad_options(options, error, match):
    _unchanged_after(error, match, _model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], **options)


def test_ratio_and_threshold_together_is_an_error():
    _unchanged_after(ValueError, "either betti_threshold or a 'sparse_ratio'", _model(),
                     [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=_loader(), betti_threshold=10)


def test_threshold_with_group_rules_is_refused():
    _unchanged_after(ValueError, "dependency_group_id / global_group_id", _model(),
                     [{"op_types": ["Conv2d"], "dependency_group_id": 1}], calibration_loader=_loader(),
                     betti_threshold=10)


def test_config_sparse_threshold_is_refused():
    _unchanged_after(ValueError, "betti_threshold=T", _model(),
                     [{"op_types": ["Conv2d"], "sparse_threshold": 300.0}], calibration_loader=_loader())


def test_nothing_to_prune_is_an_error():
    _unchanged_after(ValueError, "selects no layer", _model(), [{"op_types": ["Conv2d"]}], calibration_loader=_loader())


def test_bad_config_list_is_a_value_error():
    _unchanged_after(ValueError, "invalid config_list", _model(), [{"op_types": ["Conv2d"], "sparse_ratio": "half"}],
                     calibration_loader=_loader())


def test_bad_batches_and_empty_loader():
    pruner = BettiPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                         calibration_loader=[{"x": torch.rand(2, 3, 8, 8)}], progress=False)
    with pytest.raises(TypeError, match="calibration batches"):
        pruner.compress()
    pruner.unwrap_model()
    pruner = BettiPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=[],
                         progress=False)
    with pytest.raises(ValueError, match="no images"):
        pruner.compress()
    pruner.unwrap_model()


def test_training_aware_compress_is_refused():
    pruner = BettiPruner(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], calibration_loader=_loader(),
                         progress=False)
    with pytest.raises(ValueError, match="one-shot"):
        pruner.compress(max_steps=10)
    pruner.unwrap_model()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_model_with_cpu_batches():
    model = _model().cuda()
    pruner, masks = _prune(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    assert masks["conv1"]["weight"].device.type == "cuda"
    assert _kept(masks, "conv1").sum() == 4 and _kept(masks, "conv2").sum() == 3
    reference, _ = _prune(_model(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    # the same clouds up to float rounding: scores may differ only where a distance sits on the scale
    for name in ("conv1", "conv2"):
        assert np.abs(pruner.scores[name] - reference.scores[name]).max() <= 2
