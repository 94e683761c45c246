"""benchmarks.studies.ga_departure: the per-layer table of where the GA takes the choice."""
from __future__ import annotations

import pytest
import torch

from benchmarks.core.models import build_vgg16
from benchmarks.studies.ga_departure import departure_rows, main, markdown, top_k


def test_top_k_takes_the_largest_scores():
    assert top_k([0.1, 3.0, 2.0, 3.0], 2) == {1, 3}


def test_every_conv_layer_gets_a_row_whose_fractions_and_distances_are_consistent():
    torch.manual_seed(0)
    rows = departure_rows(build_vgg16(width=0.125).eval(), 0.5, seed=0)
    assert len(rows) == 13
    for row in rows:
        assert row["kept"] == row["filters"] - int(row["filters"] * 0.5)
        for key in ("start_shared_with_l2", "shared_with_start", "shared_with_l2"):
            assert 0.0 <= row[key] <= 1.0
        # the GA starts from the salience-ranked subset and keeps the best it finds; nothing beats the bound
        assert row["lower_bound"] <= row["final_distance"] * (1 + 1e-9) + 1e-12
        assert row["final_distance"] <= row["start_distance"] * (1 + 1e-9) + 1e-12
    text = markdown(rows, "header")
    assert text.count("\n| features.") == 13


def test_a_missing_weights_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2 and "--weights" in capsys.readouterr().err
