"""The Ray executor of the benchmark (``python -m benchmarks.run --executor ray``).

The fast tests check the errors a user meets (an unknown executor, Ray not installed, a
request the cluster cannot satisfy, bad resource values) and that new config fields leave the
keys of committed records alone. The slow one runs a cut-down smoke benchmark through a local
Ray cluster and checks its records equal the local executor's, and that a rerun through Ray
resumes (CI runs it once, see .ci/run).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.core.config import apply_overrides, preset_config, stable_hash, validate
from benchmarks.core.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor
from benchmarks.run import main
from benchmarks.grid.runner import record_key
from tests.offline_data import needs_offline_data

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "train_size=256", "--set", "test_size=128", "--set", "baseline_epochs=1",
        "--set", "finetune_epochs=1", "--set", "latency_repeats=2", "--no-progress",
        # results depend on the torch thread count: the same on both sides
        "--set", "num_threads=1"]
#: what must be equal between executors: every measured number and per-image result
SAME = ("pruner", "sparsity", "seed", "run_hash", "params", "flops", "params_ratio", "flops_ratio", "layer_widths",
        "acc_after_pruning", "acc_after_bn", "recoverability", "curve", "hits_after_pruning", "hits_after_bn",
        "hits_final", "convergence_epoch")


@pytest.fixture
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_unknown_executor_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--preset", "smoke", "--executor", "dask", "--show-config"])
    assert stop.value.code == 2
    assert "--executor" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose one of \\['local', 'ray'\\]"):
        make_executor("dask")


def test_missing_ray_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SystemExit) as stop:
        main(["--preset", "smoke", "--executor", "ray", "--out-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "'.[ray]'" in error and "pip install" in error
    assert not (tmp_path / "out").exists()  # refused before any work


class _FakeRay:
    def __init__(self, resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


def test_ray_refuses_requests_the_cluster_cannot_meet():
    with pytest.raises(ExecutorError, match=r"ray_num_gpus=1 but the Ray cluster has 0 GPU"):
        RayExecutor(num_cpus=1, num_gpus=1)._check_resources(_FakeRay({"CPU": 8.0}))
    with pytest.raises(ExecutorError, match=r"ray_num_cpus=16 .* 8 CPU"):
        RayExecutor(num_cpus=16)._check_resources(_FakeRay({"CPU": 8.0}))
    RayExecutor(num_cpus=2, num_gpus=0.5)._check_resources(_FakeRay({"CPU": 8.0, "GPU": 1.0}))


@pytest.mark.parametrize("assignment, message", [("ray_num_cpus=-1", "ray_num_cpus must be a finite number >= 0"),
                                                 ("ray_num_gpus=inf", "ray_num_gpus must be a finite number >= 0")])
def test_ray_resources_are_validated(assignment, message):
    with pytest.raises(ValueError, match=message):
        validate(apply_overrides(preset_config("smoke"), [assignment]))
    with pytest.raises(ValueError, match="both 0"):
        validate(apply_overrides(preset_config("smoke"), ["ray_num_cpus=0"]))


def test_local_executor_yields_in_order():
    seen = list(LocalExecutor().map(lambda shared, task: shared * task, 3, [1, 2, 5]))
    assert seen == [(1, 3), (2, 6), (5, 15)]


def committed_benchmark_dirs():
    """Every committed output directory of ``benchmarks.run`` (a results.json with a preset and records)."""
    for path in sorted((REPO / "benchmarks" / "results").glob("**/results.json")):
        stored = json.loads(path.read_text())
        if stored.get("preset") and (path.parent / "runs").is_dir():
            yield path.parent, stored


#: committed runs made before the run key gained ``pruner_name`` and the BN re-estimation fields:
#: rerunning their commands redoes them (docs/bmvc.md cites their reports, not a resume)
OLDER_KEY_FORMAT = {"betti/cpu_w025", "betti/cpu_w025_s01"}


def test_committed_records_keep_their_keys():
    """The key of a committed record, rebuilt by today's code from its directory's stored config,
    must hash to the record's ``run_hash``; executor and resource fields (and the Scratch-E list)
    must not enter it. Otherwise every committed record would be redone on resume."""
    from benchmarks.core.config import BenchmarkConfig

    checked = 0
    for directory, stored in committed_benchmark_dirs():
        if directory.relative_to(REPO / "benchmarks" / "results").as_posix() in OLDER_KEY_FORMAT:
            assert all("pruner_name" not in json.loads(path.read_text())["run_key"]
                       for path in (directory / "runs").glob("*.json")), f"{directory}: remove it from OLDER_KEY_FORMAT"
            continue
        config = apply_overrides(BenchmarkConfig(**stored["config"]),
                                 ["ray_num_cpus=4", "ray_num_gpus=1", "scratch_e=l1"])
        for path in sorted((directory / "runs").glob("*.json")):
            record = json.loads(path.read_text())
            key = record["run_key"]
            spec = key["pruner"] if key["pruner"] == key["pruner_name"] else f"{key['pruner']}={key['pruner_name']}"
            spec = ("scratch_e:" if "scratch_e" in key else "") + spec  # a Scratch-E record: its own recipe in the key
            mine = record_key(config, key["baseline"], spec, record["sparsity"], record["seed"])
            assert stable_hash(mine) == record["run_hash"], (str(path), mine, key)
            checked += 1
    if not checked:
        pytest.skip("no committed benchmark records")


@pytest.mark.slow
@needs_offline_data
def test_ray_executor_matches_local(tmp_path, keep_torch_threads):
    import ray

    common = ["--preset", "smoke", "--cache-dir", str(tmp_path / "cache"), "--pruners", "l1,random",
              "--seeds", "0", *TINY]
    assert main([*common, "--out-dir", str(tmp_path / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert main([*common, "--out-dir", str(tmp_path / "ray"), "--executor", "ray"]) == 0
        first = json.loads((tmp_path / "ray" / "results.json").read_text())
        # resumable: a lost record is redone through Ray, the other one reused
        (tmp_path / "ray" / "runs" / "random_sparsity0.5_seed0.json").unlink()
        assert main([*common, "--out-dir", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    finally:
        ray.shutdown()
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    resumed = json.loads((tmp_path / "ray" / "results.json").read_text())
    log = (tmp_path / "ray" / "benchmark.log").read_text()
    assert "done: 2 records (1 reused from earlier runs), 0 failed" in log
    assert "ray: 1 task(s)" in log
    for results in (first, resumed):
        assert results["status"] == "complete" and results["finished_runs"] == 2
        assert [run["pruner"] for run in results["runs"]] == ["l1", "random"]
        for mine, theirs in zip(results["runs"], local["runs"]):
            for key in SAME:
                assert mine[key] == theirs[key], key
    assert resumed["paired"] == first["paired"] == local["paired"]  # paired verdicts from the per-image results


def test_a_record_lost_by_the_executor_is_a_failed_record_redone_next_time():
    from benchmarks.grid.runner import _lost_record, record_problem

    config = validate(apply_overrides(preset_config("smoke"), ["pruners=l1,random", "scratch_e=l1"]))
    record = _lost_record(config, "b", (0.5, 1, "scratch_e:l1"), RuntimeError("worker died"))
    assert record_problem(record) is None
    assert (record["status"], record["pruner"], record["seed"]) == ("failed", "scratch_e:l1", 1)
    assert record["error"]["step"] == "executor" and record["error"]["message"] == "worker died"
    assert record["run_hash"] == stable_hash(record_key(config, "b", "scratch_e:l1", 0.5, 1))
