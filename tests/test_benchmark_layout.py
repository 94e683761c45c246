"""The benchmarks' sub-packages (issue 28): what ran before the move still resumes after it.

Record keys hash the configuration only (their pinned values are in
tests/test_benchmark_backends.py and tests/test_committed_results.py); a record's half-done
``pruned.pt`` pickles the pruned model under its class's module path, which the move changed."""
from __future__ import annotations

import importlib
import io

import pytest
import torch

from benchmarks.core.models import build_vgg16
from benchmarks.core.store import MOVED_MODULES, load_torch_or_none


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_every_moved_module_is_at_its_new_path_only(old, new):
    assert importlib.import_module(new).__name__ == new
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_a_pruned_model_pickled_before_the_move_still_loads(tmp_path):
    model = build_vgg16(width=0.125)
    buffer = io.BytesIO()
    torch.save({"model": model, "measurements": {"params": 1}}, buffer, _use_new_zipfile_serialization=False)
    before = buffer.getvalue().replace(b"benchmarks.core.models", b"benchmarks.models")  # as written by the old tree
    assert b"benchmarks.core.models" not in before
    path = tmp_path / "pruned.pt"
    path.write_bytes(before)
    stage = load_torch_or_none(path)
    assert type(stage["model"]).__module__ == "benchmarks.core.models" and stage["measurements"] == {"params": 1}
    assert all(torch.equal(a, b) for a, b in zip(stage["model"].state_dict().values(), model.state_dict().values()))
    assert path.exists()  # read, not quarantined


def test_record_keys_depend_on_the_configuration_never_on_module_paths():
    """The grid's record keys (one file per record under runs/) and the framework's record hashes
    hold no module path, so the move left every stored record resumable."""
    import dataclasses
    import json

    from benchmarks.core.config import apply_overrides, preset_config, stable_hash
    from benchmarks.core.framework import Experiment, record_hash
    from benchmarks.grid.runner import benchmark_plan, record_key

    config = apply_overrides(preset_config("smoke"), ["scratch_e=topological"])
    keys = [record_key(config, "b", pruner, sparsity, seed) for sparsity, seed, pruner in benchmark_plan(config)]
    assert any("scratch_e" in key for key in keys)
    assert not any("benchmarks" in json.dumps(key) for key in keys)
    assert stable_hash(record_key(preset_config("smoke"), "b", "l1", 0.5, 0)) == "7b0c6e36beeb008b"  # as before

    @dataclasses.dataclass
    class Config:
        n: int = 1

    def experiment(module):
        return type("E", (Experiment,), {"module": module, "presets": {"smoke": Config()}, "plan": lambda self: [],
                                         "run_record": lambda self, *a: {}, "render": lambda self, r: ""})()

    old, new = experiment("benchmarks.convergence_study"), experiment("benchmarks.bmvc.convergence_study")
    assert record_hash(old, "k", {"n": 1}) == record_hash(new, "k", {"n": 1})
