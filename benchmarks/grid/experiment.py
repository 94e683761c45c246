"""One benchmark record: prune the baseline with one pruner at one sparsity and seed, speed the
model up, measure it, fine-tune it with per-epoch test accuracy, and measure again.

Steps (each failure is caught by the runner and recorded with the step's name):
``create`` (registry) -> ``compress`` -> ``unwrap`` + ``speedup`` (NNI ``ModelSpeedup``; with
``backend='torch-pruning'`` Torch-Pruning removes the channels instead, see
:mod:`benchmarks.grid.backends`) ->
``measure`` (params, FLOPs, accuracy right after pruning, latency, then accuracy after
re-estimating BatchNorm statistics with no weight update: "adaptive BN") -> ``finetune``
(from the BN-adapted model). Every accuracy also records which test images were right
(a string of 0/1 in test-set order), so pruners can be compared image by image.

A run keeps its pruned model and a fine-tuning checkpoint under ``work_dir`` until its record
is written, so an interrupted run resumes inside fine-tuning without pruning again.

Example (needs a trained baseline, so not a doctest)::

    record = run_experiment(config, baseline, arrays, "l1", 0.5, 0, device, work_dir)
    record["recoverability"], record["convergence_epoch"]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .backends import SPEEDUP_LOGGER, StepError, bn_loader, prune_with_backend, run_config_list, step, stored_stage
from ..core.baseline import Baseline, measure_size, measure_speed, training_options
from ..core.config import BenchmarkConfig
from ..core.data import CifarArrays, calibration_loader, evaluation_loader
from ..core.measure import layer_widths
from ..core.training import adapt_batchnorm, convergence_epoch, correct_per_image, fit, hits_text, seed_everything

_logger = logging.getLogger(__name__)
__all__ = ["SPEEDUP_LOGGER", "StepError", "prune_and_measure", "run_experiment"]


def prune_and_measure(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                      sparsity: float, seed: int, device: torch.device, progress: bool = True) -> Dict[str, Any]:
    """Prune (through ``config.backend``), speed up and measure; returns ``{"model": the physically
    pruned model, "measurements": {...}, "kept_channels": {layer: kept output channel indices}}``."""
    seed_everything(seed)
    model = baseline.fresh_model().to(device)
    config_list = step("create", lambda: run_config_list(config, baseline, sparsity))
    dummy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    pruned = prune_with_backend(
        config, model, pruner, config_list, seed, dummy, progress=progress,
        calibration=lambda: calibration_loader(arrays, config.calibration_size, config.eval_batch_size, seed))
    model = pruned.model

    def measure() -> Dict[str, Any]:
        test_loader = evaluation_loader(arrays, config.eval_batch_size)
        raw = correct_per_image(model, test_loader, device)
        # the unpruned model timed in this process, just before the pruned one: their ratio is
        # a same-process measurement even when the run's records come from several processes
        unpruned = measure_speed(baseline.fresh_model().to(device).eval(), config, device)
        latency = measure_speed(model, config, device)
        values = {
            **measure_size(model),
            "acc_after_pruning": float(raw.mean()),
            "hits_after_pruning": hits_text(raw),
            "latency": latency,
            "unpruned_latency": unpruned,
            "latency_ratio": latency["median_ms"] / unpruned["median_ms"],
            "layer_widths": layer_widths(model),
        }
        if config.bn_batches:
            # the same images for every pruner at one seed: comparisons stay paired
            loader = bn_loader(config, arrays, seed)
            values["bn_images"] = adapt_batchnorm(model, loader, device, config.bn_batches)
            adapted = correct_per_image(model, test_loader, device)
            values.update(acc_after_bn=float(adapted.mean()), hits_after_bn=hits_text(adapted))
        return values

    measurements = step("measure", measure)
    if pruned.criterion is not None:  # the topological criterion says how it ranked
        measurements["criterion"] = pruned.criterion
    measurements.update({"pruning_seconds": pruned.pruning_seconds, "speedup_seconds": pruned.speedup_seconds,
                         "pruner_options": pruned.pruner_options, "config_list": config_list,
                         "calibration_images": pruned.calibration_images})
    measurements["backend"] = getattr(config, "backend", "nni")
    if pruned.importance is not None:
        measurements["importance"] = pruned.importance
    return {"model": model, "measurements": measurements, "kept_channels": pruned.kept_channels}


def run_experiment(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                   sparsity: float, seed: int, device: torch.device, work_dir: Path,
                   progress: bool = True) -> Dict[str, Any]:
    """The full record for (``pruner``, ``sparsity``, ``seed``); raises :class:`StepError` on failure.
    Under ``config.schedule`` 'agp' or 'linear' the record is :func:`benchmarks.grid.gradual.run_scheduled`'s."""
    if getattr(config, "schedule", "oneshot") != "oneshot":
        from .gradual import run_scheduled

        return run_scheduled(config, baseline, arrays, pruner, sparsity, seed, device, work_dir, progress)
    started = time.perf_counter()
    stage = stored_stage(work_dir / "pruned.pt",
                         lambda: prune_and_measure(config, baseline, arrays, pruner, sparsity, seed, device, progress),
                         f"{pruner} sparsity {sparsity:g} seed {seed}: pruned model found; resuming fine-tuning")
    model, measurements = stage["model"].to(device), stage["measurements"]

    seed_everything(seed)
    history = step("finetune", lambda: fit(
        model, test_loader=evaluation_loader(arrays, config.eval_batch_size),
        epochs=config.finetune_epochs, lr=config.finetune_lr, seed=seed, device=device,
        checkpoint=work_dir / "finetune.ckpt", desc=f"{pruner} s={sparsity:g} seed={seed}", progress=progress,
        **training_options(config, arrays)))
    # epoch 0 of the curve: the model fine-tuning starts from (BN-adapted when bn_batches > 0)
    start = measurements.get("acc_after_bn", measurements["acc_after_pruning"])
    curve = [start, *[row["test_acc"] for row in history]]
    final_hits = step("measure", lambda: hits_text(correct_per_image(
        model, evaluation_loader(arrays, config.eval_batch_size), device)))
    baseline_acc = baseline.info["test_acc"]
    return {
        **{key: value for key, value in measurements.items()},
        "params_ratio": measurements["params"] / baseline.info["params"],
        "flops_ratio": measurements["flops"] / baseline.info["flops"],
        "finetune_history": history,
        "curve": curve,
        "recoverability": curve[-1],
        "hits_final": final_hits,
        "convergence_epoch": convergence_epoch(curve, baseline_acc, config.convergence_tolerance),
        "finetune_seconds": sum(row["seconds"] for row in history),
        "wall_seconds_this_process": time.perf_counter() - started,
    }
