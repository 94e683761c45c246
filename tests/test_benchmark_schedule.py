"""Issue 27, the benchmark's half: ``--set schedule=agp`` (or ``linear``) prunes during the
fine-tuning budget with NNI's AGPPruner / LinearPruner around the registry pruner
(benchmarks/grid/gradual.py), at the one-shot record's training budget.

Keys: one-shot records keep the keys they had before schedules existed (pinned below by hashes
computed with the code of commit 89bd745, before the fields were added); scheduled records get
keys of their own. End to end: a tiny smoke run under AGP for a norm pruner and ours, compared
with the one-shot run of the same pruners on the same baseline.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import benchmarks.core.training

from benchmarks.grid.compare_runs import compare_runs
from benchmarks.core.config import PRESETS, apply_overrides, preset_config, run_key, stable_hash, validate
from benchmarks.grid.gradual import schedule_interval, schedule_plan
from benchmarks.run import main
from tests.offline_data import needs_offline_data

#: stable_hash(run_key(preset, "b", pruner, sparsity, seed)) before the schedule fields existed
ONE_SHOT_KEYS = {
    ("smoke", "l1", 0.5, 0): "7b0c6e36beeb008b", ("smoke", "topo=topological", 0.3, 2): "ef75162f87160e2d",
    ("cpu", "l1", 0.5, 0): "1add4713f1c1b32f", ("cpu", "topo=topological", 0.3, 2): "bae87dd93217aa24",
    ("full", "l1", 0.5, 0): "6a97f6413a9aeca0", ("full", "topo=topological", 0.3, 2): "d6da00537e1c2059",
    ("paper", "l1", 0.5, 0): "fd83220504c1c69a", ("paper", "topo=topological", 0.3, 2): "0319a57f63c5986f",
}


@pytest.mark.parametrize("entry", sorted(ONE_SHOT_KEYS), ids=lambda e: f"{e[0]}-{e[1]}")
def test_one_shot_keys_are_unchanged(entry):
    preset, pruner, sparsity, seed = entry
    config = preset_config(preset)
    assert config.schedule == "oneshot"
    assert stable_hash(run_key(config, "b", pruner, sparsity, seed)) == ONE_SHOT_KEYS[entry]
    # schedule_steps means nothing to one-shot, so it does not move one-shot keys either
    other = dataclasses.replace(config, schedule_steps=config.schedule_steps + 3)
    assert stable_hash(run_key(other, "b", pruner, sparsity, seed)) == ONE_SHOT_KEYS[entry]


def test_scheduled_records_get_keys_of_their_own():
    base = preset_config("cpu")
    hashes = {}
    for schedule, steps in (("oneshot", 5), ("agp", 5), ("agp", 6), ("linear", 5)):
        config = dataclasses.replace(base, schedule=schedule, schedule_steps=steps)
        key = run_key(config, "b", "l1", 0.5, 0)
        assert ("schedule" in key) == (schedule != "oneshot")
        hashes[(schedule, steps)] = stable_hash(key)
    assert len(set(hashes.values())) == 4, hashes
    # the rest of the key is the one-shot record's: same budget, same baseline, same everything else
    agp = run_key(dataclasses.replace(base, schedule="agp"), "b", "l1", 0.5, 0)
    assert {k: v for k, v in agp.items() if k != "schedule"} == run_key(base, "b", "l1", 0.5, 0)
    assert agp["schedule"] == {"kind": "agp", "total_times": 5, "interval": "budget // (total_times + 1)"}
    # batchnorm_masks enters the key only when set (the records above keep theirs)
    masked_bn = run_key(dataclasses.replace(base, schedule="agp", batchnorm_masks=True), "b", "l1", 0.5, 0)
    assert masked_bn["schedule"] == {**agp["schedule"], "batchnorm_masks": True}
    assert run_key(dataclasses.replace(base, schedule="agp", batchnorm_masks=False), "b", "l1", 0.5, 0) == agp
    no_final = run_key(dataclasses.replace(base, schedule="agp", final_bn=False), "b", "l1", 0.5, 0)
    assert no_final["schedule"] == {**agp["schedule"], "final_bn": False}
    assert run_key(dataclasses.replace(base, schedule="agp", final_bn=True), "b", "l1", 0.5, 0) == agp


def test_no_preset_sets_a_schedule():
    assert all("schedule" not in values and "schedule_steps" not in values for values in PRESETS.values())


@pytest.mark.parametrize("assignments,message", [
    (["schedule=gradual"], r"schedule must be one of \['oneshot', 'agp', 'linear'\], got 'gradual'"),
    (["schedule_steps=0"], r"schedule_steps must be an int >= 1, got 0"),
    (["schedule=agp", "finetune_epochs=0"], r"schedule='agp' .*finetune_epochs must be >= 1, got 0"),
    (["schedule=linear", "backend=torch-pruning"], r"schedule='linear' runs NNI's LinearPruner and needs "
                                                   r"backend='nni'"),
    (["schedule=agp", "pruners=l1,taylor"], r"pruners: 'taylor' \(TaylorPruner\) cannot run under schedule='agp'"),
    (["batchnorm_masks=true"], r"batchnorm_masks=true changes only what a schedule trains .* set schedule=agp"),
    (["final_bn=false"], r"final_bn=false changes only a schedule's last step .* set schedule=agp"),
    (["schedule=agp", "batchnorm_masks=maybe"], r"--set batchnorm_masks=maybe: expected bool, got 'maybe'"),
])
def test_schedule_values_are_validated(assignments, message):
    with pytest.raises(ValueError, match=message):
        validate(apply_overrides(preset_config("smoke"), assignments))


def test_every_default_pruner_may_run_under_a_schedule():
    for schedule in ("agp", "linear"):
        validate(apply_overrides(preset_config("cpu"), [f"schedule={schedule}", "pruners=l1,l2,fpgm,topological,"
                                                                                "random,betti,v=topological"]))


def test_the_interval_leaves_a_part_of_the_budget_at_the_final_sparsity():
    for budget, times in ((8, 3), (32, 5), (972, 5), (1564, 5), (7, 6)):
        interval = schedule_interval(budget, times)
        assert interval >= 1
        assert budget - times * interval >= interval  # the last update is followed by >= one interval
    # fewer steps than parts: refused when the record starts (the number of images is known only then)
    config = apply_overrides(preset_config("smoke"), ["schedule=agp", "schedule_steps=8", "finetune_epochs=2"])
    with pytest.raises(ValueError, match=r"schedule_steps=8 needs at least 9 optimizer steps, but finetune_epochs=2 "
                                         r"x 4 batches gives 8"):
        schedule_plan(config, 256)
    assert schedule_plan(apply_overrides(config, ["schedule_steps=7"]), 256) == (4, 8, 1)


@pytest.mark.parametrize("evaluator_on", ["scheduler", "bound pruner"])
def test_nni_trains_the_wrapped_weights_only_when_the_bound_pruner_has_the_evaluator(evaluator_on):
    """Why benchmarks.grid.gradual gives the evaluator to the bound pruner: given to AGPPruner (NNI's
    documented form), NNI maps the optimizer's parameters by name only after the bound pruner
    wrapped the model, and the optimizer it re-creates leaves out the wrapped layers' weights and
    biases (they would stay at the baseline's values while the masks are chosen on them)."""
    import nni
    import torch
    from nni.compression.pruning import AGPPruner, L1NormPruner
    from nni.compression.utils import TorchEvaluator

    from benchmarks.grid.gradual import untrained_parameters

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    seen = {}

    def training_func(wrapped, optimizer, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        seen["untrained"] = untrained_parameters(wrapped, optimizer)
        for _ in range(max_steps):
            optimizer.zero_grad()
            training_step((torch.rand(4, 3, 8, 8), torch.arange(4)), wrapped).backward()
            optimizer.step()

    def training_step(batch, wrapped):
        return torch.nn.functional.cross_entropy(wrapped(batch[0]), batch[1])

    evaluator = TorchEvaluator(training_func, nni.trace(torch.optim.SGD)(model.parameters(), lr=0.1), training_step)
    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    if evaluator_on == "scheduler":
        pruner = AGPPruner(L1NormPruner(model, config), interval_steps=1, total_times=2, evaluator=evaluator)
    else:
        pruner = AGPPruner(L1NormPruner(model, config, evaluator=evaluator), interval_steps=1, total_times=2)
    pruner.compress(max_steps=3, max_epochs=None)
    if evaluator_on == "scheduler":
        assert sorted(seen["untrained"]) == [f"{layer}._nni_wrapper.{name}" for layer in (0, 2)
                                             for name in ("bias", "weight")]
    else:
        assert seen["untrained"] == []


TINY = ["--preset", "smoke", "--seeds", "0", "--no-progress", "--set", "train_size=256", "--set", "test_size=128",
        "--set", "baseline_epochs=1", "--set", "finetune_epochs=2", "--set", "latency_repeats=2"]


def _records(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["failures"] == [], results["failures"]
    return {run["pruner"]: run for run in results["runs"]}


AGP3 = ["--set", "schedule=agp", "--set", "schedule_steps=3"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """One-shot and AGP runs of l1 and topological (and AGP without BatchNorm re-estimation for l1)
    on one tiny baseline; returns ``(folder, the arguments they share)``."""
    folder = tmp_path_factory.mktemp("schedule")
    common = [*TINY, "--cache-dir", str(folder / "cache")]
    pruners = "l1,topological"
    assert main([*common, "--out-dir", str(folder / "oneshot"), "--pruners", pruners]) == 0
    assert main([*common, "--out-dir", str(folder / "agp"), "--pruners", pruners, *AGP3]) == 0
    # the snapshot at the last update (test images, BN re-estimation) must not change the training
    assert main([*common, "--out-dir", str(folder / "agp_nobn"), "--pruners", "l1", *AGP3,
                 "--set", "bn_batches=0"]) == 0
    return folder, common


@needs_offline_data
def test_agp_and_one_shot_at_the_same_budget_end_to_end(tiny_runs):
    tmp_path, _ = tiny_runs
    oneshot, agp, nobn = _records(tmp_path / "oneshot"), _records(tmp_path / "agp"), _records(tmp_path / "agp_nobn")
    baseline = json.loads((tmp_path / "agp" / "results.json").read_text())["baseline"]

    for name in ("l1", "topological"):
        one, run = oneshot[name], agp[name]
        assert "pruning_schedule" not in one and "schedule" not in one["run_key"]
        assert run["run_key"]["schedule"]["kind"] == "agp"
        schedule = run["pruning_schedule"]
        # 256 images / batch 64 = 4 steps per epoch, 2 epochs: budget 8, interval 8 // 4 = 2
        assert (schedule["steps_per_epoch"], schedule["budget_steps"], schedule["interval_steps"]) == (4, 8, 2)
        assert [u["optimizer_step"] for u in schedule["updates"]] == [2, 4, 6]
        assert schedule["steps_at_final_sparsity"] == 2 and schedule["first_full_sparsity_epoch"] == 2
        # AGP's sparsities 1 - (1 - t/3)^3 of 0.5, NNI's rounding: 8-channel layers keep 6, 5, then 4
        assert [u["kept"]["features.0"] for u in schedule["updates"]] == [6, 5, 4]
        assert schedule["updates"][-1]["kept"] == schedule["kept_channels"]
        # the same budget: epochs, learning rate per epoch; the same final architecture as one-shot
        assert [(r["epoch"], r["lr"]) for r in run["finetune_history"]] == \
            [(r["epoch"], r["lr"]) for r in one["finetune_history"]]
        assert run["layer_widths"] == one["layer_widths"]
        assert (run["params"], run["flops"]) == (one["params"], one["flops"])
        # the curve starts at the unpruned baseline and ends at the sped-up, BN-re-estimated model
        assert run["curve"][0] == baseline["test_acc"] and len(run["curve"]) == 3
        assert run["curve"][-1] == run["recoverability"] == run["hits_final"].count("1") / 128
        assert schedule["masked_acc"] == run["finetune_history"][-1]["test_acc"]
        assert schedule["final_bn_images"] == 4 * 64 and 0 <= schedule["sped_up_acc"] <= 1
        assert run["hits_after_bn"].count("1") / 128 == run["acc_after_bn"] and run["bn_images"] == 4 * 64
        assert run["pruning_seconds"] == pytest.approx(sum(u["seconds"] for u in schedule["updates"]))
    assert [r["train_loss"] for r in nobn["l1"]["finetune_history"]] == \
        [r["train_loss"] for r in agp["l1"]["finetune_history"]]
    assert nobn["l1"]["acc_after_pruning"] == agp["l1"]["acc_after_pruning"] and "acc_after_bn" not in nobn["l1"]
    # without re-estimation the final model is the sped-up one as it is
    assert nobn["l1"]["pruning_schedule"]["final_bn_images"] == 0
    assert nobn["l1"]["recoverability"] == nobn["l1"]["pruning_schedule"]["sped_up_acc"]

    assert "**Pruning schedule `agp`**: NNI's `AGPPruner`" in (tmp_path / "agp" / "report.md").read_text()
    assert "Pruning schedule" not in (tmp_path / "oneshot" / "report.md").read_text()
    # the comparison the option exists for: image by image, pruner by pruner, same baseline
    load = lambda folder: json.loads((tmp_path / folder / "results.json").read_text())  # noqa: E731
    rows = compare_runs(load("agp"), load("oneshot"), metric="recoverability", against="same")
    assert {row["pruner"] for row in rows} == {"l1", "topological"} and all(row["paired"] for row in rows)


@needs_offline_data
def test_interrupted_scheduled_record_resumes_after_its_last_epoch(tiny_runs, tmp_path, monkeypatch):
    folder, common = tiny_runs
    straight = _records(folder / "agp")["topological"]
    argv = [*common, "--out-dir", str(tmp_path / "agp"), "--pruners", "topological", *AGP3]
    real_epoch = benchmarks.core.training._train_one_epoch
    trained = []

    def interrupt_in_epoch_two(*args, **kwargs):  # (model, loader, optimizer, device, desc, ...)
        trained.append(args[4])
        if args[4].endswith("2/2"):
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(benchmarks.core.training, "_train_one_epoch", interrupt_in_epoch_two)
    assert main(argv) == 130  # after epoch 1, which held two of the three mask updates (steps 2 and 4)
    work = list((tmp_path / "agp" / "work").glob("topological_sparsity0.5_seed0-*"))
    assert len(work) == 1 and (work[0] / "schedule.ckpt").is_file()

    trained.clear()
    monkeypatch.setattr(benchmarks.core.training, "_train_one_epoch",
                        lambda *args, **kwargs: trained.append(args[4]) or real_epoch(*args, **kwargs))
    assert main(argv) == 0
    assert [desc[-3:] for desc in trained] == ["2/2"]  # epoch 1 and its two updates were not redone
    resumed = _records(tmp_path / "agp")["topological"]
    # the same record as without the interruption: updates, training, measurements, image by image
    assert resumed["pruning_schedule"]["updates"][:2] != [] and \
        [(u["optimizer_step"], u["kept"]) for u in resumed["pruning_schedule"]["updates"]] == \
        [(u["optimizer_step"], u["kept"]) for u in straight["pruning_schedule"]["updates"]]
    for field in ("curve", "hits_final", "hits_after_pruning", "hits_after_bn", "layer_widths", "criterion"):
        assert resumed[field] == straight[field], field
    assert [(r["train_loss"], r["test_acc"]) for r in resumed["finetune_history"]] == \
        [(r["train_loss"], r["test_acc"]) for r in straight["finetune_history"]]
    assert not work[0].exists()  # removed once the record is written


@needs_offline_data
def test_batchnorm_masks_make_the_masked_model_the_sped_up_one(tiny_runs, tmp_path):
    folder, common = tiny_runs
    assert main([*common, "--out-dir", str(tmp_path / "bn"), "--pruners", "l1", *AGP3,
                 "--set", "batchnorm_masks=true", "--set", "final_bn=false"]) == 0
    run = _records(tmp_path / "bn")["l1"]
    # final_bn=false: the sped-up model is measured as it is, no last BatchNorm re-estimation
    assert run["pruning_schedule"]["final_bn_images"] == 0
    assert run["recoverability"] == run["pruning_schedule"]["sped_up_acc"]
    report = (tmp_path / "bn" / "report.md").read_text()
    assert "with every BatchNorm after a pruned layer masked with it (batchnorm_masks)" in report
    assert "then the speed-up (no BatchNorm re-estimation after it)" in report
    assert run["run_key"]["schedule"]["batchnorm_masks"] is True
    assert {"op_names": ["features.1"], "target_names": ["weight", "bias"],
            "target_settings": {t: {"align": {"module_name": "features.0", "target_name": "weight", "dims": [0]}}
                                for t in ("weight", "bias")}} in run["config_list"]
    schedule = run["pruning_schedule"]
    # the masked model after the budget and the sped-up one agree (to float rounding: one image of 128 at most)
    assert abs(schedule["masked_acc"] - schedule["sped_up_acc"]) <= 1 / 128
    plain = _records(folder / "agp")["l1"]  # the same layers and channel counts at every update
    assert [u["kept"] for u in schedule["updates"]] == [u["kept"] for u in plain["pruning_schedule"]["updates"]]


@needs_offline_data
def test_linear_schedule_end_to_end(tmp_path):
    common = [*TINY, "--cache-dir", str(tmp_path / "cache"), "--pruners", "random"]
    assert main([*common, "--out-dir", str(tmp_path / "linear"), "--set", "schedule=linear",
                 "--set", "schedule_steps=2"]) == 0
    schedule = _records(tmp_path / "linear")["random"]["pruning_schedule"]
    assert schedule["kind"] == "linear" and [u["optimizer_step"] for u in schedule["updates"]] == [2, 4]
    assert [u["kept"]["features.0"] for u in schedule["updates"]] == [6, 4]  # 0.25, then 0.5 of 8 channels


@pytest.mark.parametrize("field", ["batchnorm_masks", "final_bn"])
def test_schedule_switches_must_be_bools_when_set_in_code(field):
    config = dataclasses.replace(preset_config("smoke"), schedule="agp", **{field: 1})
    with pytest.raises(ValueError, match=rf"{field} must be true or false, got 1"):
        validate(config)
