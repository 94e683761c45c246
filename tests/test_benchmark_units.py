"""Unit tests of the benchmark's pieces: model, data, measurements, statistics, files, config."""
from __future__ import annotations

import hashlib
import json
import shutil

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.core import config as config_module
from benchmarks.core.config import apply_overrides, baseline_key, preset_config, run_key, stable_hash, validate
from benchmarks.core.data import (CIFAR10_MEAN, CIFAR10_STD, CifarArrays, calibration_loader,
                             evaluation_tensors, load_data, load_npz, subsample, train_dataset)
from benchmarks.grid.backends import pruner_options
from benchmarks.core.training import convergence_epoch
from benchmarks.core.measure import count_flops, count_parameters, layer_widths, measure_latency
from benchmarks.core.models import build_vgg16
from benchmarks.core.store import atomic_torch_save, atomic_write_json, load_json_or_none, load_torch_or_none
from benchmarks.grid.summary import compare_with_control, stat, summarize, verdict, welch_p_value
from tests.offline_data import needs_offline_data

# --- model ---------------------------------------------------------------------------------

def test_vgg16_layout_and_full_width_parameter_count():
    model = build_vgg16()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    # conv weights (no bias: BN follows) + BN affine + linear head, counted by hand
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    conv = sum(widths[i] * widths[i + 1] * 9 for i in range(13))
    assert count_parameters(model) == conv + 2 * sum(widths[1:]) + 512 * 10 + 10 == 14_724_042
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_vgg16_width_multiplier_scales_channels():
    model = build_vgg16(width=0.25)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)][:3] == [16, 16, 32]
    assert model.classifier.in_features == 128
    with pytest.raises(ValueError, match="width must be a positive number"):
        build_vgg16(width=0)


# --- data ----------------------------------------------------------------------------------

def _arrays(n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    return CifarArrays(rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_train),
                       rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test),
                       source="memory", location="-")


def test_npz_layout_is_checked_with_a_clear_error(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 3, 32, 32), np.uint8), y_train=np.zeros(4), x_test=np.zeros((2, 32, 32, 3),
             np.uint8), y_test=np.zeros(2))
    with pytest.raises(ValueError, match=r"x_train must be uint8 of shape \(N, 32, 32, 3\)"):
        load_npz(path)
    np.savez(path, x_train=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="missing array"):
        load_npz(path)
    with pytest.raises(ValueError, match="'auto', 'subset', 'cifar10:ROOT' or a path ending in .npz"):
        load_data("data.bin")
    with pytest.raises(ValueError, match="needs a root directory"):
        load_data("cifar10:")


@needs_offline_data
def test_offline_subset_loads_with_checksum():
    arrays = load_data("subset")
    assert arrays.x_train.shape == (5170, 32, 32, 3) and arrays.x_test.shape == (1017, 32, 32, 3)
    assert len(arrays.file_sha256) == 64
    small = subsample(arrays, 100, 50)
    assert len(small.y_train) == 100 and len(small.y_test) == 50
    assert small.content_sha256() != arrays.content_sha256()
    assert np.array_equal(subsample(arrays, 100, 50).x_train, small.x_train)  # fixed subset


def test_subsample_is_fixed_and_validated():
    arrays = _arrays()
    first, second = subsample(arrays, 10, 5), subsample(arrays, 10, 5)
    assert np.array_equal(first.x_train, second.x_train) and first.subset["train_size"] == 10
    assert subsample(arrays, 0, 0) is arrays
    with pytest.raises(ValueError, match="train_size must be an int >= 0"):
        subsample(arrays, -1, 0)


def test_augmentation_and_normalisation():
    arrays = _arrays()
    images, labels = evaluation_tensors(arrays)
    expected = (arrays.x_test[0, 5, 7, :] / 255.0 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    assert torch.allclose(images[0, :, 5, 7], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    dataset = train_dataset(arrays)
    torch.manual_seed(0)
    draws = torch.stack([dataset[0][0] for _ in range(8)])
    assert draws.shape == (8, 3, 32, 32)
    assert not all(torch.equal(draws[0], draw) for draw in draws[1:])  # crops/flips vary
    torch.manual_seed(0)
    assert torch.equal(torch.stack([dataset[0][0] for _ in range(8)]), draws)  # and follow the seed


def test_calibration_loader_yields_input_target_batches():
    loader = calibration_loader(_arrays(), size=12, batch_size=5, seed=0)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [5, 5, 2]
    assert batches[0][0].shape[1:] == (3, 32, 32) and batches[0][1].dtype == torch.int64


# --- measurements --------------------------------------------------------------------------

def test_flops_match_a_hand_count_and_leave_no_hooks():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))
    # conv: 16 outputs positions x 8 channels x 27 MACs; linear: 128 x 4
    assert count_flops(model, (1, 3, 4, 4)) == 16 * 8 * 27 + 128 * 4
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    assert layer_widths(model) == {"0": 8, "3": 4}


