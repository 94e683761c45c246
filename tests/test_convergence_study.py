"""The BMVC convergence study runner at smoke size: outputs, their content, resuming."""
from __future__ import annotations

import json

import pytest

from benchmarks.bmvc import convergence_study as cs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("convergence")
    assert cs.main(["--preset", "smoke", "--out-dir", str(out), "--no-progress"]) == 0
    return out


def test_outputs_exist(smoke_run):
    for name in ("results.json", "report.md", "curves_nine_rings.png", "betti_nine_rings.png"):
        path = smoke_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (smoke_run / "curves_nine_rings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_content(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    config = results["config"]
    assert config == json.loads(json.dumps(cs.PRESETS["smoke"].__dict__))
    first = results["invocations"][0]
    assert "convergence_study" in first["command"] and "--preset smoke" in first["command"]
    assert first["versions"]["torch"] and first["versions"]["gudhi"] and first["runs_before"] == 0
    assert first["machine"]["cpu_count"] >= 1
    assert set(results["runs"]) == {"nine_rings|relu|bs64|seed0", "nine_rings|many_to_one|bs64|seed0"}
    for run in results["runs"].values():
        accs = run["train_acc"]
        assert 1 <= len(accs) <= config["max_epochs"] and len(run["test_acc"]) == len(accs)
        assert all(0.0 <= a <= 1.0 for a in accs + run["test_acc"])
        # epochs_to_target is the first epoch at or above the target, or None if never
        first = next((i + 1 for i, a in enumerate(accs) if a >= config["target_acc"]), None)
        assert run["epochs_to_target"] == first
        if first is None:
            assert len(accs) == config["max_epochs"]
        # Betti numbers: both classes, input + 9 hidden layers, [b0, b1] non-negative ints, b0 >= 1
        assert set(run["betti"]) == {"0", "1"}
        for per_layer in run["betti"].values():
            assert len(per_layer) == 10
            assert all(isinstance(b, int) and b >= 0 for pair in per_layer for b in pair)
            assert all(1 <= pair[0] <= config["betti_points"] for pair in per_layer)


def test_input_layer_betti_is_computed_on_the_data(smoke_run):
    from nni_topo_pruner.bmvc.synthetic import make_dataset
    from nni_topo_pruner.topology.betti import betti_numbers

    results = json.loads((smoke_run / "results.json").read_text())
    config = results["config"]
    data = make_dataset("nine_rings", config["n_train"], config["n_test"], seed=config["data_seed"])
    cloud = data.class_cloud(0, n=config["betti_points"], seed=config["data_seed"])
    expected = list(betti_numbers(cloud.astype("float64"), dims=(0, 1), scale=config["betti_scale"]))
    for run in results["runs"].values():
        assert run["betti"]["0"][0] == expected   # layer 0 = input, same for every activation


def test_report_content(smoke_run):
    text = (smoke_run / "report.md").read_text()
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["invocations"][0]["command"] in text and "machine:" in text
    for act in ("relu", "many_to_one"):
        run = results["runs"][f"nine_rings|{act}|bs64|seed0"]
        final = f"{run['train_acc'][-1]:.4f}"
        assert any(line.startswith(f"| nine_rings | 64 | {act} |") and final in line for line in text.splitlines())
        cells = " | ".join(f"{b0}/{b1}" for b0, b1 in run["betti"]["1"])
        assert f"| nine_rings | 64 | {act} | 0 | 1 | {cells} |" in text


def test_rerun_resumes_without_retraining(smoke_run, caplog):
    before = json.loads((smoke_run / "results.json").read_text())["runs"]
    with caplog.at_level("INFO", logger="benchmarks.bmvc.convergence_study"):
        cs.main(["--preset", "smoke", "--out-dir", str(smoke_run), "--no-progress"])
    assert "0 runs to do, 2 already" in caplog.text
    after = json.loads((smoke_run / "results.json").read_text())
    assert after["runs"] == before
    assert len(after["invocations"]) == 2 and after["invocations"][1]["runs_before"] == 2


def test_other_config_in_same_dir_is_refused(smoke_run, capsys):
    with pytest.raises(SystemExit) as exit_info:  # a usage error: exit 2, one line naming the fix
        cs.main(["--preset", "smoke", "--out-dir", str(smoke_run), "--max-epochs", "5", "--no-progress"])
    assert exit_info.value.code == 2 and "--fresh" in capsys.readouterr().err


def test_unknown_activation_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cs.main(["--preset", "smoke", "--out-dir", str(tmp_path), "--activations", "relu,swish", "--no-progress"])
    assert exit_info.value.code == 2 and "unknown activations" in capsys.readouterr().err


def _fake_results(epochs):
    config = cs.dataclasses.asdict(cs.StudyConfig(datasets=["d"], activations=list(epochs), batch_sizes=[8],
                                                  seeds=[0, 1], max_epochs=20))
    runs = {}
    for act, per_seed in epochs.items():
        for seed, e in enumerate(per_seed):
            n = e if e is not None else 20
            runs[cs.run_key("d", act, 8, seed)] = dict(
                dataset="d", activation=act, batch_size=8, seed=seed, train_acc=[0.5] * n, test_acc=[0.5] * n,
                epochs_to_target=e, wall_s=1.0, betti=None)
    return {"config": config, "runs": runs}


def test_summary_and_speedup_arithmetic():
    rows = cs.summarise(_fake_results({"relu": [10, 14], "many_to_one": [5, 7], "tanh": [None, 10]}))
    by_act = {r["activation"]: r for r in rows}
    assert by_act["relu"]["mean_epochs"] == 12 and by_act["many_to_one"]["mean_epochs"] == 6
    assert by_act["tanh"]["reached"] == 1 and by_act["tanh"]["mean_epochs"] == 15   # None counted as 20
    sp = {s["activation"]: s for s in cs.speedups(rows)}
    assert sp["many_to_one"]["ratio"] == pytest.approx(2.0) and sp["many_to_one"]["exact"]
    assert sp["tanh"]["ratio"] == pytest.approx(0.8) and not sp["tanh"]["exact"]


def test_betti_summary_arithmetic():
    results = _fake_results({"relu": [3, 3]})
    run = results["runs"][cs.run_key("d", "relu", 8, 0)]
    run["betti"] = {"0": [[9, 9], [5, 1], [2, 0], [1, 0]], "1": [[9, 9], [3, 0], [4, 0], [2, 0]]}
    (row,) = cs.betti_summary(results)
    assert row["total"] == (5 + 1 + 2 + 1) + (3 + 4 + 2) and row["peak_b0"] == 5 and row["simple_from"] == 3
    assert "| d | 8 | relu | 0 | 18 | 5 | 3 |" in cs.render_markdown(results)
