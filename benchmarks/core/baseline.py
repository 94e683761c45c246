"""The unpruned baseline: trained once per configuration and cached.

The cache key is a hash of the data's content, the model width and the training recipe
(:func:`benchmarks.core.config.baseline_key`); every pruner, seed and later run with the same key
reuses ``<cache_dir>/baseline-<hash>/model.pt``. Training saves a checkpoint after each
epoch, so an interrupted baseline resumes at the last finished epoch.

Example (needs a trained baseline, so not a doctest)::

    baseline = load_or_train_baseline(config, arrays, device)
    model = baseline.fresh_model()  # a new copy of the trained weights each call
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from .baseline_store import DEFAULT_CACHE_DIR, cache_dir_for, restore, weights_digest  # noqa: F401 (re-exported)
from .config import BenchmarkConfig, baseline_key, stable_hash
from .data import CifarArrays, evaluation_loader, portable_path, train_dataset
from .measure import count_flops, count_parameters, measure_latency
from .models import build_vgg16
from .store import atomic_torch_save, atomic_write_json, load_json_or_none, load_torch_or_none, process_lock
from .training import evaluate, fit, seed_everything

_logger = logging.getLogger(__name__)

@dataclass
class Baseline:
    """A trained unpruned model's weights and measurements."""

    key_hash: str
    width: float
    state_dict: Dict[str, torch.Tensor]
    info: Dict[str, Any]

    def fresh_model(self) -> nn.Module:
        """A new VGG-16 holding the baseline weights (safe to prune in place)."""
        model = build_vgg16(width=self.width)
        model.load_state_dict(self.state_dict)
        return model


def training_trace(info: Dict[str, Any]) -> Optional[list]:
    """What a baseline's training printed, without the timings: ``[test_acc, history rows]``, or
    ``None`` when ``info`` has no history. Two runs of the same recipe on the same data give the
    same trace exactly when they trained the same way (used where no weights digest was stored).

    >>> training_trace({"test_acc": 0.9, "history": [{"epoch": 1, "test_acc": 0.9, "seconds": 12.5}]})
    [0.9, [{'epoch': 1, 'test_acc': 0.9}]]
    >>> training_trace({"test_acc": 0.9}) is None
    True
    """
    history = info.get("history")
    if not isinstance(history, list):
        return None
    return [info.get("test_acc"), [{key: value for key, value in row.items() if key != "seconds"}
                                   for row in history if isinstance(row, dict)]]


def training_options(config: BenchmarkConfig, arrays: CifarArrays) -> Dict[str, Any]:
    """The keyword arguments of :func:`benchmarks.core.training.fit` that every training stage of a run
    (baseline, fine-tuning, Scratch-E) shares: the training set in the configured augmentation,
    the optimiser's settings and how the arithmetic runs (precision, memory format)."""
    return {"train_set": train_dataset(arrays, config.augmentation, config.channels_last),
            "batch_size": config.batch_size, "momentum": config.momentum, "weight_decay": config.weight_decay,
            "nesterov": config.nesterov, "label_smoothing": config.label_smoothing,
            "precision": config.precision, "channels_last": config.channels_last, "num_workers": config.num_workers}


def measure_size(model: nn.Module) -> Dict[str, int]:
    """Parameters and FLOPs (thop MACs of one 32x32 image) of ``model``."""
    return {"params": count_parameters(model), "flops": count_flops(model, (1, 3, 32, 32))}


def measure_speed(model: nn.Module, config: BenchmarkConfig, device: torch.device) -> Dict[str, Any]:
    """Inference latency of ``model`` at the configured batch size (machine-dependent: never cached)."""
    return measure_latency(model, (config.latency_batch_size, 3, 32, 32), device,
                           warmup=config.latency_warmup, repeats=config.latency_repeats)


def load_or_train_baseline(config: BenchmarkConfig, arrays: CifarArrays, device: torch.device,
                           progress: bool = True) -> Baseline:
    """The cached baseline for ``config`` and ``arrays``, training (or resuming) it if needed."""
    key = baseline_key(config, arrays.content_sha256())
    key_hash = stable_hash(key)
    folder = cache_dir_for(config) / f"baseline-{key_hash}"
    model_path, info_path = folder / "model.pt", folder / "info.json"
    restore(key_hash, folder)  # a baseline committed in benchmarks/baselines/ (finished, or a checkpoint)
    info = load_json_or_none(info_path)
    state = load_torch_or_none(model_path, weights_only=True)
    if info is not None and state is not None and info.get("key_hash") == key_hash:
        _logger.info("baseline %s: cached (test acc %.4f) in %s", key_hash, info["test_acc"], folder)
        if "weights_sha256" not in info:  # cached before digests were recorded: add it once
            info["weights_sha256"] = weights_digest(state)
            atomic_write_json(info, info_path)
        return Baseline(key_hash, config.width, state, {**info, "cached": True, "cache_path": portable_path(str(folder))})

    with process_lock(folder, "baseline training"):
        return _train_baseline(config, arrays, device, key, key_hash, folder, progress)


def _train_baseline(config: BenchmarkConfig, arrays: CifarArrays, device: torch.device, key: Dict[str, Any],
                    key_hash: str, folder: Path, progress: bool) -> Baseline:
    model_path, info_path = folder / "model.pt", folder / "info.json"
    atomic_write_json(key, folder / "key.json")
    seed_everything(config.baseline_seed)
    model = build_vgg16(width=config.width)
    started = time.perf_counter()
    history = fit(model, test_loader=evaluation_loader(arrays, config.eval_batch_size),
                  epochs=config.baseline_epochs, lr=config.baseline_lr, schedule=config.baseline_schedule,
                  seed=config.baseline_seed, device=device, checkpoint=folder / "train.ckpt", desc="baseline",
                  progress=progress, **training_options(config, arrays))
    train_seconds = time.perf_counter() - started
    test_acc = evaluate(model, evaluation_loader(arrays, config.eval_batch_size), device)
    info = {
        "key_hash": key_hash,
        "key": key,
        "test_acc": test_acc,
        **measure_size(model),
        "history": history,
        # epochs resumed from a checkpoint ran in an earlier process; their seconds are in history
        "train_seconds_this_process": train_seconds,
        "train_seconds_total": sum(row["seconds"] for row in history),
        "trained_on": {"device": str(device), "torch_threads": torch.get_num_threads(),
                       "machine": platform.machine(), "processor": platform.processor()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    info["weights_sha256"] = weights_digest(state)
    atomic_torch_save(state, model_path)
    atomic_write_json(info, info_path)  # written last: its presence marks a finished baseline
    (folder / "train.ckpt").unlink(missing_ok=True)
    _logger.info("baseline %s: trained, test acc %.4f, %.0f s; cached in %s", key_hash, test_acc,
                 info["train_seconds_total"], folder)
    return Baseline(key_hash, config.width, state, {**info, "cached": False, "cache_path": portable_path(str(folder))})
