"""Issue 15, items 6 (load_masks), 9 and 10: unreadable masks files, report plots of other
pruners, and the atomic writes of masks and reports (modes, no leftover temporary files)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from nni_topo_pruner import load_masks, save_masks
from nni_topo_pruner.fileio import atomic_write, current_umask
from nni_topo_pruner.report import PruningReport, UnitReport, plot_persistence_diagrams


def _masks() -> dict:
    return {"conv": {"weight": torch.ones(16, 3, 3, 3), "bias": torch.ones(16)}}


# ----------------------------------------------------------------------------------------
# item 6: load_masks on files that are not masks files
# ----------------------------------------------------------------------------------------

def _truncated(path):
    save_masks(_masks(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("these are not masks\n")


def _other_object(path):
    torch.save([1, 2, 3], path)


@pytest.mark.parametrize("make", [_truncated, _empty, _text, _other_object])
def test_load_masks_of_a_file_that_is_not_masks_names_it(make, tmp_path):
    path = tmp_path / "masks.pth"
    make(path)
    with pytest.raises(ValueError, match=rf"{path} is not a masks file.*save_masks"):
        load_masks(path)


def test_load_masks_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="masks file not found"):
        load_masks(tmp_path / "nothing.pth")


# ----------------------------------------------------------------------------------------
# item 10: one atomic write: normal modes, no temporary file left on errors
# ----------------------------------------------------------------------------------------

def _report(extra_option=None) -> PruningReport:
    unit = UnitReport(name="conv", members=["conv.weight"], neurons=4, kept=2, kept_channels=[0, 1],
                      salience=[0.1, 0.2, 0.3, 0.4], ga_history=[0.5], initial_distance=0.5,
                      final_distance=0.4, evaluations=3, seconds_analyse=0.0, seconds_ga=0.0)
    options = {"distance": "bottleneck"}
    if extra_option is not None:
        options["extra"] = extra_option
    return PruningReport(options=options, units=[unit])


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask(umask_027):
    assert current_umask() == 0o027


def test_save_masks_and_to_json_honour_the_umask(tmp_path, umask_027):
    save_masks(_masks(), tmp_path / "masks.pth")
    _report().to_json(tmp_path / "report.json")
    assert _mode(tmp_path / "masks.pth") == 0o640
    assert _mode(tmp_path / "report.json") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.pth", "report.json"]


def test_rewriting_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    os.chmod(path, 0o604)
    _report().to_json(path)
    assert _mode(path) == 0o604 and PruningReport.from_json(path).units[0].name == "conv"


def test_to_json_serialisation_error_leaves_no_temporary_file_and_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    _report().to_json(path)
    before = path.read_text()
    with pytest.raises(TypeError):
        _report(extra_option=object()).to_json(path)   # not JSON-serialisable
    assert os.listdir(tmp_path) == ["report.json"] and path.read_text() == before


def test_save_masks_error_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_masks(_masks(), tmp_path / "masks.pth")
    assert os.listdir(tmp_path) == []


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass


# ----------------------------------------------------------------------------------------
# item 9: persistence diagrams need a TopologicalPruner
# ----------------------------------------------------------------------------------------

def test_plot_persistence_diagrams_of_an_nni_pruner_says_it_needs_a_topological_pruner(small_cnn, tmp_path):
    from nni.compression.pruning import L1NormPruner

    pruner = L1NormPruner(small_cnn, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    pruner.compress()
    with pytest.raises(TypeError, match=r"L1NormPruner.*TopologicalPruner"):
        plot_persistence_diagrams(pruner, "conv1", tmp_path / "plot.png")
    with pytest.raises(TypeError, match=r"TopologicalPruner"):
        plot_persistence_diagrams({"conv1": np.zeros(3)}, "conv1", tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()
