"""Resumption: finished records and the cached baseline are reused, interrupted runs continue
where they stopped, corrupt files are set aside and redone, failures are recorded."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import benchmarks.core.baseline
import benchmarks.grid.runner
import benchmarks.core.training
from benchmarks.core.config import apply_overrides, preset_config
from benchmarks.core.data import load_data, subsample
from benchmarks.run import main
from benchmarks.core.store import process_lock
from benchmarks.core.training import fit
from tests.offline_data import needs_offline_data


TINY = ["--set", "train_size=128", "--set", "test_size=64", "--set", "baseline_epochs=1",
        "--set", "finetune_epochs=1", "--set", "latency_repeats=2", "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One baseline cache for the module: the tiny baseline is trained once and reused (as in real use)."""
    return tmp_path_factory.mktemp("baseline-cache")


@pytest.fixture
def argv(tmp_path, cache_dir):
    def build(pruners="l1,random", seeds="0", *extra):
        return ["--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--cache-dir", str(cache_dir),
                "--pruners", pruners, "--seeds", seeds, *TINY, *extra]

    return build


def _count_experiments(monkeypatch, fail_on_call=None, error=KeyboardInterrupt):
    """Wrap run_experiment: count calls; raise ``error`` on call number ``fail_on_call``."""
    calls = []
    real = benchmarks.grid.runner.run_experiment

    def counting(*args, **kwargs):
        calls.append(args[3:6])  # (pruner, sparsity, seed)
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise error()
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmarks.grid.runner, "run_experiment", counting)
    return calls


@needs_offline_data
def test_interrupted_run_resumes_without_redoing_finished_records(tmp_path, monkeypatch, argv):
    calls = _count_experiments(monkeypatch, fail_on_call=3)
    assert main(argv(seeds="0,1")) == 130  # Ctrl-C during the third record
    interrupted = json.loads((tmp_path / "out" / "results.json").read_text())
    assert interrupted["status"] == "interrupted"
    assert interrupted["finished_runs"] == 2 and interrupted["expected_runs"] == 4
    assert "interrupted" in (tmp_path / "out" / "report.md").read_text()
    with process_lock(tmp_path / "out"):  # the interrupted run released its lock
        pass

    monkeypatch.undo()
    calls = _count_experiments(monkeypatch)
    assert main(argv(seeds="0,1")) == 0
    assert calls == [("l1", 0.5, 1), ("random", 0.5, 1)]
    final = json.loads((tmp_path / "out" / "results.json").read_text())
    assert final["status"] == "complete" and final["finished_runs"] == 4
    assert final["baseline"]["cached"] is True

    # a third run finds everything done: no pruning, no training, and the report is rendered once for
    # the reused records (then once as complete), not once per record: rendering grows with the records
    calls = _count_experiments(monkeypatch)
    monkeypatch.setattr(benchmarks.core.baseline, "fit", lambda *a, **k: pytest.fail("baseline retrained"))
    renders = []
    real_write = benchmarks.grid.runner.write_outputs
    monkeypatch.setattr(benchmarks.grid.runner, "write_outputs",
                        lambda state, *a, **k: renders.append(len(state.records)) or real_write(state, *a, **k))
    assert main(argv(seeds="0,1")) == 0
    assert calls == []
    assert renders == [4, 4]
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in final["runs"]]


