"""One benchmark record: prune the baseline with one pruner at one sparsity and seed, speed the
model up, measure it, fine-tune it with per-epoch test accuracy, and measure again.

Steps (each failure is caught by the runner and recorded with the step's name):
``create`` (registry) -> ``compress`` -> ``unwrap`` + ``speedup`` (NNI ``ModelSpeedup``) ->
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

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .baseline import Baseline, measure_size, measure_speed
from .config import BenchmarkConfig, pruner_options_for, pruner_spec
from .data import CifarArrays, calibration_loader, evaluation_loader, train_dataset
from .measure import layer_widths
from .store import atomic_torch_save, load_torch_or_none
from .training import adapt_batchnorm, correct_per_image, fit, seed_everything

_logger = logging.getLogger(__name__)
# NNI's ModelSpeedup logs every replaced module at INFO on a logger it forces to INFO; it gets
# this one instead (warnings only by default; lower its level to see NNI's speed-up trace).
SPEEDUP_LOGGER = logging.getLogger("benchmarks.speedup")
SPEEDUP_LOGGER.setLevel(logging.WARNING)


class StepError(RuntimeError):
    """A benchmark step failed; ``step`` names it (create, compress, unwrap, speedup, measure,
    checkpoint, finetune)."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step}: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


def _accepts_keyword(cls: type, name: str) -> bool:
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def pruner_options(pruner_class: type, label: str, config: BenchmarkConfig, seed: int,
                   progress: bool = True) -> Dict[str, Any]:
    """The keyword options for the pruner labelled ``label``: ``config.pruner_options[label]``, plus
    ``seed=seed`` and ``progress=progress`` when the pruner's constructor takes them and the
    options don't set them."""
    options = pruner_options_for(config, label)
    for keyword, value in (("seed", seed), ("progress", progress)):
        if keyword not in options and _accepts_keyword(pruner_class, keyword):
            options[keyword] = value
    return options


def convergence_epoch(curve: List[float], reference: float, tolerance: float) -> Optional[int]:
    """First index of ``curve`` (0 = right after pruning, k = after fine-tuning epoch k) whose
    accuracy is within ``tolerance`` of ``reference``; ``None`` if none is.

    >>> convergence_epoch([0.1, 0.70, 0.775, 0.79], reference=0.78, tolerance=0.01)
    2
    >>> convergence_epoch([0.1, 0.5], reference=0.78, tolerance=0.01) is None
    True
    """
    for epoch, accuracy in enumerate(curve):
        if accuracy >= reference - tolerance - 1e-12:
            return epoch
    return None


def hits_text(hits) -> str:
    """Per-image correctness as a compact string: ``'1'`` right, ``'0'`` wrong, test-set order.

    >>> hits_text([True, False, True])
    '101'
    """
    return "".join("1" if hit else "0" for hit in hits)


def _step(name: str, action):
    try:
        return action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - recorded by the runner, which carries on
        raise StepError(name, error) from error


