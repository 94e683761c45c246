"""The benchmark's command line: presets, overrides and clear errors for bad input."""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from benchmarks.core.config import BenchmarkConfig, PRESETS
from benchmarks.run import build_parser, main
from tests.offline_data import needs_offline_data

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "vgg16_cifar10_cpu" / "results.json"


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_preset_is_rejected_with_the_choices(capsys):
    message = _error(capsys, ["--preset", "huge"])
    assert "invalid choice: 'huge'" in message and "smoke" in message and "paper" in message


def test_preset_is_required(capsys):
    assert "--preset" in _error(capsys, [])


def test_unknown_pruner_names_the_known_ones(capsys):
    message = _error(capsys, ["--preset", "smoke", "--pruners", "l1,nosuchpruner", "--show-config"])
    assert "unknown pruner 'nosuchpruner'" in message
    assert "fpgm" in message and "topological" in message and "random" in message


def test_unknown_config_key_names_the_known_ones(capsys):
    message = _error(capsys, ["--preset", "smoke", "--set", "finetune_epoch=3", "--show-config"])
    assert "unknown config key 'finetune_epoch'" in message and "finetune_epochs" in message


@pytest.mark.parametrize("assignment, fragment", [
    ("finetune_epochs=three", "expected int"),
    ("finetune_epochs=-1", "finetune_epochs must be an int >= 0"),
    ("sparsities=0.5,1.2", "strictly between 0 and 1"),
    ("seeds=0,0", "seeds lists a seed twice"),
    ("width=0", "width must be a positive finite number"),
    ("baseline_lr=inf", "baseline_lr must be a positive finite number"),
    ("finetune_lr=nan", "finetune_lr must be a positive finite number"),
    ("weight_decay=inf", "weight_decay must be a finite number >= 0"),
    ("bn_batches=-1", "bn_batches must be an int >= 0"),
    ("device=tpu", "device must be"),
    ("pruner_options={not json}", "expected a JSON object"),
    ("pruner_options={\"fpgm\": {}}", "not in pruners"),
    ("finetune_epochs", "expects key=value"),
])
def test_bad_values_are_rejected_naming_the_key(capsys, assignment, fragment):
    message = _error(capsys, ["--preset", "smoke", "--pruners", "l1,random", "--set", assignment, "--show-config"])
    assert fragment in message


