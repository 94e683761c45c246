"""End-to-end benchmark runs, checked by content (not only by file existence).

The fast test runs a cut-down smoke configuration (two pruners, two seeds, one epoch each);
the slow one runs the real ``smoke`` preset with every default pruner, as CI's benchmark step.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Sequence

import matplotlib.image
import pytest

from benchmarks.core.config import DEFAULT_PRUNERS, preset_config
from benchmarks.core.data import DEFAULT_NPZ
from benchmarks.run import main
from tests.offline_data import needs_offline_data

pytestmark = needs_offline_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TINY = ["--set", "train_size=256", "--set", "test_size=128", "--set", "baseline_epochs=1",
        "--set", "finetune_epochs=1", "--set", "latency_repeats=2", "--no-progress"]


def check_outputs(out_dir: Path, pruners: Sequence[str], seeds: Sequence[int], sparsities: Sequence[float],
                  finetune_epochs: int) -> dict:
    """Assert the content of a finished benchmark directory; returns results.json."""
    results = json.loads((out_dir / "results.json").read_text())
    expected = len(pruners) * len(seeds) * len(sparsities)
    assert results["schema_version"] == 1
    assert results["status"] == "complete"
    assert results["expected_runs"] == results["finished_runs"] == expected
    assert results["failures"] == []
    assert results["command_line"][:3] == ["python", "-m", "benchmarks.run"]
    assert results["config"]["seeds"] == list(seeds)
    assert results["packages"]["torch"] and results["packages"]["nni"] == "3.0"
    assert results["machine"]["cpu_count"] >= 1
    assert results["data"]["file_sha256"] == hashlib.sha256(DEFAULT_NPZ.read_bytes()).hexdigest()
    commit = results["git"]["commit"]
    assert commit is None or len(commit) == 40

    baseline = results["baseline"]
    assert 0.0 <= baseline["test_acc"] <= 1.0
    assert baseline["params"] > 0 and baseline["flops"] > 0 and baseline["latency"]["median_ms"] > 0
    assert len(baseline["history"]) == results["config"]["baseline_epochs"]

    runs = results["runs"]
    assert sorted((r["pruner"], r["seed"], r["sparsity"]) for r in runs) == sorted(
        (p, s, sp) for p in pruners for s in seeds for sp in sparsities)
    for run in runs:
        assert run["status"] == "ok"
        # each record says which code made it (a grid made over several commits can tell them apart)
        assert run["code"] == {"commit": commit, "dirty": results["git"]["dirty"]}
        assert 0 < run["params"] < baseline["params"]
        assert 0 < run["flops"] < baseline["flops"]
        assert run["params_ratio"] == pytest.approx(run["params"] / baseline["params"])
        assert len(run["curve"]) == finetune_epochs + 1
        assert len(run["finetune_history"]) == finetune_epochs
        assert all(0.0 <= value <= 1.0 for value in run["curve"])
        # fine-tuning starts from the BN-re-estimated model; per-image results agree with the accuracies
        assert run["bn_images"] == results["config"]["bn_batches"] * results["config"]["batch_size"]
        assert run["curve"][0] == run["acc_after_bn"]
        for accuracy, hits in (("acc_after_pruning", "hits_after_pruning"), ("acc_after_bn", "hits_after_bn"),
                               ("recoverability", "hits_final")):
            assert len(run[hits]) == results["data"]["test_images"] and set(run[hits]) <= {"0", "1"}
            assert run[hits].count("1") / len(run[hits]) == pytest.approx(run[accuracy])
        assert run["recoverability"] == run["curve"][-1]
        threshold = baseline["test_acc"] - results["config"]["convergence_tolerance"] - 1e-12
        reached = [epoch for epoch, acc in enumerate(run["curve"]) if acc >= threshold]
        assert run["convergence_epoch"] == (reached[0] if reached else None)
        assert run["latency"]["median_ms"] > 0 and run["pruning_seconds"] >= 0
        # the speed-up is a ratio measured in the record's own process
        assert run["unpruned_latency"]["median_ms"] > 0
        assert run["latency_ratio"] == run["latency"]["median_ms"] / run["unpruned_latency"]["median_ms"]
        assert (out_dir / "runs" / f"{run['pruner']}_sparsity{run['sparsity']:g}_seed{run['seed']}.json").is_file()

    paired = [row for row in results["paired"] if row["reference"] == "random" and row["metric"] == "acc_after_bn"]
    assert {row["pruner"] for row in paired} == set(pruners) - {"random"}
    for row in paired:
        assert row["ci95"][0] <= row["difference"] <= row["ci95"][1]
        assert row["verdict"] in ("beats", "worse", "within noise")
    groups = {(g["pruner"], g["sparsity"]): g for g in results["summary"]}
    assert set(groups) == {(p, sp) for p in pruners for sp in sparsities}
    for group in groups.values():
        assert group["n"] == len(seeds)
        assert len(group["curve"]) == finetune_epochs + 1
        if finetune_epochs:
            assert group["last_epoch_gain"]["values"] == pytest.approx(
                [r["curve"][-1] - r["curve"][-2] for r in results["runs"]
                 if r["status"] == "ok" and (r["pruner"], r["sparsity"]) == (group["pruner"], group["sparsity"])])
        if len(seeds) > 1:
            assert group["recoverability"]["std"] is not None
    if "random" in pruners:
        assert {c["pruner"] for c in results["comparisons"]} == set(pruners) - {"random"}

    report = (out_dir / "report.md").read_text()
    for pruner in pruners:
        assert f"| {pruner} |" in report
    for sparsity in sparsities:
        assert f"## Sparse ratio {sparsity:g}" in report
    assert "random control" in report
    assert "x unpruned, same process" in report and "(x " in report  # the latency column's same-process ratio
    assert "Every pruner against every other" in report or len(pruners) < 2
    assert " ± " in report
    assert ("| last epoch added (points) |" in report) == (finetune_epochs > 0)
    for name in ("recovery.png", "accuracy_vs_flops.png"):
        data = (out_dir / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(out_dir / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert f"]({name})" in report

    leftovers: List[Path] = [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    from benchmarks.core.store import process_lock

    with process_lock(out_dir):  # released: a new run may start
        pass
    assert not any((out_dir / "work").glob("*/*")) if (out_dir / "work").exists() else True
    return results


def test_tiny_benchmark_end_to_end(tmp_path):
    out = tmp_path / "out"
    code = main(["--preset", "smoke", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--pruners", "l1,random", "--seeds", "0,1", *TINY])
    assert code == 0
    results = check_outputs(out, ["l1", "random"], [0, 1], [0.5], finetune_epochs=1)
    assert results["data"]["train_images"] == 256 and results["data"]["test_images"] == 128
    assert results["baseline"]["cached"] is False


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    """The real smoke preset: every default pruner, as CI runs it (under 3 minutes here)."""
    out = tmp_path / "smoke"
    code = main(["--preset", "smoke", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0, (out / "report.md").read_text()
    smoke = preset_config("smoke")
    check_outputs(out, DEFAULT_PRUNERS, smoke.seeds, smoke.sparsities, smoke.finetune_epochs)
