"""benchmarks.studies.bn_reestimation: the grid's BatchNorm re-estimation with and without
augmentation; calibration_loader(augmented=True)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.core.config import apply_overrides, preset_config, run_key, validate
from benchmarks.core.data import CifarArrays, calibration_loader
from benchmarks.run import main as grid_main
from benchmarks.studies.bn_reestimation import main
from tests.offline_data import needs_offline_data

TINY = ["--preset", "smoke", "--no-progress", "--set", "train_size=256", "--set", "test_size=128",
        "--set", "baseline_epochs=1", "--set", "finetune_epochs=2", "--set", "latency_repeats=2"]


def _arrays(count: int = 40) -> CifarArrays:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    return CifarArrays(images, rng.integers(0, 10, count), images[:4], rng.integers(0, 10, 4), "synthetic", "memory")


def _stack(loader) -> tuple:
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_augmented_calibration_images_are_crops_or_flips_of_the_same_images():
    arrays = _arrays()
    plain, plain_labels = _stack(calibration_loader(arrays, 24, 8, seed=3))
    augmented, labels = _stack(calibration_loader(arrays, 24, 8, seed=3, augmented=True))
    again, _ = _stack(calibration_loader(arrays, 24, 8, seed=3, augmented=True))
    other, _ = _stack(calibration_loader(arrays, 24, 8, seed=4, augmented=True))
    assert torch.equal(labels, plain_labels) and augmented.shape == plain.shape
    assert torch.equal(augmented, again) and not torch.equal(augmented, plain)
    assert not torch.equal(augmented, other)
    # each augmented image is a 32x32 window (zero padding of 4, normalised zeros) of its plain
    # image, possibly flipped: compare in the normalised space, padding with a zero pixel's value
    zero = calibration_loader(CifarArrays(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64),
                                          np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64), "zeros", "memory"),
                              1, 1, seed=0).dataset.tensors[0][0, :, 0, 0]
    shifted = 0
    for source, image in zip(plain, augmented):
        padded = F.pad(source - zero.view(3, 1, 1), (4, 4, 4, 4)) + zero.view(3, 1, 1)
        windows = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.allclose(image, padded[:, dy:dy + 32, dx:dx + 32].flip(-1) if flip
                                     else padded[:, dy:dy + 32, dx:dx + 32], atol=1e-5)]
        assert windows, "an augmented calibration image is no crop/flip of its source"
        shifted += (4, 4, False) not in windows
    assert shifted > 12  # 24 images: most are moved or flipped


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The study (seeds 0 and 1) and the grid's one-shot records (l1, topological, seed 0) on one tiny baseline."""
    folder = tmp_path_factory.mktemp("bn_reestimation")
    common = [*TINY, "--set", f"cache_dir={folder / 'cache'}"]
    assert main([*common, "--seeds", "0,1", "--out-dir", str(folder / "study")]) == 0
    assert grid_main([*TINY, "--cache-dir", str(folder / "cache"), "--seeds", "0", "--pruners", "l1,topological",
                      "--out-dir", str(folder / "grid")]) == 0
    assert grid_main([*TINY, "--cache-dir", str(folder / "cache"), "--seeds", "0", "--pruners", "l1",
                      "--set", "bn_augmented=true", "--out-dir", str(folder / "grid_augmented")]) == 0
    return folder