def prune_and_measure(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                      sparsity: float, seed: int, device: torch.device, progress: bool = True) -> Dict[str, Any]:
    """Prune, unwrap, speed up and measure; returns ``{"model": sped-up model, "measurements": {...}}``."""
    from nni_topo_pruner.registry import create_pruner, get_pruner
    from nni_topo_pruner.speedup import speedup_model

    seed_everything(seed)
    model = baseline.fresh_model().to(device)
    config_list = config.config_list(sparsity)
    label, name = pruner_spec(pruner)
    pruner_class = _step("create", lambda: get_pruner(name))
    options = pruner_options(pruner_class, label, config, seed, progress)
    calibration = None
    # data-dependent pruners, and the Topological Pruner with cloud='activations', get calibration images
    if getattr(pruner_class, "requires_calibration_data", False) or (
            getattr(pruner_class, "accepts_calibration_data", False) and options.get("cloud") == "activations"):
        calibration = calibration_loader(arrays, config.calibration_size, config.eval_batch_size, seed)

    started = time.perf_counter()
    instance = _step("create", lambda: create_pruner(name, model, config_list,
                                                     calibration_loader=calibration, **options))
    _, masks = _step("compress", instance.compress)
    pruning_seconds = time.perf_counter() - started

    started = time.perf_counter()
    _step("unwrap", instance.unwrap_model)
    dummy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    _step("speedup", lambda: speedup_model(model, dummy, masks, logger=SPEEDUP_LOGGER))
    speedup_seconds = time.perf_counter() - started

    def measure() -> Dict[str, Any]:
        test_loader = evaluation_loader(arrays, config.eval_batch_size)
        raw = correct_per_image(model, test_loader, device)
        values = {
            **measure_size(model),
            "acc_after_pruning": float(raw.mean()),
            "hits_after_pruning": hits_text(raw),
            "latency": measure_speed(model, config, device),
            "layer_widths": layer_widths(model),
        }
        if config.bn_batches:
            # the same images for every pruner at one seed: comparisons stay paired
            loader = calibration_loader(arrays, config.bn_batches * config.batch_size, config.batch_size, seed)
            values["bn_images"] = adapt_batchnorm(model, loader, device, config.bn_batches)
            adapted = correct_per_image(model, test_loader, device)
            values.update(acc_after_bn=float(adapted.mean()), hits_after_bn=hits_text(adapted))
        return values

    measurements = _step("measure", measure)
    report = getattr(instance, "report", None)
    if report is not None and hasattr(report, "units"):  # the Topological Pruner says how its criterion ranked
        measurements["criterion"] = {unit.name: {"distinct_saliences": len(set(unit.salience)),
                                                 "salience_tied": bool(getattr(unit, "salience_tied", False)),
                                                 "initial_distance": unit.initial_distance,
                                                 "final_distance": unit.final_distance}
                                     for unit in report.units}
    measurements.update({"pruning_seconds": pruning_seconds, "speedup_seconds": speedup_seconds,
                         "pruner_options": options, "config_list": config_list,
                         "calibration_images": None if calibration is None else len(calibration.dataset)})
    return {"model": model, "measurements": measurements}


def run_experiment(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                   sparsity: float, seed: int, device: torch.device, work_dir: Path,
                   progress: bool = True) -> Dict[str, Any]:
    """The full record for (``pruner``, ``sparsity``, ``seed``); raises :class:`StepError` on failure."""
    started = time.perf_counter()
    pruned_path = work_dir / "pruned.pt"
    stage = load_torch_or_none(pruned_path)
    if stage is None:
        stage = prune_and_measure(config, baseline, arrays, pruner, sparsity, seed, device, progress)
        _step("checkpoint", lambda: atomic_torch_save(stage, pruned_path))
    else:
        _logger.info("%s sparsity %g seed %d: pruned model found in %s; resuming fine-tuning",
                     pruner, sparsity, seed, work_dir)
    model, measurements = stage["model"].to(device), stage["measurements"]

    seed_everything(seed)
    history = _step("finetune", lambda: fit(
        model, train_dataset(arrays), evaluation_loader(arrays, config.eval_batch_size),
        epochs=config.finetune_epochs, lr=config.finetune_lr, momentum=config.momentum,
        weight_decay=config.weight_decay, batch_size=config.batch_size, seed=seed, device=device,
        checkpoint=work_dir / "finetune.ckpt", num_workers=config.num_workers,
        desc=f"{pruner} s={sparsity:g} seed={seed}", progress=progress))
    # epoch 0 of the curve: the model fine-tuning starts from (BN-adapted when bn_batches > 0)
    start = measurements.get("acc_after_bn", measurements["acc_after_pruning"])
    curve = [start, *[row["test_acc"] for row in history]]
    final_hits = _step("measure", lambda: hits_text(correct_per_image(
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
