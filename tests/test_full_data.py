"""The whole-CIFAR-10 path (issue 24): batched augmentation, the fast training recipe, data
selection, provenance of records, one data set per out-dir, and baselines committed to the
repository (finished or as a checkpoint)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import benchmarks.core.baseline_store as store
import benchmarks.core.data
import benchmarks.grid.runner
from benchmarks.core.config import (TRAINING_RECIPE_DEFAULTS, apply_overrides, baseline_key, preset_config, run_key,
                               stable_hash, validate)
from benchmarks.core.data import AugmentedCifar, BatchedAugmentedCifar, CifarArrays, load_data, portable_path
from benchmarks.run import main
from benchmarks.core.training import fit
from tests.offline_data import needs_offline_data


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)


def test_batched_augmentation_draws_from_the_per_image_transforms():
    """Every batched image is one of the 81 x 2 crops/flips of its source, normalised exactly as
    the per-image pipeline does it; every offset and both flips occur."""
    images = _images(64)
    batched = BatchedAugmentedCifar(images, np.arange(64) % 10)
    reference = AugmentedCifar(images, np.arange(64) % 10)
    normalise = reference.transform.transforms[-1]
    out, labels = batched.batch(torch.arange(64), torch.Generator().manual_seed(3))
    assert labels.tolist() == (np.arange(64) % 10).tolist()
    seen = set()
    for i in range(64):
        padded = F.pad(reference.images[i], (4, 4, 4, 4))
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.allclose(normalise(padded[:, dy:dy + 32, dx:dx + 32].flip(-1) if flip
                                               else padded[:, dy:dy + 32, dx:dx + 32]), out[i], atol=1e-5)]
        assert matches, f"image {i} is no crop/flip of its source"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({dy for dy, _, _ in seen}) >= 5 and len({dx for _, dx, _ in seen}) >= 5


def test_batched_augmentation_is_a_function_of_indices_and_generator_and_channels_last_is_layout_only():
    images = _images(16, seed=1)
    plain = BatchedAugmentedCifar(images, np.zeros(16, dtype=np.int64))
    nhwc = BatchedAugmentedCifar(images, np.zeros(16, dtype=np.int64), channels_last=True)
    indices = torch.tensor([3, 1, 15, 0])
    a, _ = plain.batch(indices, torch.Generator().manual_seed(7))
    b, _ = plain.batch(indices, torch.Generator().manual_seed(7))
    c, _ = nhwc.batch(indices, torch.Generator().manual_seed(7))
    d, _ = plain.batch(indices, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)
    assert c.is_contiguous(memory_format=torch.channels_last)


def _tiny_cifar(train: int = 48, test: int = 16) -> CifarArrays:
    return CifarArrays(_images(train), np.arange(train) % 10, _images(test, seed=2), np.arange(test) % 10,
                       source="memory", location="-")


def _tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))


@pytest.mark.parametrize("precision,channels_last", [("bf16", True), ("fp32", False)])
def test_fast_recipe_trains_and_resumes_bit_for_bit(tmp_path, precision, channels_last):
    arrays = _tiny_cifar()
    train_set = benchmarks.core.data.train_dataset(arrays, "batched", channels_last)
    test_loader = benchmarks.core.data.evaluation_loader(arrays, 8)
    settings = dict(epochs=3, lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=16, seed=2,
                    device=torch.device("cpu"), progress=False, schedule="onecycle", nesterov=True,
                    label_smoothing=0.1, precision=precision, channels_last=channels_last)
    straight_model = _tiny_cnn()
    straight = fit(straight_model, train_set, test_loader, **settings)
    assert [row["epoch"] for row in straight] == [1, 2, 3]
    assert straight[0]["lr"] < straight[1]["lr"]  # one-cycle: warming up during epoch 1

    def stop_after_one(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_tiny_cnn(), train_set, test_loader, checkpoint=tmp_path / "c.ckpt", on_epoch=stop_after_one, **settings)
    resumed_model = _tiny_cnn()
    resumed = fit(resumed_model, train_set, test_loader, checkpoint=tmp_path / "c.ckpt", **settings)
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in straight]
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name


def test_fit_rejects_an_unknown_precision():
    data = TensorDataset(torch.randn(4, 3, 4, 4), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(_tiny_cnn(), data, DataLoader(data), epochs=1, lr=0.1, batch_size=2, seed=0, device=torch.device("cpu"),
            precision="fp16", progress=False)


def test_full_preset_validates_and_its_recipe_enters_the_keys():
    full = validate(preset_config("full"))
    assert full.data == "auto" and full.precision == "bf16" and full.augmentation == "batched"
    key = baseline_key(full, "d" * 64)
    assert key["baseline_schedule"] == "onecycle"
    assert {name: key[name] for name in TRAINING_RECIPE_DEFAULTS} == {
        name: getattr(full, name) for name in TRAINING_RECIPE_DEFAULTS}
    assert run_key(full, "b", "l1", 0.5, 0)["precision"] == "bf16"
    # the small presets keep their keys exactly (their committed records stay valid)
    cpu = preset_config("cpu")
    assert cpu.data == "subset" and not set(TRAINING_RECIPE_DEFAULTS) & set(baseline_key(cpu, "d" * 64))
    assert "baseline_schedule" not in baseline_key(cpu, "d" * 64)
    for change in ("precision=bf16", "channels_last=true", "augmentation=batched", "nesterov=true",
                   "label_smoothing=0.1"):
        changed = apply_overrides(cpu, [change])
        assert stable_hash(baseline_key(changed, "d")) != stable_hash(baseline_key(cpu, "d")), change
        assert stable_hash(run_key(changed, "b", "l1", 0.5, 0)) != stable_hash(run_key(cpu, "b", "l1", 0.5, 0))


@pytest.mark.parametrize("assignment,message", [("precision=fp16", "precision must be one of"),
                                                ("augmentation=pil", "augmentation must be one of"),
                                                ("baseline_schedule=step", "baseline_schedule must be one of"),
                                                ("label_smoothing=1.5", "label_smoothing must be")])
def test_bad_recipe_values_are_refused_by_name(assignment, message):
    with pytest.raises(ValueError, match=message):
        validate(apply_overrides(preset_config("full"), [assignment]))


def test_auto_prefers_the_whole_data_set_and_falls_back_to_the_subset(tmp_path, monkeypatch, caplog):
    def write(path, train, test):
        np.savez(path, x_train=_images(train), y_train=np.arange(train) % 10, x_test=_images(test, 1),
                 y_test=np.arange(test) % 10)

    full, subset = tmp_path / "cifar10.npz", tmp_path / "cifar10_subset.npz"
    write(full, 20, 10)
    write(subset, 6, 4)
    monkeypatch.setattr(benchmarks.core.data, "DEFAULT_FULL_NPZ", full)
    monkeypatch.setattr(benchmarks.core.data, "DEFAULT_NPZ", subset)
    assert len(load_data("auto").y_train) == 20
    assert len(load_data("subset").y_train) == 6
    full.unlink()
    assert len(load_data("auto").y_train) == 6
    assert "using the subset" in caplog.text
    subset.unlink()
    with pytest.raises(FileNotFoundError, match="data=auto looks for the offline CIFAR-10"):
        load_data("auto")


def test_described_data_locations_are_relative_to_the_repository():
    location = benchmarks.core.data.REPO_ROOT.parent / "shared" / "data" / "cifar10.npz"
    arrays = CifarArrays(_images(2), np.arange(2), _images(2), np.arange(2), source="npz", location=str(location))
    assert arrays.describe()["location"] == "../shared/data/cifar10.npz" == portable_path(str(location))


def test_an_out_dir_takes_records_of_one_data_set_only():
    arrays = _tiny_cifar()
    same = arrays.describe()
    assert benchmarks.grid.runner.data_set_mismatch(same, arrays) is None
    assert benchmarks.grid.runner.data_set_mismatch(None, arrays) is None
    other = {**same, "content_sha256": "0" * 64, "train_images": 50000, "test_images": 10000}
    message = benchmarks.grid.runner.data_set_mismatch(other, arrays)
    assert "never mixed" in message and "50000 train" in message and "48 train" in message


def test_records_are_reused_only_from_the_same_data_and_baseline_weights():
    provenance = {"data_content_sha256": "d1", "baseline_weights_sha256": "w1"}
    record = {"schema_version": benchmarks.grid.runner.SCHEMA_VERSION, "run_hash": "h", "status": "ok", **provenance}
    assert benchmarks.grid.runner._reusable(record, "h", provenance)
    assert not benchmarks.grid.runner._reusable(record, "h", {**provenance, "data_content_sha256": "d2"})
    assert not benchmarks.grid.runner._reusable(record, "h", {**provenance, "baseline_weights_sha256": "w2"})
    legacy = {key: value for key, value in record.items() if key not in provenance}
    assert not benchmarks.grid.runner._reusable(legacy, "h", provenance)  # nothing vouches for it
    assert benchmarks.grid.runner._reusable(legacy, "h", provenance, legacy_ok=True)


@needs_offline_data
def test_a_corrupt_results_json_no_longer_lets_records_of_other_weights_through(tmp_path, monkeypatch, capsys):
    """Issue 26 item 2: the per-record digests catch what the results.json guard cannot see."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["--preset", "smoke", "--out-dir", str(out), "--cache-dir", str(cache), "--pruners", "l1", "--seeds", "0",
            "--set", "train_size=128", "--set", "test_size=64", "--set", "baseline_epochs=1",
            "--set", "finetune_epochs=1", "--set", "latency_repeats=2", "--no-progress"]
    assert main(args) == 0
    record = json.loads((out / "runs" / "l1_sparsity0.5_seed0.json").read_text())
    assert record["baseline_weights_sha256"] and len(record["data_content_sha256"]) == 64
    folder = next(cache.glob("baseline-*"))
    info = json.loads((folder / "info.json").read_text())
    state = torch.load(folder / "model.pt", weights_only=True)
    first = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[first].view(-1)[0] += 1.0
    torch.save(state, folder / "model.pt")
    (folder / "info.json").write_text(json.dumps({**info, "weights_sha256": "changed"}))
    (out / "results.json").write_text("garbage")
    calls = []
    real = benchmarks.grid.runner.run_experiment
    monkeypatch.setattr(benchmarks.grid.runner, "run_experiment", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(args) == 0
    assert len(calls) == 1  # redone, not credited to the new weights
    assert json.loads((out / "runs" / "l1_sparsity0.5_seed0.json").read_text())["baseline_weights_sha256"] == "changed"


def _checkpointed_cache(tmp_path):
    folder = tmp_path / "cache" / "baseline-abc"
    folder.mkdir(parents=True)
    model = _tiny_cnn()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {"epochs": 5, "seed": 0, "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                  "scheduler": {}, "history": [{"epoch": 1, "test_acc": 0.2}, {"epoch": 2, "test_acc": 0.3}],
                  "stopped": False}
    torch.save(checkpoint, folder / "train.ckpt")
    (folder / "key.json").write_text(json.dumps({"width": 1.0}))
    return folder, checkpoint


def test_a_published_checkpoint_is_restored_into_an_empty_cache(tmp_path):
    folder, checkpoint = _checkpointed_cache(tmp_path)
    committed = tmp_path / "store"
    assert store.publish(folder, committed)["kind"] == "checkpoint"
    meta = json.loads((committed / "baseline-abc" / "checkpoint.json").read_text())
    assert meta["epochs_done"] == 2 and set(meta["sha256"]) == {"model", "state"}
    fresh = tmp_path / "fresh-cache" / "baseline-abc"
    assert store.restore("abc", fresh, committed) == "checkpoint"
    restored = torch.load(fresh / "train.ckpt", weights_only=False)
    assert restored["history"] == checkpoint["history"]
    for name, tensor in checkpoint["model"].items():
        assert torch.equal(restored["model"][name], tensor)
    assert store.restore("abc", fresh, committed) is None  # the cache is as far along already


def test_a_damaged_committed_checkpoint_is_refused_by_name(tmp_path):
    folder, _ = _checkpointed_cache(tmp_path)
    committed = tmp_path / "store"
    store.publish(folder, committed)
    part = committed / "baseline-abc" / "checkpoint-model.pt"
    part.write_bytes(part.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(store.BaselineStoreError, match="checkpoint-model.pt"):
        store.restore("abc", tmp_path / "fresh" / "baseline-abc", committed)


def test_published_weights_are_checked_against_their_digest(tmp_path):
    from benchmarks.core.baseline import weights_digest

    folder = tmp_path / "cache" / "baseline-abc"
    folder.mkdir(parents=True)
    state = _tiny_cnn().state_dict()
    torch.save(state, folder / "model.pt")
    (folder / "info.json").write_text(json.dumps({"test_acc": 0.9, "weights_sha256": weights_digest(state)}))
    committed = tmp_path / "store"
    assert store.publish(folder, committed)["kind"] == "weights"
    fresh = tmp_path / "fresh" / "baseline-abc"
    assert store.restore("abc", fresh, committed) == "weights"
    assert json.loads((fresh / "info.json").read_text())["weights_sha256"] == weights_digest(state)
    state[next(iter(state))].view(-1)[0] += 1
    torch.save(state, committed / "baseline-abc" / "model.pt")
    with pytest.raises(store.BaselineStoreError, match="does not match the weights_sha256"):
        store.restore("abc", tmp_path / "fresh2" / "baseline-abc", committed)


# --- issue 26, benchmark items 1, 5, 13, 15, 16 ---------------------------------------------------


def test_convergence_is_read_at_the_reports_tolerance_not_the_records():
    """Item 1: convergence_tolerance is a render-time reading of the stored curves."""
    config = apply_overrides(preset_config("smoke"), ["convergence_tolerance=0.5"])
    record = {"status": "ok", "curve": [0.2, 0.6, 0.7], "convergence_epoch": None}
    assert benchmarks.grid.runner.with_convergence(record, 0.71, 0.6)["convergence_epoch"] == 0
    assert benchmarks.grid.runner.with_convergence(record, 0.71, 0.02)["convergence_epoch"] == 2
    assert benchmarks.grid.runner.with_convergence(record, 0.71, 0.001)["convergence_epoch"] is None
    assert "convergence_tolerance" not in run_key(config, "b", "l1", 0.5, 0)


def test_a_label_cannot_impersonate_another_registered_pruner():
    """Item 5."""
    for pruners in (["random=l1", "topological"], ["l1=topological"]):
        with pytest.raises(ValueError, match="name of another registered pruner"):
            validate(apply_overrides(preset_config("smoke"), ["pruners=" + ",".join(pruners)]))
    validate(apply_overrides(preset_config("smoke"), ["pruners=topo_w2=topological,random"]))  # own label: fine


@pytest.mark.parametrize("device", ["cuda:x", "cuda:-1", "cuda:1.5"])
def test_a_malformed_device_string_is_refused_at_validation(device):
    """Item 16."""
    with pytest.raises(ValueError, match="device must be"):
        validate(apply_overrides(preset_config("smoke"), [f"device={device}"]))


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_records_holding_non_finite_numbers_are_malformed(poison):
    """Item 15: such a record is set aside and redone like any malformed one."""
    record = {"schema_version": 1, "run_hash": "h", "status": "failed", "pruner": "l1", "sparsity": 0.5, "seed": 0,
              "curve": [0.1, poison]}
    assert "non-finite" in benchmarks.grid.runner.record_problem(record)
    assert benchmarks.grid.runner.record_problem({**record, "curve": [0.1, 0.2]}) is None


def test_sigterm_is_handled_like_ctrl_c(monkeypatch, tmp_path, capsys):
    """Item 13: SIGTERM leaves status 'interrupted' and exits 143."""
    import os
    import signal

    import benchmarks.run

    def terminated_run(config, **kwargs):
        out = kwargs["out_dir"]
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not interrupt the run")
        except KeyboardInterrupt:
            (out / "status").write_text("interrupted")
            raise

    monkeypatch.setattr(benchmarks.grid.runner, "run_benchmark", terminated_run)
    previous = signal.getsignal(signal.SIGTERM)
    code = benchmarks.run.main(["--preset", "smoke", "--out-dir", str(tmp_path), "--no-progress"])
    assert code == 143 and (tmp_path / "status").read_text() == "interrupted"
    assert "SIGTERM" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == previous  # restored after the run


def test_every_config_field_is_keyed_or_documented_as_not():
    """Item 1, generalised: a field that changes results but enters no key would let records made
    under one setting be reused under another."""
    import dataclasses

    from benchmarks.core.config import NOT_IN_KEYS, BenchmarkConfig

    base = preset_config("smoke")
    changes = {"width": 0.25, "baseline_epochs": 7, "baseline_lr": 0.07, "baseline_seed": 3, "batch_size": 32,
               "momentum": 0.8, "weight_decay": 1e-4, "nesterov": True, "baseline_schedule": "onecycle",
               "label_smoothing": 0.1, "precision": "bf16", "channels_last": True, "augmentation": "batched",
               "op_types": ["Linear"], "pruner_options": {"l1": {"mode": "x"}}, "backend": "torch-pruning",
               "allocation": "topological", "calibration_size": 99, "bn_batches": 3, "finetune_epochs": 9,
               "finetune_lr": 0.02, "latency_batch_size": 4, "latency_warmup": 9, "latency_repeats": 9,
               "schedule": "agp", "schedule_steps": 7, "batchnorm_masks": True,
               "final_bn": False, "bn_augmented": True}
    # keyed only beside another field's non-default value (one-shot records keep their old keys)
    requires = {"schedule_steps": {"schedule": "agp"}, "batchnorm_masks": {"schedule": "agp"},
                "final_bn": {"schedule": "agp"}}
    fields = {field.name for field in dataclasses.fields(BenchmarkConfig)}
    assert set(changes) | set(NOT_IN_KEYS) == fields, fields ^ (set(changes) | set(NOT_IN_KEYS))
    for name, value in changes.items():
        base = dataclasses.replace(preset_config("smoke"), **requires.get(name, {}))
        changed = dataclasses.replace(base, **{name: value})
        same_baseline = stable_hash(baseline_key(changed, "d")) == stable_hash(baseline_key(base, "d"))
        same_run = stable_hash(run_key(changed, "b", "l1", 0.5, 0)) == stable_hash(run_key(base, "b", "l1", 0.5, 0))
        assert not (same_baseline and same_run), f"{name} changes no key"


@pytest.mark.parametrize("op_types,hint", [("conv2d", "did you mean 'Conv2d'"), ("Conv5d", "not a torch.nn layer")])
def test_unknown_op_types_are_refused_before_any_record(op_types, hint):
    """Issue 26 item 4, the benchmark's half: a typo in op_types is a usage error, not 45 failed records."""
    with pytest.raises(ValueError, match=hint):
        validate(apply_overrides(preset_config("smoke"), [f"op_types={op_types}"]))
    validate(apply_overrides(preset_config("smoke"), ["op_types=Conv2d,Linear"]))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_is_named_in_a_warning(monkeypatch, caplog, native):
    """bf16 autocast on a CPU without AVX-512 BF16 or AMX trains about 12x slower than fp32
    (measured on an AVX2 EPYC): ``fit`` says so, with the fixes; on a CPU with native bf16, on
    fp32 and on other devices it says nothing."""
    import logging
    from benchmarks.core import training

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger=training.__name__):
        assert training.warn_if_bf16_is_emulated("bf16", torch.device("cpu")) is (not native)
        assert training.warn_if_bf16_is_emulated("fp32", torch.device("cpu")) is False
        assert training.warn_if_bf16_is_emulated("bf16", torch.device("meta")) is False
    messages = [r.getMessage() for r in caplog.records]
    if native:
        assert messages == []
    else:
        assert len(messages) == 1 and "emulates bfloat16" in messages[0] and "--set precision=fp32" in messages[0]
