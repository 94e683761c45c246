"""The matched-FLOPs view of the report and the Scratch-E rows (issue 12)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.core.config import apply_overrides, preset_config, run_key, stable_hash, validate
from benchmarks.core.models import build_vgg16
from benchmarks.grid.report_markdown import flops_section
from benchmarks.run import main
from benchmarks.grid.runner import benchmark_plan, record_key, record_label, record_name
from benchmarks.grid.scratch import reinitialise
from benchmarks.grid.summary import flops_differ, flops_rows, interpolate_at_flops, matched_flops, paired_comparisons, stat
from tests.offline_data import needs_offline_data


def group(pruner, sparsity, flops, bn, final, n=3):
    return {"pruner": pruner, "sparsity": sparsity, "n": n, "flops_ratio": stat([flops] * n),
            "acc_after_bn": stat([bn] * n), "recoverability": stat([final] * n)}


# uniform random pruning: FLOPs 49% / 25% / 9%; "alloc" (non-uniform per-layer ratios) keeps more FLOPs
NON_UNIFORM = [group("random", 0.3, 0.49, 0.60, 0.70), group("alloc", 0.3, 0.55, 0.66, 0.74),
               group("random", 0.5, 0.25, 0.40, 0.65), group("alloc", 0.5, 0.35, 0.50, 0.70),
               group("random", 0.7, 0.09, 0.20, 0.55), group("alloc", 0.7, 0.15, 0.30, 0.60)]


def test_flops_rows_sort_by_flops_left_so_equal_flops_sit_together():
    uniform = [group("l1", 0.5, 0.25, 0.5, 0.7), group("random", 0.3, 0.49, 0.6, 0.7),
               group("random", 0.5, 0.25, 0.4, 0.65), group("l1", 0.3, 0.49, 0.7, 0.75)]
    rows = flops_rows(uniform)
    assert [(row["pruner"], row["sparsity"]) for row in rows] == [("l1", 0.3), ("random", 0.3), ("l1", 0.5),
                                                                  ("random", 0.5)]
    assert rows[0]["acc_after_bn"]["mean"] == pytest.approx(0.7) and rows[0]["flops_ratio"] == pytest.approx(0.49)
    assert not flops_differ(uniform)
    assert flops_differ(NON_UNIFORM)


def test_interpolation_at_the_controls_flops_levels():
    view = interpolate_at_flops(NON_UNIFORM)
    assert view["level_source"] == "random"
    assert view["levels"] == pytest.approx([0.09, 0.25, 0.49])
    # random sits on its own points
    assert view["pruners"]["random"]["recoverability"] == pytest.approx([0.55, 0.65, 0.70])
    alloc = view["pruners"]["alloc"]
    # 0.09 is below alloc's lowest FLOPs (0.15): no extrapolation
    assert alloc["recoverability"][0] is None and alloc["acc_after_bn"][0] is None
    # 0.25 between (0.15, 0.60) and (0.35, 0.70): 0.60 + 0.10 * 0.5; 0.49 between (0.35, 0.70) and (0.55, 0.74)
    assert alloc["recoverability"][1] == pytest.approx(0.65)
    assert alloc["recoverability"][2] == pytest.approx(0.70 + 0.04 * 0.14 / 0.20)
    assert alloc["acc_after_bn"][1] == pytest.approx(0.40)
    # without the control, every group's ratio is a level
    no_control = interpolate_at_flops([g for g in NON_UNIFORM if g["pruner"] == "alloc"])
    assert no_control["levels"] == pytest.approx([0.15, 0.35, 0.55])
    assert interpolate_at_flops(NON_UNIFORM, levels=[0.3])["pruners"]["random"]["acc_after_bn"] == pytest.approx(
        [0.40 + 0.20 * 0.05 / 0.24])


def test_flops_section_interpolates_only_when_flops_differ():
    text = "\n".join(flops_section(matched_flops(NON_UNIFORM), budget=6))
    assert "## Accuracy vs FLOPs left" in text
    assert "| 55.0 | alloc | 0.3 | 3 | 66.00 ± 0.00 | 74.00 ± 0.00 |" in text
    assert "Accuracy after fine-tuning (%) at matched FLOPs:" in text
    assert "| 25.0 | 65.00 | 65.00 |" in text  # random and alloc side by side at random's 25% FLOPs
    assert "| 9.0 | 55.00 | - |" in text
    uniform = [group("l1", 0.5, 0.25, 0.5, 0.7), group("random", 0.5, 0.25, 0.4, 0.65)]
    text = "\n".join(flops_section(matched_flops(uniform), budget=6))
    assert "already compare them at matched FLOPs" in text and "at matched FLOPs:" not in text
    assert flops_section(matched_flops([]), budget=6) == []


# --- Scratch-E ------------------------------------------------------------------------------

def test_reinitialise_draws_fresh_weights_and_statistics():
    model = build_vgg16(width=0.125)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    bn = model.features[1]
    bn.running_mean.fill_(3.0)
    torch.manual_seed(1)
    reinitialise(model)
    after = model.state_dict()
    assert not torch.equal(before["features.0.weight"], after["features.0.weight"])
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    again = build_vgg16(width=0.125)
    torch.manual_seed(1)
    reinitialise(again)
    assert all(torch.equal(value, again.state_dict()[name]) for name, value in after.items())  # seeded


def test_scratch_e_plan_names_and_keys():
    config = validate(apply_overrides(preset_config("smoke"), ["pruners=l1,random,topo=topological",
                                                               "scratch_e=topo,L1", "seeds=0"]))
    assert benchmark_plan(config) == [(0.5, 0, "l1"), (0.5, 0, "scratch_e:l1"), (0.5, 0, "random"),
                                      (0.5, 0, "topo=topological"), (0.5, 0, "scratch_e:topo=topological")]
    assert record_name("scratch_e:topo=topological", 0.5, 0) == "scratch_e-topo_sparsity0.5_seed0"
    assert record_label("scratch_e:topo=topological") == "scratch_e:topo"
    plain = record_key(config, "b", "l1", 0.5, 0)
    assert plain == run_key(config, "b", "l1", 0.5, 0)  # the fine-tuned record's key is untouched
    scratch = record_key(config, "b", "scratch_e:l1", 0.5, 0)
    assert scratch["scratch_e"]["epochs"] == config.baseline_epochs + config.finetune_epochs
    assert stable_hash(scratch) != stable_hash(plain)
    longer = apply_overrides(config, ["baseline_epochs=9"])
    assert record_key(longer, "b", "scratch_e:l1", 0.5, 0)["scratch_e"]["epochs"] == 9 + config.finetune_epochs
    with pytest.raises(ValueError, match="scratch_e names pruner label"):
        validate(apply_overrides(config, ["scratch_e=fpgm"]))


@needs_offline_data
def test_scratch_e_rows_end_to_end(tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "smoke", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--pruners", "l1,random", "--seeds", "0", "--set", "scratch_e=l1", "--set", "train_size=256",
            "--set", "test_size=128", "--set", "baseline_epochs=2", "--set", "finetune_epochs=1",
            "--set", "latency_repeats=2", "--no-progress"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["expected_runs"] == results["finished_runs"] == 3
    runs = {run["pruner"]: run for run in results["runs"]}
    assert list(runs) == ["l1", "scratch_e:l1", "random"]
    pruned, scratch = runs["l1"], runs["scratch_e:l1"]
    # the same architecture as l1's pruned model, trained from scratch for baseline + fine-tuning epochs
    assert scratch["layer_widths"] == pruned["layer_widths"]
    assert (scratch["params"], scratch["flops"]) == (pruned["params"], pruned["flops"])
    assert scratch["scratch_e"] == {"epochs": 3, "lr": results["config"]["baseline_lr"], "source": "l1"}
    assert len(scratch["curve"]) == 4 and scratch["recoverability"] == scratch["curve"][-1]
    assert [row["lr"] for row in scratch["finetune_history"]][0] == results["config"]["baseline_lr"]
    assert scratch["hits_final"].count("1") / 128 == pytest.approx(scratch["recoverability"])
    assert "acc_after_bn" not in scratch
    assert (out / "runs" / "scratch_e-l1_sparsity0.5_seed0.json").is_file()
    paired = [row for row in results["paired"] if row["reference"] == "scratch_e:l1"]
    # random's pruned models have l1's widths (uniform per-layer ratios), so l1's Scratch-E row serves both
    assert runs["random"]["layer_widths"] == pruned["layer_widths"]
    assert [(row["pruner"], row["role"], row["metric"]) for row in paired] == [
        ("l1", "Scratch-E", "recoverability"), ("random", "Scratch-E", "recoverability")]
    report = (out / "report.md").read_text()
    assert report.index("| l1 |") < report.index("| scratch_e:l1 |") < report.index("| random |")
    assert "trained from scratch for 3 epochs" in report and "## Accuracy vs FLOPs left" in report
    # resumes without redoing anything
    assert main(args) == 0
    assert "done: 3 records (3 reused from earlier runs), 0 failed" in (out / "benchmark.log").read_text()


# --- which Scratch-E rows a pruner is compared with --------------------------------------------

def _records(pruner, widths_by_seed, accuracy=0.5, images=40):
    hits = "1" * int(accuracy * images) + "0" * (images - int(accuracy * images))
    return [{"status": "ok", "pruner": pruner, "sparsity": 0.5, "seed": seed, "layer_widths": widths,
             "recoverability": accuracy, "hits_final": hits} for seed, widths in widths_by_seed.items()]


@pytest.mark.parametrize("seed", range(5))
def test_scratch_e_reference_is_the_architecture_not_the_name(seed):
    # property: a pruner is compared with exactly the Scratch-E rows that trained its widths at every
    # shared seed, whatever the labels are called and in whatever order the records come
    rng = np.random.default_rng(seed)
    base = {f"features.{i}": int(rng.integers(4, 64)) for i in range(4)}
    other = {**base, "features.0": base["features.0"] + 1}
    records = (_records("alpha", {0: base, 1: base}) + _records("beta", {0: base, 1: other})
               + _records("random", {0: base, 1: base}, accuracy=0.4)
               + _records("scratch_e:gamma", {0: base, 1: base}, accuracy=0.6))
    records = [records[i] for i in rng.permutation(len(records))]
    rows = [row for row in paired_comparisons(records) if row["role"] == "Scratch-E"]
    assert sorted(row["pruner"] for row in rows) == ["alpha", "random"]  # beta differs at seed 1
    assert all(row["reference"] == "scratch_e:gamma" and row["metric"] == "recoverability" for row in rows)
    assert all(row["difference"] == pytest.approx(-0.1 if row["pruner"] == "alpha" else -0.2) for row in rows)


def test_own_scratch_e_row_counts_even_without_widths():
    # records written before layer_widths existed still pair with their own Scratch-E row by name
    records = _records("l1", {0: None}) + _records("scratch_e:l1", {0: None}) + _records("random", {0: None})
    rows = [(row["pruner"], row["reference"]) for row in paired_comparisons(records) if row["role"] == "Scratch-E"]
    assert rows == [("l1", "scratch_e:l1")]
