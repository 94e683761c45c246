"""Pruners by name and compression configs (JSON / YAML)."""
from __future__ import annotations

import json

import pytest
import torch
from nni.compression.pruning import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner

from nni_topo_pruner import registry
from nni_topo_pruner.random_pruner import RandomPruner
from nni_topo_pruner.sparsity_allocator import channel_keep_mask


@pytest.mark.parametrize("name, cls", [("l1", L1NormPruner), ("L2", L2NormPruner), ("fpgm", FPGMPruner),
                                       ("level", LevelPruner), ("random", RandomPruner), ("l1norm", L1NormPruner)])
def test_get_pruner_by_name(name, cls):
    assert registry.get_pruner(name) is cls


def test_topological_registered_by_name_and_entry_point():
    from importlib.metadata import entry_points

    from nni_topo_pruner import TopologicalPruner
    assert registry.get_pruner("topological") is TopologicalPruner
    declared = {ep.name: ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert "topological" in declared, "pyproject declares the entry point; reinstall the package if this fails"
    assert declared["topological"].load() is TopologicalPruner


def test_third_party_entry_points_are_loaded_by_name(monkeypatch):
    from importlib.metadata import EntryPoint

    plugin = EntryPoint(name="ThirdParty", value="nni_topo_pruner.random_pruner:RandomPruner",
                        group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [plugin] if group == registry.ENTRY_POINT_GROUP else [])
    assert "thirdparty" in registry.available_pruners()
    assert registry.get_pruner("THIRDPARTY") is RandomPruner
    with pytest.raises(ValueError, match="already registered"):
        registry.register_pruner("thirdparty", L1NormPruner)


def test_unknown_pruner_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown pruner 'l3'.*fpgm.*topological"):
        registry.get_pruner("l3")


def test_register_pruner_at_run_time():
    class MyPruner(L1NormPruner):
        pass

    registry.register_pruner("mine-test", MyPruner)
    try:
        assert registry.get_pruner("MINE-TEST") is MyPruner
        with pytest.raises(ValueError, match="already registered"):
            registry.register_pruner("mine-test", MyPruner)
    finally:
        registry._RUNTIME.pop("mine-test")


def test_random_pruner_is_seeded_and_exact(small_cnn):
    import copy
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    masks = []
    for seed in (0, 0, 1):
        _, m = RandomPruner(copy.deepcopy(small_cnn), config, seed=seed).compress()
        masks.append(m)
    assert torch.equal(masks[0]["conv2"]["weight"], masks[1]["conv2"]["weight"])
    assert not torch.equal(masks[0]["conv2"]["weight"], masks[2]["conv2"]["weight"])
    assert int(channel_keep_mask(masks[2]["conv2"]["weight"]).sum()) == 12


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_compress_from_config_file(small_cnn, tmp_path, suffix):
    config = {"pruner": "topological", "options": {"seed": 0, "population_size": 6, "generations": 2,
                                                    "progress": False},
              "config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
    path = tmp_path / f"compression{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(config))
    else:
        import yaml
        path.write_text(yaml.safe_dump(config))
    dummy = torch.rand(1, 3, 8, 8)
    model, masks = registry.compress_from_config(small_cnn, path, dummy)
    assert [model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels] == [8, 12, 5]
    assert model(dummy).shape == (1, 5)
    assert set(masks) == {"conv1", "conv2", "conv3"}


@pytest.mark.parametrize("config, match", [
    ({"pruner": "l1", "config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], "option": {}}, "unknown .*'option'"),
    ({"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, "missing the required key 'pruner'"),
    ({"pruner": "l1", "config_list": []}, "config_list' must be a non-empty list"),
    ({"pruner": "nope", "config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, "unknown pruner 'nope'"),
    ({"pruner": "l1", "options": [1], "config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}, "'options' must be a mapping"),
])
def test_bad_compression_config(config, match):
    with pytest.raises(ValueError, match=match):
        registry.load_compression_config(config)


def test_compression_config_bad_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        registry.load_compression_config(tmp_path / "missing.yaml")
    (tmp_path / "c.txt").write_text("{}")
    with pytest.raises(ValueError, match=r"\.json, \.yaml or \.yml"):
        registry.load_compression_config(tmp_path / "c.txt")


def test_create_pruner_passes_calibration_only_to_data_pruners(small_cnn):
    class NeedsData(L1NormPruner):
        requires_calibration_data = True

        def __init__(self, model, config_list, *, calibration_loader):
            if calibration_loader is None:
                raise ValueError("calibration_loader is required")
            self.loader = calibration_loader
            super().__init__(model, config_list)

    registry.register_pruner("needs-data-test", NeedsData)
    try:
        loader = [torch.rand(2, 3, 8, 8)]
        pruner = registry.create_pruner("needs-data-test", small_cnn, [{"op_names": ["conv1"], "sparse_ratio": 0.5}],
                                        calibration_loader=loader)
        assert pruner.loader is loader
        pruner.unwrap_model()
        l1 = registry.create_pruner("l1", small_cnn, [{"op_names": ["conv1"], "sparse_ratio": 0.5}],
                                    calibration_loader=loader)
        assert isinstance(l1, L1NormPruner)
    finally:
        registry._RUNTIME.pop("needs-data-test")


# issue 26, items 20 and 23 ------------------------------------------------------------------

@pytest.mark.parametrize(("suffix", "text", "kind"), [(".yaml", "pruner: l1\nconfig_list: [{op_types: [Conv2d]\n", "YAML"),
                                                      (".json", '{"pruner": "l1", "config_list": [}', "JSON")])
def test_compression_config_parse_error_names_the_file(tmp_path, suffix, text, kind):
    path = tmp_path / f"broken{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"compression config .*broken\{suffix} is not valid {kind}"):
        registry.load_compression_config(path)


def test_register_pruner_refuses_a_class_without_compress():
    class NotAPruner:
        def __init__(self, model, config_list):
            pass

    with pytest.raises(TypeError, match=r"NotAPruner has no compress\(\) method"):
        registry.register_pruner("not-a-pruner-test", NotAPruner)
    assert "not-a-pruner-test" not in registry.available_pruners()