def test_latency_statistics_are_consistent():
    latency = measure_latency(nn.Linear(4, 4), (2, 4), torch.device("cpu"), warmup=1, repeats=5)
    assert latency["min_ms"] <= latency["median_ms"] <= latency["max_ms"]
    assert latency["images_per_s"] == pytest.approx(2 * 1000 / latency["median_ms"])
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_latency(nn.Linear(4, 4), (2, 4), torch.device("cpu"), repeats=0)


# --- statistics ----------------------------------------------------------------------------

def test_convergence_epoch():
    assert convergence_epoch([0.80, 0.5], reference=0.80, tolerance=0.01) == 0
    assert convergence_epoch([0.1, 0.78, 0.79], reference=0.80, tolerance=0.01) == 2
    assert convergence_epoch([0.1, 0.78], reference=0.80, tolerance=0.01) is None


def test_stat_and_verdict():
    assert stat([0.5])["std"] is None
    assert stat([]) == {"mean": None, "std": None, "n": 0, "values": []}
    assert verdict(stat([0.5]), stat([0.4, 0.41])) == "cannot tell (n < 2)"
    assert verdict(stat([0.60, 0.61]), stat([0.70, 0.71])) == "worse"
    # 3 points apart with 0.5-point seed spread: beyond the seeds, but not beyond 1017-image test noise (~1.3)
    assert verdict(stat([0.78, 0.785]), stat([0.75, 0.755])) == "beats"
    assert verdict(stat([0.78, 0.785]), stat([0.765, 0.77]), test_images=1017) == "within spread"
    assert welch_p_value([0.1, 0.1], [0.1, 0.1]) is None
    assert 0 <= welch_p_value([0.70, 0.72, 0.71], [0.60, 0.61, 0.62]) < 0.01


def _record(pruner, seed, curve, status="ok"):
    return {"pruner": pruner, "sparsity": 0.5, "seed": seed, "status": status, "curve": curve,
            "acc_after_pruning": curve[0], "recoverability": curve[-1], "convergence_epoch": None,
            "params": 10, "params_ratio": 0.25, "flops": 100, "flops_ratio": 0.25, "pruning_seconds": 1.0,
            "speedup_seconds": 0.5, "finetune_seconds": 2.0, "latency": {"median_ms": 1.0}}


def test_summarize_groups_seeds_and_compares_with_random():
    records = [_record("l1", 0, [0.1, 0.70]), _record("l1", 1, [0.1, 0.72]),
               _record("random", 0, [0.1, 0.60]), _record("random", 1, [0.1, 0.62]),
               {"pruner": "broken", "sparsity": 0.5, "seed": 0, "status": "failed"}]
    summary = summarize(records)
    assert [(g["pruner"], g["n"]) for g in summary] == [("l1", 2), ("random", 2)]
    assert summary[0]["recoverability"]["mean"] == pytest.approx(0.71)
    assert [point["mean"] for point in summary[0]["curve"]] == pytest.approx([0.1, 0.71])
    assert summary[0]["last_epoch_gain"]["values"] == pytest.approx([0.60, 0.62])  # per seed, not of the mean curve
    assert "last_epoch_gain" not in summarize([_record("l1", 0, [0.1])])[0]  # no fine-tuning, nothing to say
    (after, recovered) = compare_with_control(summary, test_images=10_000)
    assert after["metric"] == "acc_after_pruning" and after["verdict"] == "within spread"
    assert recovered["verdict"] == "beats" and recovered["difference"] == pytest.approx(0.10)


# --- files ---------------------------------------------------------------------------------

