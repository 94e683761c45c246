"""benchmarks.core.framework, through the example experiment of docs/benchmarks.md ("A new
experiment"): outputs, resuming by record hash, refusals, quarantine, the lock; and the
training loop options the experiments share (benchmarks.core.training.fit)."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmarks.core import framework
from benchmarks.core.store import process_lock
from benchmarks.core.training import fit

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def squares():
    """The docs' example experiment, executed as the module it says it is."""
    section = DOCS.read_text().split("## A new experiment", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("squares_example")
    sys.modules[module.__name__] = module
    exec(compile(code, str(DOCS), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    yield module
    del sys.modules[module.__name__]


@pytest.fixture
def counting(squares, monkeypatch):
    calls = []
    real = squares.Squares.run_record

    def run_record(self, key, inputs, records):
        calls.append(key)
        return real(self, key, inputs, records)

    monkeypatch.setattr(squares.Squares, "run_record", run_record)
    return calls


def _main(squares, out, *extra):
    return framework.main(squares.Squares, ["--preset", "smoke", "--out-dir", str(out), "--no-progress", *extra])


def test_outputs_and_resume(squares, counting, tmp_path, capsys):
    assert _main(squares, tmp_path, "--set", "numbers=2,3") == 0
    assert counting == ["n2", "n3"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["experiment"] == "benchmarks.studies.squares" and results["config"] == {"numbers": [2, 3], "power": 2}
    assert {k: r["value"] for k, r in results["records"].items()} == {"n2": 4, "n3": 9}
    assert all(len(r["record_hash"]) == 16 for r in results["records"].values())
    assert "--set numbers=2,3" in results["command"] and results["invocations"][0]["records_before"] == 0
    assert results["machine"]["cpu_count"] >= 1 and results["versions"]["torch"]
    assert (tmp_path / "report.md").read_text() == "| n | n ** power |\n| ---: | ---: |\n| 2 | 4 |\n| 3 | 9 |\n"
    assert "2 records in" in capsys.readouterr().out
    # the same command again: nothing recomputed, one more invocation
    assert _main(squares, tmp_path, "--set", "numbers=2,3") == 0
    assert counting == ["n2", "n3"]
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["records"] == results["records"]
    assert [inv["records_before"] for inv in again["invocations"]] == [0, 2]


def test_a_record_whose_inputs_changed_is_redone(squares, counting, tmp_path, monkeypatch):
    _main(squares, tmp_path, "--set", "numbers=2,3")
    stored = json.loads((tmp_path / "results.json").read_text())
    stored["records"]["n3"]["record_hash"] = "stale"
    (tmp_path / "results.json").write_text(json.dumps(stored))
    _main(squares, tmp_path, "--set", "numbers=2,3")
    assert counting == ["n2", "n3", "n3"]
    monkeypatch.setattr(squares.Squares, "record_version", 2)  # the recipe changed: all redone
    _main(squares, tmp_path, "--set", "numbers=2,3")
    assert counting == ["n2", "n3", "n3", "n2", "n3"]


def _usage_error(capsys, call):
    """Issue 26, item 22: one rule for every CLI in benchmarks/: exit status 2, one line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_another_config_is_refused_unless_fresh(squares, counting, tmp_path, capsys):
    _main(squares, tmp_path, "--set", "numbers=2")
    message = _usage_error(capsys, lambda: _main(squares, tmp_path, "--set", "power=3"))
    assert "different configuration; rerun with --fresh" in message
    assert "power: stored 2, asked 3" in message
    assert counting == ["n2"]
    _main(squares, tmp_path, "--set", "power=3", "--fresh")
    results = json.loads((tmp_path / "results.json").read_text())
    assert {k: r["value"] for k, r in results["records"].items()} == {"n1": 1, "n2": 8, "n3": 27}
    assert len(results["invocations"]) == 1


def test_a_field_added_after_the_results_is_taken_at_its_default(squares, counting, tmp_path, capsys):
    """Results made before a config field existed resume under the same command (the field at its
    default, which keeps the old behaviour); asking another value of it is another configuration."""
    _main(squares, tmp_path, "--set", "numbers=2")
    stored = json.loads((tmp_path / "results.json").read_text())
    del stored["config"]["power"]  # as if written before the field existed
    (tmp_path / "results.json").write_text(json.dumps(stored))
    assert _main(squares, tmp_path, "--set", "numbers=2") == 0
    assert counting == ["n2"]
    (tmp_path / "results.json").write_text(json.dumps(stored))
    message = _usage_error(capsys, lambda: _main(squares, tmp_path, "--set", "numbers=2", "--set", "power=3"))
    assert "power: stored 2, asked 3" in message


def test_malformed_records_are_quarantined_and_redone(squares, counting, tmp_path):
    _main(squares, tmp_path, "--set", "numbers=2,3")
    stored = json.loads((tmp_path / "results.json").read_text())
    stored["records"]["n2"] = [4]
    (tmp_path / "results.json").write_text(json.dumps(stored))
    _main(squares, tmp_path, "--set", "numbers=2,3")
    assert counting == ["n2", "n3", "n2"]
    assert json.loads((tmp_path / "quarantine.json").read_text()) == {"n2": [4]}
    assert json.loads((tmp_path / "results.json").read_text())["records"]["n2"]["value"] == 4


def test_unreadable_results_file_is_moved_aside(squares, counting, tmp_path):
    (tmp_path / "results.json").write_text('{"records": [1, 2]}')
    _main(squares, tmp_path)
    assert (tmp_path / "results.json.corrupt").read_text() == '{"records": [1, 2]}'
    assert counting == ["n1", "n2", "n3"]


def test_usage_errors_name_the_fix(squares, tmp_path, capsys):
    message = _usage_error(capsys, lambda: _main(squares, tmp_path, "--set", "nubmers=1"))
    assert re.search("unknown config key 'nubmers'.*known keys: numbers, power", message)
    with process_lock(tmp_path, "a test"):
        assert "another process is using" in _usage_error(capsys, lambda: _main(squares, tmp_path))


@pytest.mark.parametrize("module", ["benchmarks.bmvc.convergence_study", "benchmarks.bmvc.betti_threshold"])
def test_the_experiments_exit_2_on_usage_errors(module, tmp_path, capsys):
    """Issue 26, item 22: convergence_study and betti_threshold exited 1 on `--set foo=1`."""
    import importlib

    experiment = importlib.import_module(module)
    preset = sorted(experiment.main.__globals__["PRESETS"])[0]
    message = _usage_error(capsys, lambda: experiment.main(["--preset", preset, "--set", "foo=1",
                                                            "--out-dir", str(tmp_path)]))
    assert "unknown config key 'foo'" in message


def test_an_unwritable_out_dir_is_a_usage_error(squares, counting, tmp_path, capsys):
    """Issue 26, item 12: an --out-dir that is a file raised FileExistsError (exit 1)."""
    target = tmp_path / "out"
    target.write_text("a file\n")
    message = _usage_error(capsys, lambda: _main(squares, target))
    assert "--out-dir" in message and str(target) in message and "is a file" in message
    message = _usage_error(capsys, lambda: _main(squares, target / "below"))
    assert "--out-dir" in message and str(target / "below") in message
    assert counting == []
    from benchmarks.bmvc.convergence_study import main as convergence_main

    message = _usage_error(capsys, lambda: convergence_main(["--preset", "smoke", "--out-dir", str(target)]))
    assert "--out-dir" in message and str(target) in message


def test_the_experiments_are_built_on_the_framework():
    from benchmarks.bmvc.betti_threshold import BettiThreshold
    from benchmarks.bmvc.convergence_study import ConvergenceStudy

    assert issubclass(BettiThreshold, framework.Experiment) and issubclass(ConvergenceStudy, framework.Experiment)


# ------------------------------------------------------------------ benchmarks.core.training.fit


class _ItemByItem(Dataset):
    """A TensorDataset's items without being one: fit must take its per-item path."""

    def __init__(self, data: TensorDataset):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]


def _problem():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 6), torch.arange(40) % 3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return model, data


@pytest.mark.parametrize("options", [dict(momentum=0.9, weight_decay=1e-4),
                                     dict(optimizer="adam", schedule="constant")])
def test_tensor_datasets_are_batched_without_changing_a_bit(options):
    settings = dict(epochs=3, lr=0.05, batch_size=7, seed=3, device=torch.device("cpu"), progress=False, **options)
    fast_model, data = _problem()
    fast = fit(fast_model, data, DataLoader(data, batch_size=16), **settings)
    slow_model, data = _problem()
    slow = fit(slow_model, _ItemByItem(data), DataLoader(data, batch_size=16), **settings)
    assert [(r["train_loss"], r["test_acc"], r["lr"]) for r in fast] == [(r["train_loss"], r["test_acc"], r["lr"])
                                                                          for r in slow]
    for name, tensor in fast_model.state_dict().items():
        assert torch.equal(tensor, slow_model.state_dict()[name]), name


def test_constant_schedule_keeps_the_rate_and_cosine_lowers_it():
    model, data = _problem()
    rows = fit(model, data, DataLoader(data, batch_size=16), epochs=3, lr=0.05, batch_size=8, seed=0,
               device=torch.device("cpu"), progress=False, optimizer="adam", schedule="constant")
    assert [r["lr"] for r in rows] == [0.05] * 3
    model, data = _problem()
    rows = fit(model, data, DataLoader(data, batch_size=16), epochs=3, lr=0.05, batch_size=8, seed=0,
               device=torch.device("cpu"), progress=False)
    assert rows[0]["lr"] == 0.05 and rows[1]["lr"] < 0.05 and rows[2]["lr"] < rows[1]["lr"]


def test_early_stop_ends_training_and_a_resumed_call_returns_at_once(tmp_path):
    settings = dict(epochs=5, lr=0.05, batch_size=8, seed=0, device=torch.device("cpu"), progress=False,
                    checkpoint=tmp_path / "fit.ckpt")
    model, data = _problem()
    seen = []
    rows = fit(model, data, DataLoader(data, batch_size=16), on_epoch=lambda row: seen.append(row) or
               row["epoch"] == 2, **settings)
    assert [r["epoch"] for r in rows] == [1, 2] and len(seen) == 2
    resumed = fit(_problem()[0], data, DataLoader(data, batch_size=16), on_epoch=seen.append, **settings)
    assert resumed == rows and len(seen) == 2


@pytest.mark.parametrize("options, message", [(dict(optimizer="rmsprop"), "optimizer must be one of"),
                                              (dict(schedule="step"), "schedule must be one of")])
def test_fit_rejects_unknown_options(options, message):
    model, data = _problem()
    with pytest.raises(ValueError, match=message):
        fit(model, data, DataLoader(data), epochs=1, lr=0.1, batch_size=8, seed=0, device=torch.device("cpu"),
            progress=False, **options)
