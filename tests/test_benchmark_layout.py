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
