"""benchmarks.bmvc.betti_threshold helpers: matched per-layer counts for the controls, the report."""
from __future__ import annotations

import pytest
import torch
from nni.compression.pruning import L1NormPruner

from benchmarks.bmvc.betti_threshold import _kept_counts, _matched_config_list, render


@pytest.mark.parametrize("sizes, kept", [
    ({"0": 8, "2": 6}, {"0": 5, "2": 1}),
    ({"0": 8, "2": 6}, {"0": 8, "2": 3}),
    ({"0": 64, "2": 6}, {"0": 1, "2": 6}),
])
def test_matched_config_list_prunes_exactly_the_same_counts(sizes, kept):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, sizes["0"], 3), torch.nn.ReLU(), torch.nn.Conv2d(sizes["0"], sizes["2"], 3))
    config_list = _matched_config_list(kept, sizes)
    assert all(entry["op_names"][0] in sizes for entry in config_list)
    pruner = L1NormPruner(model, config_list)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    got = {name: _kept_counts(masks).get(name, size) for name, size in sizes.items()}
    assert got == kept


def test_render_reports_emptied_layers_and_means():
    sizes = {"a": 4, "b": 4}
    records = {
        "betti|T300|seed0": dict(method="betti", threshold=300.0, seed=0, status="ok", kept={"a": 2, "b": 4},
                                 sizes=sizes, acc_after_pruning=0.5, acc_masked=0.45, params=100, finetune_curve=[0.6],
                                 scores={"a": dict(n=4, min=1, median=250, max=400, above=2),
                                         "b": dict(n=4, min=1, median=2, max=3, above=0)}, images_used=512),
        "betti|T300|seed1": dict(method="betti", threshold=300.0, seed=1, status="emptied", kept={"a": 0, "b": 4},
                                 sizes=sizes, acc_masked=0.15),
    }
    results = {"args": dict(thresholds=[300.0], num_images=512, scale=0.5, scale_reference="median",
                            finetune_epochs=1),
               "baseline": dict(width=0.25, test_acc=0.7, params=200), "command": "cmd", "machine": {},
               "git": {}, "records": records}
    text = render(results)
    assert "| 300 | betti | 3/8 (38%) | 1 | 100 | 0.5000 | 0.3000 ± 0.2121 | 0.6000 | 2 |" in text
    assert "| a | 4 | 1 | 250 | 400 | 2 |" in text
