"""benchmarks.grid.compare_runs (two output directories, image by image) and the benchmark's
``allocation`` setting."""
from __future__ import annotations

import json

import pytest

from benchmarks.grid.compare_runs import CompareInputError, compare_runs, main, render_rows
from benchmarks.core.config import apply_overrides, preset_config, run_key, validate


def results(runs, key_hash="b1", images=100):
    return {"baseline": {"key_hash": key_hash}, "data": {"test_images": images}, "runs": runs}


def run(pruner, seed, correct, sparsity=0.5, flops=0.25, images=100):
    return {"status": "ok", "pruner": pruner, "seed": seed, "sparsity": sparsity, "flops_ratio": flops,
            "acc_after_bn": correct / images, "hits_after_bn": "1" * correct + "0" * (images - correct)}


def test_same_pruner_is_paired_by_seed_and_the_verdict_follows_the_images():
    candidate = results([run("l1", s, 70, flops=0.20) for s in (0, 1)] + [run("random", s, 50) for s in (0, 1)])
    reference = results([run("l1", s, 40) for s in (0, 1)] + [run("random", s, 50) for s in (0, 1)]
                        + [run("l2", s, 45) for s in (0, 1)])
    rows = compare_runs(candidate, reference)
    by = {(r["pruner"], r["reference"]): r for r in rows}
    assert by[("l1", "l1")]["paired"]["verdict"] == "beats"
    assert by[("l1", "l1")]["paired"]["difference"] == pytest.approx(0.30)
    assert by[("l1", "l1")]["flops_ratio"] == pytest.approx(0.20)
    assert by[("l1", "l1")]["reference_flops_ratio"] == pytest.approx(0.25)
    assert by[("random", "random")]["paired"]["verdict"] == "within noise"
    best = [r for r in compare_runs(candidate, reference, against="best-norm") if r["pruner"] == "l1"]
    assert [r["reference"] for r in best] == ["l2"]  # the best of L1/L2/FPGM in the reference run
    assert best[0]["paired"]["verdict"] == "beats"
    assert "| 0.5 | 0,1 | l1 | 20.00% | 70.00 | l1 (same pruner) | 25.00% | 40.00 | +30.00" in render_rows(rows)


def test_accuracies_are_over_the_seeds_the_difference_pairs():
    """A reference with more seeds than the candidate: the accuracy beside the difference is the
    mean over the shared seed only, so the columns and the difference tell the same story."""
    candidate = results([run("l1", 0, 70)])
    reference = results([run("l1", 0, 60), run("l1", 1, 20), run("l1", 2, 20)])
    [row] = compare_runs(candidate, reference)
    assert row["seeds"] == [0]
    assert row["reference_accuracy"] == pytest.approx(0.60)
    assert row["accuracy"] - row["reference_accuracy"] == pytest.approx(row["paired"]["difference"])
    assert "| 0.5 | 0 | l1 | 25.00% | 70.00 | l1 (same pruner) | 25.00% | 60.00 | +10.00" in render_rows([row])


def test_runs_of_different_baselines_or_image_sets_are_refused():
    with pytest.raises(CompareInputError, match="different baselines"):
        compare_runs(results([], key_hash="a"), results([], key_hash="b"))
    with pytest.raises(CompareInputError, match="different numbers of test images"):
        compare_runs(results([], images=10), results([], images=20))
    with pytest.raises(CompareInputError, match="metric must be one of"):
        compare_runs(results([]), results([]), metric="loss")


def test_cli_writes_the_table_and_exits_2_on_missing_input(tmp_path, capsys):
    for name, correct in (("a", 80), ("b", 60)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results([run("l1", 0, correct)])))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "t.md")]) == 0
    assert "+20.00" in (tmp_path / "t.md").read_text()
    assert main([str(tmp_path / "missing"), str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "b" / "results.json").write_text("{")
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2


def test_allocation_is_validated_and_enters_the_run_key_only_when_not_uniform():
    config = preset_config("smoke")
    uniform_key = run_key(config, "h", "l1", 0.5, 0)
    assert "allocation" not in uniform_key  # records made before the setting existed keep their keys
    topological = apply_overrides(config, ["allocation=topological"])
    assert run_key(topological, "h", "l1", 0.5, 0)["allocation"] == "topological"
    with pytest.raises(ValueError, match="allocation must be one of"):
        validate(apply_overrides(config, ["allocation=greedy"]))


def test_same_as_maps_a_label_to_the_references_variant_label(tmp_path, capsys):
    candidate = results([run("topological", 0, 70)])
    reference = results([run("topo_w1_zero", 0, 60)])
    rows = compare_runs(candidate, reference, same_as={"topological": "topo_w1_zero"})
    assert [(r["pruner"], r["reference"]) for r in rows] == [("topological", "topo_w1_zero")]
    assert compare_runs(candidate, reference) == []  # no same-label pruner in the reference
    for name, data in (("a", candidate), ("b", reference)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--same-as", "topological"]) == 2
    assert "LABEL=REFERENCE_LABEL" in capsys.readouterr().err


def test_report_shows_fine_tuning_rows_only_when_there_was_fine_tuning():
    from benchmarks.grid.report_markdown import _paired_table

    rows = [{"pruner": "l1", "reference": "random", "role": "control", "sparsity": 0.5, "metric": metric,
             "difference": 0.1, "ci95": [0.05, 0.15], "verdict": "beats",
             "per_seed": [{"seed": 0, "difference": 0.1, "mcnemar_p": 0.01}]}
            for metric in ("acc_after_pruning", "acc_after_bn", "recoverability")]
    with_ft = "\n".join(_paired_table(rows, 0.5))
    without_ft = "\n".join(_paired_table(rows, 0.5, finetuned=False))
    assert "after fine-tuning" in with_ft and "after BN re-estimation" in with_ft
    assert "after fine-tuning" not in without_ft and "after BN re-estimation" in without_ft
    assert "right after pruning" not in with_ft


@pytest.mark.parametrize("content", [
    [1, 2],  # valid JSON, not an object
    {"experiment": "benchmarks.bmvc.convergence_study", "records": {}},  # another experiment's results
    {"schema_version": 1, "config": {}},  # a foreign object: compared to nothing, it gave an empty table
])
def test_a_directory_that_is_not_a_benchmark_output_is_refused(tmp_path, capsys, content):
    """Issue 26, item 14: AttributeError on a list or another experiment's results; a foreign dict
    gave an empty table and exit 0."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(results([run("l1", 0, 80)])))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(content))
    for argv in ([str(tmp_path / "other"), str(tmp_path / "a")], [str(tmp_path / "a"), str(tmp_path / "other")]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        [line] = captured.err.strip().splitlines()
        assert "not a benchmarks.run output directory" in line and str(tmp_path / "other") in line


def test_the_committed_convergence_study_is_not_a_benchmark_output(capsys):
    from pathlib import Path

    study = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "convergence" / "cpu"
    assert main([str(study), str(study)]) == 2
    assert "not a benchmarks.run output directory" in capsys.readouterr().err


def test_an_unwritable_out_file_is_one_line_and_exit_2(tmp_path, capsys):
    """Issue 26, item 12: `--out` into a directory that cannot take the file raised OSError."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results([run("l1", 0, 80)])))
    target = tmp_path / "a"  # a directory where the file belongs: the same refusal as a read-only path
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(target)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--out" in line and str(target) in line
    (tmp_path / "file").write_text("x")
    missing_parent = tmp_path / "file" / "t.md"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(missing_parent)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--out" in line and str(missing_parent) in line