def test_show_config_applies_preset_then_set_then_flags(capsys):
    assert main(["--preset", "cpu", "--set", "finetune_epochs=3", "--set", "seeds=4,5", "--seeds", "7,8",
                 "--sparsities", "0.3,0.7", "--pruners", "L1,random", "--data", "x.npz",
                 "--set", 'pruner_options={"random": {"seed": 3}}', "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["finetune_epochs"] == 3
    assert shown["seeds"] == [7, 8]  # the dedicated flag wins over --set
    assert shown["sparsities"] == [0.3, 0.7]
    assert shown["pruners"] == ["L1", "random"]
    assert shown["data"] == "x.npz"
    assert shown["pruner_options"] == {"random": {"seed": 3}}
    assert shown["width"] == PRESETS["cpu"]["width"]


def test_missing_data_file_is_a_usage_error(tmp_path, capsys):
    code = main(["--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--data", str(tmp_path / "none.npz"),
                 "--pruners", "l1", "--no-progress"])
    assert code == 2
    message = capsys.readouterr().err
    assert "none.npz" in message and "cifar10:ROOT" in message


def test_help_documents_every_config_key():
    text = build_parser().format_help()
    for spec in dataclasses.fields(BenchmarkConfig):
        assert f"  {spec.name}: {spec.metadata['help']}" in text
    for flag in ("--preset", "--out-dir", "--data", "--pruners", "--sparsities", "--seeds", "--set",
                 "--baseline-only", "--show-config"):
        assert flag in text


def test_every_preset_is_valid():
    from benchmarks.core.config import preset_config, validate

    for name in PRESETS:
        config = preset_config(name)
        assert validate(config) is config  # validate raises ValueError naming any invalid field


@needs_offline_data
def test_truncated_npz_and_unreachable_dataset_are_usage_errors(tmp_path, capsys, monkeypatch):
    from benchmarks.core.data import DEFAULT_NPZ

    truncated = tmp_path / "half.npz"
    truncated.write_bytes(DEFAULT_NPZ.read_bytes()[:100_000])
    base = ["--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--pruners", "l1", "--no-progress"]
    assert main([*base, "--data", str(truncated)]) == 2
    assert "half.npz" in capsys.readouterr().err

    import torchvision.datasets

    def offline(*args, **kwargs):  # what torchvision raises where no dataset host can be reached
        import urllib.error

        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    assert main([*base, "--data", f"cifar10:{tmp_path / 'cifar'}"]) == 2
    message = capsys.readouterr().err
    assert "cifar10:" in message and "URLError" in message


# ------------------------------------------------------------- --report-only refusals, unwritable outputs

def _stored_out_dir(folder, pruners="l1", seeds="0"):
    """An out-dir as ``benchmarks.run --preset smoke`` leaves it, with one finished record per plan
    entry (built here, not trained: these tests are about what --report-only refuses)."""
    from benchmarks.core.config import stable_hash
    from benchmarks.run import resolve_config
    from benchmarks.grid.runner import SCHEMA_VERSION, benchmark_plan, record_key, record_name

    command = ["python", "-m", "benchmarks.run", "--preset", "smoke", "--out-dir", str(folder),
               "--pruners", pruners, "--seeds", seeds]
    config = resolve_config(build_parser().parse_args(command[3:]))
    baseline_hash = "b" * 16
    (folder / "runs").mkdir(parents=True)
    for sparsity, seed, pruner in benchmark_plan(config):
        key = record_key(config, baseline_hash, pruner, sparsity, seed)
        # a real record's measurements, under this plan entry's key
        record = {**json.loads((COMMITTED.parent / "runs" / "l1_sparsity0.5_seed0.json").read_text()),
                  "run_hash": stable_hash(key), "run_key": key, "pruner": pruner, "sparsity": sparsity, "seed": seed}
        (folder / "runs" / f"{record_name(pruner, sparsity, seed)}.json").write_text(json.dumps(record))
    # the measurement context of a real run (what a report renders), under this out-dir's baseline key
    context = json.loads(COMMITTED.read_text())
    stored = {"schema_version": SCHEMA_VERSION, "status": "complete", "preset": "smoke", "command_line": command,
              **{key: context[key] for key in ("packages", "git", "machine", "data")},
              "baseline": {**context["baseline"], "key_hash": baseline_hash}, "runs": []}
    (folder / "results.json").write_text(json.dumps(stored))
    (folder / "report.md").write_text("the stored report\n")
    return command


def _snapshot(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_report_only_refuses_a_command_that_matches_no_stored_record(tmp_path, capsys):
    """Issue 26, item 11: --preset cpu on a smoke out-dir rendered an empty '0 of 45' report over
    the stored one and replaced the stored command."""
    out = tmp_path / "out"
    command = _stored_out_dir(out)
    before = _snapshot(out)
    assert main(["--preset", "cpu", "--out-dir", str(out), "--report-only", "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert "matches none of the records" in message and shlex.join(command) in message
    assert _snapshot(out) == before  # results.json, report.md and the stored command untouched
    # the command that made the records still re-renders them
    assert main([*command[3:], "--report-only"]) == 0
    rendered = json.loads((out / "results.json").read_text())
    assert rendered["command_line"] == command and rendered["finished_runs"] == 1


def test_report_only_on_an_empty_missing_or_foreign_directory_creates_nothing(tmp_path, capsys):
    """Issue 26, item 21: the refusal left .lock and benchmark.log behind (and created the directory)."""
    missing = tmp_path / "missing"
    assert main(["--preset", "smoke", "--out-dir", str(missing), "--report-only"]) == 2
    assert "run the benchmark into this --out-dir first" in capsys.readouterr().err
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--preset", "smoke", "--out-dir", str(empty), "--report-only"]) == 2
    assert list(empty.iterdir()) == []
    for name, content in (("list", "[1, 2]"), ("experiment", '{"experiment": "benchmarks.bmvc.convergence_study"}')):
        foreign = tmp_path / name
        foreign.mkdir()
        (foreign / "results.json").write_text(content)
        assert main(["--preset", "smoke", "--out-dir", str(foreign), "--report-only"]) == 2
        assert "not a benchmarks.run output directory" in capsys.readouterr().err
        assert sorted(p.name for p in foreign.iterdir()) == ["results.json"]


def test_report_only_says_a_corrupt_results_file_is_corrupt_and_keeps_it(tmp_path, capsys):
    """Issue 26, item 21: a corrupt results.json was renamed, then reported missing."""
    out = tmp_path / "out"
    _stored_out_dir(out)
    (out / "results.json").write_text('{"baseline": ')
    before = _snapshot(out)
    assert main(["--preset", "smoke", "--out-dir", str(out), "--pruners", "l1", "--seeds", "0", "--report-only"]) == 2
    message = capsys.readouterr().err
    assert "is corrupt" in message and "results.json" in message and "is missing" not in message
    assert _snapshot(out) == before


def _one_line_error(capsys, code, path):
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in lines[0], lines
    return lines[0]


def test_an_out_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    """Issue 26, item 12: FileExistsError and exit 1."""
    target = tmp_path / "out"
    target.write_text("not a directory\n")
    code = main(["--preset", "smoke", "--out-dir", str(target), "--pruners", "l1", "--no-progress"])
    assert "--out-dir" in _one_line_error(capsys, code, target)
    nested = target / "below"
    code = main(["--preset", "smoke", "--out-dir", str(nested), "--pruners", "l1", "--no-progress"])
    _one_line_error(capsys, code, nested)


def _read_only_dir(path):
    import os

    path.mkdir()
    path.chmod(0o500)
    if os.access(path, os.W_OK):  # root writes anyway: the case cannot be made here
        path.chmod(0o700)
        pytest.skip("chmod does not stop this user from writing (root)")
    return path


def test_read_only_out_dir_and_cache_dir_are_usage_errors(tmp_path, capsys):
    """Issue 26, item 12: PermissionError and exit 1."""
    locked = _read_only_dir(tmp_path / "locked")
    try:
        code = main(["--preset", "smoke", "--out-dir", str(locked / "out"), "--pruners", "l1", "--no-progress"])
        assert "--out-dir" in _one_line_error(capsys, code, locked / "out")
        code = main(["--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--cache-dir", str(locked / "cache"),
                     "--pruners", "l1", "--no-progress"])
        assert "--cache-dir" in _one_line_error(capsys, code, locked / "cache")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------- one rule for every command line in benchmarks/

def _exit_status(call):
    try:
        return call()
    except SystemExit as exit_info:
        return exit_info.code


@pytest.mark.parametrize("option, value", [
    ("--repeats", "0"), ("--sparse-ratio", "1.5"), ("--sparse-ratio", "0"), ("--width", "0"), ("--width", "nan"),
    ("--weights", "missing.pt"), ("--distance", "foo"), ("--cloud-metric", "foo"), ("--workers", "0"),
    ("--homology-dims", "-1"), ("--wasserstein-order", "0.5"), ("--threads", "-1"),
])
def test_pruner_speed_refuses_bad_options_up_front(tmp_path, capsys, option, value):
    """Issue 26, item 17: each of these ended in a traceback (exit 1), some after timing L1 and FPGM."""
    from benchmarks.speed.pruner_speed import main as pruner_speed

    value = str(tmp_path / value) if option == "--weights" else value
    argv = ["--width", "0.0625", "--repeats", "1", option, value]
    assert _exit_status(lambda: pruner_speed(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before anything was timed
    last = captured.err.strip().splitlines()[-1]
    assert option in last and "Traceback" not in captured.err, captured.err


def test_pruner_speed_refuses_weights_of_another_model(tmp_path, capsys):
    import torch

    from benchmarks.core.models import build_vgg16
    from benchmarks.speed.pruner_speed import main as pruner_speed

    weights = tmp_path / "model.pt"
    torch.save(build_vgg16(width=0.125).state_dict(), weights)
    assert _exit_status(lambda: pruner_speed(["--width", "0.0625", "--weights", str(weights)])) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--weights" in last and "--width" in last


@pytest.mark.parametrize("module, argv, names", [
    ("benchmarks.run", ["--preset", "smoke", "--set", "foo=1"], "foo"),
    ("benchmarks.bmvc.convergence_study", ["--preset", "smoke", "--set", "foo=1"], "foo"),
    ("benchmarks.bmvc.betti_threshold", ["--preset", "smoke", "--set", "foo=1"], "foo"),
    ("benchmarks.speed.pruner_speed", ["--repeats", "0"], "--repeats"),
    ("benchmarks.grid.compare_runs", ["a", "b", "--same-as", "l1"], "--same-as"),
    ("benchmarks.speed.engine_speed", ["--sections", "nope"], "nope"),
    ("benchmarks.studies.backends_smoke", ["--sparsity", "2"], "--sparsity"),
    ("benchmarks.speed.cpu_throughput", ["--steps", "0"], "--steps"),
    ("benchmarks.core.baseline_store", ["status", "--preset", "smoke", "--set", "foo=1"], "foo"),
    ("benchmarks.studies.allocation_curves", ["--weights", "missing.pt"], "--weights"),
    ("benchmarks.studies.mask_stability", ["--weights", "missing.pt"], "--weights"),
    ("benchmarks.studies.backends_smoke", ["--out-dir", "a-file"], "--out-dir"),
    ("benchmarks.speed.tp_speed", ["--out-dir", "a-file"], "--out-dir"),
    ("benchmarks.speed.tp_speed", ["--out", "a-file"], "--out-dir"),
    ("benchmarks.speed.tp_speed", ["--repeats", "0"], "--repeats"),
    ("benchmarks.studies.recipe_check", ["--cache-dir", "c", "--seeds", "x"], "--seeds"),
])
def test_every_cli_exits_2_on_a_usage_error_with_one_line_naming_the_input(tmp_path, capsys, module, argv, names):
    """Issue 26, item 22: one rule for every command line in benchmarks/ (usage error: exit 2, one
    line naming the input, no traceback)."""
    import importlib

    main_of = importlib.import_module(module).main
    (tmp_path / "a-file").write_text("not a directory")
    argv = [str(tmp_path / arg) if arg in ("a", "b", "missing.pt", "a-file", "c") else arg for arg in argv]
    assert _exit_status(lambda: main_of(argv)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert names in last and "Traceback" not in err, err


def test_report_only_of_records_under_older_keys_says_so(tmp_path, capsys):
    """Issue 26, item 11: when even the stored command matches none of the records (they were made
    under keys an older version computed), the refusal says that rather than suggest the same command."""
    out = tmp_path / "out"
    command = _stored_out_dir(out)
    for path in (out / "runs").glob("*.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "run_hash": "0" * 16}))
    before = _snapshot(out)
    assert main([*command[3:], "--report-only"]) == 2
    message = capsys.readouterr().err
    assert "older version" in message and "re-render with the command stored there" not in message
    assert _snapshot(out) == before