def test_atomic_json_round_trip_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "deep" / "record.json"
    atomic_write_json({"a": [1, 2]}, path)
    atomic_write_json({"a": [3]}, path)
    assert load_json_or_none(path) == {"a": [3]}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]
    atomic_write_json({"loss": float("nan"), "x": [float("inf"), 1.5]}, path)  # strict JSON: null
    assert json.loads(path.read_text()) == {"loss": None, "x": [None, 1.5]}
    with pytest.raises(TypeError):
        atomic_write_json({"bad": {1, 2}}, path.parent / "other.json")  # never half-written
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_process_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    import subprocess
    import sys

    from benchmarks.core.store import LockedError, process_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from benchmarks.core.store import process_lock\n"
        "with process_lock(__import__('pathlib').Path(%r)):\n"
        "    print('held', flush=True); time.sleep(60)") % (str(Path(__file__).resolve().parents[1]), str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="another process"):
            with process_lock(tmp_path):
                pass
    finally:
        holder.kill()  # dies holding the lock: the OS releases it
        holder.wait()
    with process_lock(tmp_path):
        with pytest.raises(LockedError):  # one holder at a time, also within a process
            with process_lock(tmp_path):
                pass


def test_process_lock_admits_exactly_one_of_processes_started_together(tmp_path):
    """Three processes try the lock at the same moment (a start barrier, so a slow import on a busy
    machine cannot serialise them); the winner holds it until both others have answered."""
    import subprocess
    import sys
    import time

    code = ("import sys, time; from pathlib import Path; sys.path.insert(0, %r)\n"
            "from benchmarks.core.store import LockedError, process_lock\n"
            "sync, me = Path(%r), sys.argv[1]\n"
            "(sync / f'ready{me}').touch()\n"
            "while len(list(sync.glob('ready*'))) < 3: time.sleep(0.01)\n"
            "try:\n"
            "    with process_lock(sync / 'out'):\n"
            "        (sync / f'got{me}').touch()\n"
            "        while not (sync / 'release').exists(): time.sleep(0.01)\n"
            "except LockedError:\n"
            "    (sync / f'refused{me}').touch()\n")
    for trial in range(3):
        sync = tmp_path / f"trial{trial}"
        (sync / "out").mkdir(parents=True)
        processes = [subprocess.Popen([sys.executable, "-c", code % (str(Path(__file__).resolve().parents[1]),
                                                                     str(sync)), str(i)]) for i in range(3)]
        deadline = time.monotonic() + 120
        while len(list(sync.glob("got*")) + list(sync.glob("refused*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        (sync / "release").touch()
        assert all(p.wait(timeout=60) == 0 for p in processes)
        assert (len(list(sync.glob("got*"))), len(list(sync.glob("refused*")))) == (1, 2)


def test_unreadable_files_are_moved_aside(tmp_path):
    json_path, torch_path = tmp_path / "r.json", tmp_path / "m.pt"
    json_path.write_text('{"half": ')
    assert load_json_or_none(json_path) is None
    assert not json_path.exists() and (tmp_path / "r.json.corrupt").is_file()
    atomic_torch_save({"w": torch.ones(100)}, torch_path)
    torch_path.write_bytes(torch_path.read_bytes()[:50])
    assert load_torch_or_none(torch_path) is None
    assert (tmp_path / "m.pt.corrupt").is_file()
    assert load_json_or_none(tmp_path / "missing.json") is None


# --- configuration -------------------------------------------------------------------------

def test_cache_keys_follow_what_they_depend_on():
    config = preset_config("smoke")
    key = stable_hash(baseline_key(config, "data-sha"))
    assert key == stable_hash(baseline_key(apply_overrides(config, ["finetune_epochs=9", "seeds=5"]), "data-sha"))
    assert key != stable_hash(baseline_key(apply_overrides(config, ["baseline_epochs=9"]), "data-sha"))
    assert key != stable_hash(baseline_key(config, "other-data"))
    run = stable_hash(run_key(config, key, "l1", 0.5, 0))
    assert run == stable_hash(run_key(config, key, "L1", 0.5, 0))
    assert run != stable_hash(run_key(config, key, "l1", 0.5, 1))
    assert run != stable_hash(run_key(apply_overrides(config, ["finetune_lr=0.1"]), key, "l1", 0.5, 0))
    assert run != stable_hash(run_key(config, "other-baseline", "l1", 0.5, 0))


def test_list_and_json_values_parse():
    config = apply_overrides(preset_config("smoke"), ["seeds=[1, 2]", "op_types=Conv2d,Linear",
                                                      'pruner_options={"l1": {"x": 1}}'])
    assert config.seeds == [1, 2] and config.op_types == ["Conv2d", "Linear"]
    assert config.pruner_options == {"l1": {"x": 1}}
    assert config.config_list(0.3) == [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.3}]
    assert json.loads(json.dumps(config.to_dict()))["seeds"] == [1, 2]
    assert set(config_module.config_keys()) == set(config.to_dict())


def test_seed_goes_to_pruners_that_take_one():
    from nni.compression.pruning import L1NormPruner

    from nni_topo_pruner.random_pruner import RandomPruner

    config = apply_overrides(preset_config("smoke"), ['pruner_options={"random": {"seed": 42}}'])
    assert pruner_options(L1NormPruner, "l1", config, seed=3) == {}
    assert pruner_options(RandomPruner, "random", config, seed=3) == {"seed": 42}  # explicit option wins
    assert pruner_options(RandomPruner, "random", preset_config("smoke"), seed=3) == {"seed": 3}
    from nni_topo_pruner import TopologicalPruner

    assert pruner_options(TopologicalPruner, "topological", config, seed=1, progress=False) == {
        "seed": 1, "progress": False}


def test_torchvision_source_glue(tmp_path, monkeypatch):
    """``cifar10:ROOT`` goes through torchvision.datasets.CIFAR10 (download=True); offline here, so
    a stand-in with CIFAR10's attributes (``data`` HWC uint8, ``targets`` list) checks the glue."""
    import torchvision.datasets

    calls = []

    class StandIn:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            count = 6 if train else 4
            self.data = np.full((count, 32, 32, 3), 7 if train else 9, np.uint8)
            self.targets = list(range(count))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", StandIn)
    arrays = load_data(f"cifar10:{tmp_path}")
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert arrays.x_train.shape == (6, 32, 32, 3) and arrays.y_test.tolist() == [0, 1, 2, 3]
    assert arrays.source == "torchvision.datasets.CIFAR10" and arrays.file_sha256 is None
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"archive")
    assert load_data(f"cifar10:{tmp_path}").file_sha256 == hashlib.sha256(b"archive").hexdigest()


_GIT = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed (e.g. the Docker image)")


def test_git_state_outside_a_checkout_uses_the_image_commit(tmp_path, monkeypatch):
    from benchmarks.core.environment import git_state

    monkeypatch.delenv("NNI_TOPO_PRUNER_SOURCE_COMMIT", raising=False)
    assert git_state(tmp_path)["commit"] is None
    monkeypatch.setenv("NNI_TOPO_PRUNER_SOURCE_COMMIT", "0123abc")
    state = git_state(tmp_path)
    assert state["commit"] == "0123abc" and state["source"] == "NNI_TOPO_PRUNER_SOURCE_COMMIT"
    checkout = Path(__file__).resolve().parents[1]
    if shutil.which("git") and (checkout / ".git").exists():  # not in the Docker image: no git, no .git
        repo = git_state(checkout)
        assert repo["source"] == "git" and len(repo["commit"]) == 40


@_GIT
def test_git_state_dirty_means_code_not_the_run_outputs(tmp_path):
    import subprocess

    from benchmarks.core.environment import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("running\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "out" / "report.md").write_text("complete\n")  # the run rewrites its own outputs
    assert git_state(tmp_path)["dirty"] is True
    clean = git_state(tmp_path, ignore=[tmp_path / "out"])
    assert clean["dirty"] is False and clean["changed"] == []
    (tmp_path / "code.py").write_text("x = 2\n")  # the code itself changed: that must show
    state = git_state(tmp_path, ignore=[tmp_path / "out", tmp_path.parent / "elsewhere"])
    assert state["dirty"] is True and state["changed"] == ["code.py"]


def test_adapt_batchnorm_sets_the_mean_of_the_batches_and_leaves_weights():
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.core.training import adapt_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    data = torch.randn(40, 3, 5, 5) * 3 + 2
    loader = DataLoader(TensorDataset(data, torch.zeros(40)), batch_size=8)
    assert adapt_batchnorm(model, loader, torch.device("cpu"), batches=3) == 24
    with torch.no_grad():
        per_batch = [model[0](data[i * 8:(i + 1) * 8]).mean(dim=(0, 2, 3)) for i in range(3)]
    torch.testing.assert_close(model[1].running_mean, torch.stack(per_batch).mean(dim=0))
    assert not model.training and model[1].momentum == 0.1
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_paired_difference_is_antisymmetric_and_sees_no_difference_between_equals():
    from benchmarks.grid.summary import paired_difference

    rng = np.random.default_rng(0)

    def records(p):
        return [{"seed": s, "hits_after_bn": "".join("1" if h else "0" for h in rng.random(500) < p)}
                for s in range(3)]

    a, b = records(0.6), records(0.5)
    ab, ba = paired_difference(a, b, "acc_after_bn"), paired_difference(b, a, "acc_after_bn")
    assert ab["difference"] == pytest.approx(-ba["difference"])
    assert ab["verdict"] == "beats" and ba["verdict"] == "worse"
    same = paired_difference(a, a, "acc_after_bn")
    assert same["difference"] == 0 and same["verdict"] == "within noise"
    assert paired_difference(a, [{"seed": 9, "hits_after_bn": "1"}], "acc_after_bn") is None  # no common seed


def test_pairwise_comparisons_cover_every_pair_once_and_the_matrix_reads_both_ways():
    """Every unordered pair of pruners at each sparsity and metric is compared exactly once, with
    the same numbers paired_difference gives; Scratch-E rows stay out; the report's matrix shows
    A-B in row A and its negation (interval mirrored) in row B."""
    from benchmarks.grid.report_markdown import _pairwise_matrix
    from benchmarks.grid.summary import PAIRWISE_METRICS, paired_difference, pairwise_comparisons

    rng = np.random.default_rng(1)
    pruners = ["l1", "topological", "random", "scratch_e:topological"]
    records = [{"status": "ok", "sparsity": s, "pruner": p, "seed": seed,
                **{f"hits_{m}": "".join("1" if h else "0" for h in rng.random(300) < 0.4 + 0.1 * i)
                   for m in ("after_bn", "final")}}
               for s in (0.3, 0.7) for seed in (0, 1) for i, p in enumerate(pruners)]
    rows = pairwise_comparisons(records)
    keys = [(r["sparsity"], r["metric"], frozenset((r["pruner"], r["reference"]))) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * len(PAIRWISE_METRICS) * 3  # 3 pairs of 3 pruners
    assert all(not name.startswith("scratch_e:") for r in rows for name in (r["pruner"], r["reference"]))
    for row in rows:
        group = lambda p: [r for r in records if r["pruner"] == p and r["sparsity"] == row["sparsity"]]
        direct = paired_difference(group(row["pruner"]), group(row["reference"]), row["metric"])
        assert row["difference"] == pytest.approx(direct["difference"]) and row["verdict"] == direct["verdict"]
    table = _pairwise_matrix(rows, 0.7, "recoverability")
    row = next(r for r in rows if r["sparsity"] == 0.7 and r["metric"] == "recoverability"
               and r["pruner"] == "l1" and r["reference"] == "random")
    grid = [[cell.strip().replace("*", "") for cell in line.strip("|").split("|")] for line in table[2:]
            if line.startswith("|") and not line.startswith("| ---")]
    header, body = grid[0][1:], {line[0]: line[1:] for line in grid[1:]}
    forward, backward = body["l1"][header.index("random")], body["random"][header.index("l1")]
    low, high = (100 * v for v in row["ci95"])
    assert forward == f"{100 * row['difference']:+.2f} [{low:+.2f}, {high:+.2f}]"
    assert backward == f"{-100 * row['difference']:+.2f} [{-high:+.2f}, {-low:+.2f}]"


def test_pruner_labels_give_variants_their_own_records_and_options():
    from benchmarks.core.config import pruner_spec, run_key
    from benchmarks.grid.runner import record_name

    config = apply_overrides(preset_config("smoke"), ["pruners=l1,topo_w2=topological",
                                                      'pruner_options={"topo_w2": {"wasserstein_order": 2}}'])
    validate(config)
    assert pruner_spec("topo_w2=topological") == ("topo_w2", "topological")
    assert record_name("topo_w2=topological", 0.5, 1) == "topo_w2_sparsity0.5_seed1"
    key = run_key(config, "b", "topo_w2=topological", 0.5, 1)
    assert key["pruner_options"] == {"wasserstein_order": 2} and key["pruner_name"] == "topological"
    with pytest.raises(ValueError, match="not a pruner name"):
        pruner_spec("a b=topological")
    with pytest.raises(ValueError, match="unknown|not registered|known"):
        validate(apply_overrides(preset_config("smoke"), ["pruners=x=nosuchpruner"]))