@needs_offline_data
def test_report_only_rerenders_the_stored_records_and_runs_nothing(tmp_path, monkeypatch, argv, capsys):
    out = tmp_path / "out"
    assert main([*argv(), "--report-only"]) == 2  # nothing stored yet: a usage error that says what to do
    assert "run the benchmark into this --out-dir first" in capsys.readouterr().err
    assert main(argv()) == 0
    first = json.loads((out / "results.json").read_text())
    (out / "report.md").write_text("stale\n")

    calls = _count_experiments(monkeypatch)
    monkeypatch.setattr(benchmarks.grid.runner, "prepare", lambda *a, **k: pytest.fail("loaded data or the baseline"))
    monkeypatch.setattr(benchmarks.grid.runner, "measure_speed", lambda *a, **k: pytest.fail("measured latency"))
    assert main([*argv(), "--report-only"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert calls == []
    for key in ("runs", "summary", "comparisons", "paired", "matched_flops", "baseline", "git", "machine", "data"):
        assert again[key] == first[key], key  # the same numbers, and the context of the runs that made them
    assert again["status"] == "complete" and "--report-only" not in again["command_line"]
    assert len(again["rendered_by"]["git"]["commit"]) == 40
    report = (out / "report.md").read_text()
    assert report.startswith("# Pruning benchmark") and "re-rendered from the stored records" in report

    # a plan entry with no record yet is left out, visibly, and still nothing runs
    assert main([*argv(seeds="0,1"), "--report-only"]) == 0
    partial = json.loads((out / "results.json").read_text())
    assert calls == []
    assert partial["status"] == "incomplete" and (partial["finished_runs"], partial["expected_runs"]) == (2, 4)
    assert "Status: **incomplete** (2 of 4 runs finished" in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_info:  # it runs nothing, so it takes no baseline or executor flags
        main([*argv(), "--report-only", "--baseline-only"])
    assert exit_info.value.code == 2 and "cannot be combined" in capsys.readouterr().err


@needs_offline_data
def test_valid_json_but_malformed_records_are_set_aside_and_redone(tmp_path, monkeypatch, argv):
    assert main(argv(pruners="l1")) == 0
    record = tmp_path / "out" / "runs" / "l1_sparsity0.5_seed0.json"
    good = json.loads(record.read_text())
    for bad in ([], {k: v for k, v in good.items() if k != "run_hash"}, {**good, "acc_after_pruning": "high"},
                {**good, "curve": None}):
        record.write_text(json.dumps(bad))
        calls = _count_experiments(monkeypatch)
        assert main(argv(pruners="l1")) == 0, bad
        monkeypatch.undo()
        assert calls == [("l1", 0.5, 0)]
        assert (record.parent / (record.name + ".corrupt")).is_file()
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        assert results["status"] == "complete" and results["finished_runs"] == 1
        assert json.loads(record.read_text())["curve"] == good["curve"]


@pytest.mark.slow
@needs_offline_data
def test_corrupt_record_is_set_aside_and_redone(tmp_path, monkeypatch, argv):
    assert main(argv(pruners="l1")) == 0
    record = tmp_path / "out" / "runs" / "l1_sparsity0.5_seed0.json"
    good = json.loads(record.read_text())
    record.write_text(record.read_text()[:40])  # a truncated file, as a crash without atomic writes would leave

    calls = _count_experiments(monkeypatch)
    assert main(argv(pruners="l1")) == 0
    assert calls == [("l1", 0.5, 0)]
    assert (record.parent / (record.name + ".corrupt")).is_file()
    redone = json.loads(record.read_text())
    assert redone["curve"] == good["curve"]  # same seed, same machine: the same numbers again


@pytest.mark.slow
@needs_offline_data
def test_changed_configuration_redoes_stale_records(tmp_path, monkeypatch, argv):
    assert main(argv()) == 0
    calls = _count_experiments(monkeypatch)
    assert main(argv("l1,random", "0", "--set", "finetune_epochs=2")) == 0
    assert sorted(calls) == [("l1", 0.5, 0), ("random", 0.5, 0)]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(len(run["curve"]) == 3 for run in results["runs"])


@needs_offline_data
def test_failing_pruner_is_recorded_and_the_rest_carries_on(tmp_path, monkeypatch, argv):
    from nni.compression.pruning import L1NormPruner

    import nni_topo_pruner.registry as registry

    class BrokenPruner(L1NormPruner):
        def compress(self):
            raise RuntimeError("deliberately broken for the test")

    monkeypatch.setitem(registry._RUNTIME, "broken", BrokenPruner)
    assert main(argv(pruners="l1,broken,random")) == 1
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["status"] == "complete with failures"
    assert results["finished_runs"] == 2 and results["expected_runs"] == 3
    (failure,) = results["failures"]
    assert failure["pruner"] == "broken" and failure["status"] == "failed"
    assert failure["error"]["step"] == "compress"
    assert "deliberately broken" in failure["error"]["message"] and "Traceback" in failure["error"]["traceback"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Failures" in report and "deliberately broken" in report

    # the failed record is retried on the next run; finished ones are not
    calls = _count_experiments(monkeypatch)
    assert main(argv(pruners="l1,broken,random")) == 1
    assert calls == [("broken", 0.5, 0)]


def _tiny_problem():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 4, 4), torch.arange(48) % 3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(16, 3))
    return model, data


def test_fit_resumes_from_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    settings = dict(epochs=3, lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=8, seed=5,
                    device=torch.device("cpu"), progress=False)
    straight_model, data = _tiny_problem()
    straight = fit(straight_model, data, DataLoader(data, batch_size=16), **settings)

    model, data = _tiny_problem()
    checkpoint = tmp_path / "fit.ckpt"

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, data, DataLoader(data, batch_size=16), checkpoint=checkpoint, on_epoch=stop_after_two, **settings)
    resumed_model, data = _tiny_problem()  # a fresh process would start from scratch weights
    resumed = fit(resumed_model, data, DataLoader(data, batch_size=16), checkpoint=checkpoint, **settings)
    assert [row["test_acc"] for row in resumed] == [row["test_acc"] for row in straight]
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in straight]
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name