@needs_offline_data
def test_the_study_measures_the_grids_protocol(tiny_study):
    study = json.loads((tiny_study / "study" / "results.json").read_text())
    grid = json.loads((tiny_study / "grid" / "results.json").read_text())
    runs = {(run["pruner"], run["seed"]): run for run in grid["runs"]}
    records = study["records"]
    assert set(records) == {"baseline|seed0", "baseline|seed1", "l1|s0.5|seed0", "l1|s0.5|seed1",
                            "topological|s0.5|seed0", "topological|s0.5|seed1"}
    for seed in (0, 1):
        trained = records[f"baseline|seed{seed}"]["trained"]
        assert trained["as_is"]["acc"] == pytest.approx(grid["baseline"]["test_acc"])
        for pruner in ("l1", "topological"):
            record = records[f"{pruner}|s0.5|seed{seed}"]
            if seed == 0:
                run = runs[(pruner, seed)]
                # right after pruning: as the grid measured it, and its re-estimation is the grid's
                assert record["pruned"]["as_is"]["hits"] == run["hits_after_pruning"]
                assert record["pruned"]["un_augmented"]["hits"] == run["hits_after_bn"]
                # fine-tuned as the grid fine-tunes: the grid's final model
                assert record["fine_tuned"]["as_is"]["hits"] == run["hits_final"]
                assert record["finetune_curve"] == run["curve"][1:]
            for stage in ("pruned", "fine_tuned"):
                effects = record[stage]
                assert effects["as_is"]["bn_images"] == 0
                assert effects["un_augmented"]["bn_images"] == effects["augmented"]["bn_images"] == 4 * 64
                for variant in effects.values():
                    assert variant["acc"] == variant["hits"].count("1") / 128
    report = (tiny_study / "study" / "report.md").read_text()
    assert report.count("\n| l1 | ") == 2 and "| baseline | trained | 2 |" in report


@needs_offline_data
def test_a_rerun_resumes_without_redoing_records(tiny_study, caplog):
    before = json.loads((tiny_study / "study" / "results.json").read_text())["records"]
    common = [*TINY, "--set", f"cache_dir={tiny_study / 'cache'}"]
    assert main([*common, "--seeds", "0,1", "--out-dir", str(tiny_study / "study")]) == 0
    after = json.loads((tiny_study / "study" / "results.json").read_text())["records"]
    assert {key: record["seconds"] for key, record in after.items()} == \
        {key: record["seconds"] for key, record in before.items()}


@pytest.mark.parametrize("extra, message", [
    (["--set", "bn_batches=0"], "bn_batches must be >= 1"),
    (["--set", "schedule=agp"], "drop --set schedule"),
    (["--sparsity", "1.5"], "--sparsity must lie strictly between 0 and 1"),
    (["--seeds", ","], "--seeds must name at least one seed"),
])
def test_bad_options_are_usage_errors_that_name_them(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--out-dir", str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@needs_offline_data
def test_bn_augmented_records_re_estimate_on_the_augmented_images(tiny_study):
    study = json.loads((tiny_study / "study" / "results.json").read_text())["records"]["l1|s0.5|seed0"]
    plain = json.loads((tiny_study / "grid" / "results.json").read_text())["runs"]
    run = json.loads((tiny_study / "grid_augmented" / "results.json").read_text())["runs"][0]
    assert run["run_key"]["bn_augmented"] is True and "bn_augmented" not in plain[0]["run_key"]
    assert run["hits_after_pruning"] == study["pruned"]["as_is"]["hits"]
    assert run["hits_after_bn"] == study["pruned"]["augmented"]["hits"]
    assert "with the training augmentation (bn_augmented)" in (tiny_study / "grid_augmented" / "report.md").read_text()
    assert "(no augmentation, the same images" in (tiny_study / "grid" / "report.md").read_text()


def test_bn_augmented_is_keyed_only_when_true_and_validated():
    base = validate(preset_config("smoke"))
    for schedule in ("oneshot", "agp"):
        plain = validate(apply_overrides(base, [f"schedule={schedule}"]))
        augmented = validate(apply_overrides(plain, ["bn_augmented=true"]))
        assert "bn_augmented" not in run_key(plain, "b", "l1", 0.5, 0)
        assert run_key(augmented, "b", "l1", 0.5, 0) == {**run_key(plain, "b", "l1", 0.5, 0), "bn_augmented": True}
    with pytest.raises(ValueError, match="bn_augmented=true chooses the images .* set bn_batches >= 1"):
        validate(apply_overrides(base, ["bn_augmented=true", "bn_batches=0"]))
    with pytest.raises(ValueError, match="bn_augmented=maybe: expected bool"):
        validate(apply_overrides(base, ["bn_augmented=maybe"]))
