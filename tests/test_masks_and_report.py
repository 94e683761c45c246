"""Masks in NNI's file format; the pruner's report (JSON) and diagram plots (PNG)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from nni.compression.speedup import ModelSpeedup

from nni_topo_pruner import TopologicalPruner, load_masks, save_masks
from nni_topo_pruner.report import PruningReport, plot_persistence_diagrams

FAST = dict(population_size=8, generations=4, progress=False)


@pytest.fixture
def pruned(small_cnn):
    model = copy.deepcopy(small_cnn)
    pruner = TopologicalPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], seed=0, **FAST)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return model, masks, pruner


def test_masks_round_trip_and_nni_loads_the_file(pruned, tmp_path):
    model, masks, _ = pruned
    path = tmp_path / "masks.pth"
    save_masks(masks, path)
    loaded = load_masks(path)
    assert set(loaded) == set(masks)
    for module in masks:
        for target in masks[module]:
            assert torch.equal(loaded[module][target], masks[module][target])
    dummy = torch.rand(1, 3, 8, 8)
    ModelSpeedup(model, dummy, str(path)).speedup_model()  # NNI reads our file as its own
    assert model.conv2.out_channels == 12


def test_masks_io_rejects_garbage(tmp_path):
    with pytest.raises(ValueError, match="must be a mapping"):
        save_masks([1, 2], tmp_path / "x.pth")
    with pytest.raises(ValueError, match="conv.weight is a str"):
        save_masks({"conv": {"weight": "ones"}}, tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError):
        load_masks(tmp_path / "missing.pth")


def test_report_contents_and_json_round_trip(pruned, tmp_path):
    _, masks, pruner = pruned
    report = pruner.report
    assert [u.name for u in report.units] == ["conv1", "conv2", "conv3"]
    conv2 = report.unit("conv2")
    assert conv2.neurons == 24 and conv2.kept == 12 and len(conv2.kept_channels) == 12
    assert len(conv2.salience) == 24 and all(s >= 0 for s in conv2.salience)
    assert len(conv2.ga_history) == FAST["generations"] + 1
    assert all(b <= a + 1e-12 for a, b in zip(conv2.ga_history, conv2.ga_history[1:])), "elitism: never worse"
    assert conv2.final_distance <= conv2.initial_distance + 1e-12
    assert conv2.ga_distance == pytest.approx(conv2.ga_history[-1])  # the GA's own best, before the polish
    assert conv2.lower_bound - 1e-12 <= conv2.final_distance <= conv2.ga_distance + 1e-12
    assert isinstance(conv2.converged, bool) and conv2.polish_swaps >= 0
    # H0 of the anchored cloud (the zero vector added, the default): n + 1 points, n finite bars
    assert report.options["zero_anchor"] is True
    assert len(conv2.diagram_before["0"]) == 24 and len(conv2.diagram_after["0"]) == 12
    path = tmp_path / "report.json"
    report.to_json(path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and raw["options"]["distance"] == "wasserstein"  # the default
    again = PruningReport.from_json(path)
    assert again.unit("conv2").kept_channels == conv2.kept_channels
    assert again.unit("conv2").lower_bound == conv2.lower_bound and again.unit("conv2").converged == conv2.converged
    assert "conv2" in report.summary()


def test_report_final_distance_is_the_kept_subsets_distance(pruned):
    from nni_topo_pruner.topology import diagram_distance

    _, _, pruner = pruned
    unit = pruner.report.unit("conv3")
    before = {int(k): np.asarray(v).reshape(-1, 2) for k, v in unit.diagram_before.items()}
    after = {int(k): np.asarray(v).reshape(-1, 2) for k, v in unit.diagram_after.items()}
    distance = pruner.report.options["distance"]
    assert diagram_distance(before, after, distance) == pytest.approx(unit.final_distance, abs=1e-9)


def test_plot_persistence_diagrams_png(pruned, tmp_path):
    _, _, pruner = pruned
    path = plot_persistence_diagrams(pruner, "conv2", tmp_path / "conv2.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(KeyError, match="no pruning unit or layer named 'fc9'"):
        plot_persistence_diagrams(pruner, "fc9", tmp_path / "x.png")