@pytest.mark.slow
@needs_offline_data
def test_interrupted_baseline_resumes_at_its_last_epoch(tmp_path, monkeypatch):
    config = apply_overrides(preset_config("smoke"), ["train_size=128", "test_size=64", "baseline_epochs=2",
                                                      f"cache_dir={tmp_path / 'a'}"])
    arrays = subsample(load_data(config.data), config.train_size, config.test_size)
    straight = benchmarks.core.baseline.load_or_train_baseline(config, arrays, torch.device("cpu"), progress=False)

    resumable = apply_overrides(config, [f"cache_dir={tmp_path / 'b'}"])
    real_epoch = benchmarks.core.training._train_one_epoch
    epochs_run = []

    def interrupt_second_epoch(*args, **kwargs):
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(benchmarks.core.training, "_train_one_epoch", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        benchmarks.core.baseline.load_or_train_baseline(resumable, arrays, torch.device("cpu"), progress=False)
    monkeypatch.undo()

    counted = []
    monkeypatch.setattr(benchmarks.core.training, "_train_one_epoch",
                        lambda *a, **k: counted.append(1) or real_epoch(*a, **k))
    resumed = benchmarks.core.baseline.load_or_train_baseline(resumable, arrays, torch.device("cpu"), progress=False)
    assert len(counted) == 1  # only the second epoch ran again
    assert resumed.key_hash == straight.key_hash
    assert resumed.info["test_acc"] == straight.info["test_acc"]
    for name, tensor in straight.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name


@pytest.mark.slow
@needs_offline_data
def test_run_interrupted_in_fine_tuning_resumes_without_pruning_again(tmp_path, monkeypatch, argv, cache_dir):
    import nni_topo_pruner.registry as registry

    extra = ("--set", "finetune_epochs=2")
    straight_out = tmp_path / "straight"
    assert main([*argv("l1", "0", *extra), "--out-dir", str(straight_out)]) == 0
    straight = json.loads((straight_out / "results.json").read_text())["runs"][0]

    real_epoch = benchmarks.core.training._train_one_epoch

    def interrupt_second_fine_tuning_epoch(*args, **kwargs):  # (model, loader, optimizer, device, desc, ...)
        if args[4].startswith("l1") and args[4].endswith("2/2"):
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(benchmarks.core.training, "_train_one_epoch", interrupt_second_fine_tuning_epoch)
    assert main(argv("l1", "0", *extra)) == 130
    work = list((tmp_path / "out" / "work").glob("l1_sparsity0.5_seed0-*"))
    assert len(work) == 1 and (work[0] / "pruned.pt").is_file() and (work[0] / "finetune.ckpt").is_file()

    monkeypatch.undo()
    monkeypatch.setattr(registry, "create_pruner", lambda *a, **k: pytest.fail("pruned again"))
    assert main(argv("l1", "0", *extra)) == 0
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]
    assert resumed["curve"] == straight["curve"]
    assert resumed["layer_widths"] == straight["layer_widths"]
    assert not work[0].exists()  # removed once the record is written


