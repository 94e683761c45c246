"""The benchmark's command line: presets, overrides and clear errors for bad input."""
from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.config import BenchmarkConfig, PRESETS
from benchmarks.run import build_parser, main
from tests.offline_data import needs_offline_data


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
    from benchmarks.config import preset_config, validate

    for name in PRESETS:
        config = preset_config(name)
        assert validate(config) is config  # validate raises ValueError naming any invalid field


@needs_offline_data
def test_truncated_npz_and_unreachable_dataset_are_usage_errors(tmp_path, capsys, monkeypatch):
    from benchmarks.data import DEFAULT_NPZ

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