def test_baseline_mismatch_compares_digests_then_training_traces():
    from benchmarks.grid.runner import baseline_mismatch

    history = [{"epoch": 1, "test_acc": 0.5, "train_loss": 1.25, "seconds": 3.0}]
    current = {"key_hash": "k", "weights_sha256": "a" * 64, "test_acc": 0.5, "history": history,
               "created": "now", "cache_path": "/cache/baseline-k"}
    assert baseline_mismatch(None, current) is None
    assert baseline_mismatch({**current, "key_hash": "other", "weights_sha256": "b" * 64}, current) is None
    assert baseline_mismatch(dict(current), current) is None
    message = baseline_mismatch({**current, "weights_sha256": "b" * 64}, current)
    assert "not the same network" in message and "bbbbbbbbbbbb" in message and "new --out-dir" in message
    # no digest stored (records made before digests): the training trace decides; timings do not count
    older = {key: value for key, value in current.items() if key != "weights_sha256"}
    assert baseline_mismatch({**older, "history": [{**history[0], "seconds": 99.0}]}, current) is None
    assert "training history differs" in baseline_mismatch({**older, "test_acc": 0.75}, current)
    assert "training history differs" in baseline_mismatch(
        {**older, "history": [{**history[0], "train_loss": 1.5}]}, current)
    assert baseline_mismatch({"key_hash": "k"}, current) is None  # nothing to compare with


@needs_offline_data
def test_records_from_a_different_baseline_of_the_same_key_are_refused(tmp_path, monkeypatch, argv, capsys):
    cache = tmp_path / "cache"  # this test's own cache: it replaces the baseline's weights
    args = [*argv(pruners="l1"), "--cache-dir", str(cache)]
    assert main(args) == 0
    folder = next(cache.glob("baseline-*"))
    info = json.loads((folder / "info.json").read_text())
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    state = torch.load(folder / "model.pt", weights_only=True)
    assert results["baseline"]["weights_sha256"] == info["weights_sha256"] == benchmarks.core.baseline.weights_digest(state)
    record = (tmp_path / "out" / "runs" / "l1_sparsity0.5_seed0.json").read_text()

    # the cache replaced by a baseline retrained to other weights (same key, as on a fresh machine)
    original = {name: (folder / name).read_bytes() for name in ("model.pt", "info.json")}
    changed = {name: tensor.clone() for name, tensor in state.items()}
    first = next(name for name, tensor in changed.items() if tensor.is_floating_point())
    changed[first].view(-1)[0] += 1.0
    torch.save(changed, folder / "model.pt")
    (folder / "info.json").write_text(json.dumps({**info, "weights_sha256": benchmarks.core.baseline.weights_digest(changed)}))
    calls = _count_experiments(monkeypatch)
    capsys.readouterr()
    assert main(args) == 2
    assert "not the same network" in capsys.readouterr().err and calls == []
    assert (tmp_path / "out" / "runs" / "l1_sparsity0.5_seed0.json").read_text() == record

    # results.json from before digests existed: a different training history is caught instead
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    stored["baseline"].pop("weights_sha256")
    (tmp_path / "out" / "results.json").write_text(json.dumps(stored))
    (folder / "info.json").write_text(json.dumps({**info, "test_acc": info["test_acc"] + 0.01}))
    assert main(args) == 2
    assert "training history differs" in capsys.readouterr().err and calls == []

    # the original baseline back: its digest is added to the cache, the record is reused as it is
    (folder / "model.pt").write_bytes(original["model.pt"])
    (folder / "info.json").write_text(json.dumps({k: v for k, v in info.items() if k != "weights_sha256"}))
    assert main(args) == 0 and calls == []
    assert json.loads((folder / "info.json").read_text())["weights_sha256"] == info["weights_sha256"]
