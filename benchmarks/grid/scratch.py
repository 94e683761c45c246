"""The Scratch-E row: a pruner's pruned architecture, re-initialised and trained from scratch.

Liu et al. (ICLR 2019, "Rethinking the value of network pruning") ask whether pruning plus
fine-tuning beats training the pruned *architecture* from random weights. Here the
architecture is the one the pruner produces at the same sparsity and seed (pruned and sped
up exactly as for its fine-tuned record, so the layer widths match), re-initialised with the
baseline's initialisation and trained with the baseline's recipe (SGD, ``baseline_lr``,
cosine) for ``baseline_epochs + finetune_epochs`` epochs: the epoch budget the pruned model
had in all (Liu et al.'s Scratch-E grants the large model's epochs; we grant the whole
prune-and-fine-tune pipeline's, the stricter test for pruning).

A plan entry ``scratch_e:SPEC`` (SPEC an entry of ``pruners``) gives the record of pruner
``scratch_e:LABEL``.

>>> split_scratch("scratch_e:topo=topological"), split_scratch("l1")
((True, 'topo=topological'), (False, 'l1'))
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..core.baseline import Baseline, training_options
from ..core.config import BenchmarkConfig
from ..core.data import CifarArrays, evaluation_loader
from ..core.store import atomic_torch_save, load_torch_or_none
from ..core.training import correct_per_image, fit, seed_everything

_logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "scratch_e:"


def split_scratch(pruner: str) -> Tuple[bool, str]:
    """``(is a Scratch-E entry, the pruner entry it is built from)``."""
    if pruner.startswith(SCRATCH_PREFIX):
        return True, pruner[len(SCRATCH_PREFIX):]
    return False, pruner


def scratch_e_epochs(config: BenchmarkConfig) -> int:
    """The Scratch-E budget: the baseline's epochs plus the fine-tuning epochs."""
    return config.baseline_epochs + config.finetune_epochs


def scratch_e_key(config: BenchmarkConfig) -> Dict[str, Any]:
    """What a Scratch-E record depends on beyond its pruner's run key (its training recipe)."""
    return {"epochs": scratch_e_epochs(config), "lr": config.baseline_lr, "init": "model default, seeded"}


def reinitialise(model: nn.Module) -> None:
    """Fresh random weights and BatchNorm statistics for every layer of ``model`` (seed torch first):
    each module's ``reset_parameters``, then the model's own ``_init_weights`` if it has one (the
    CIFAR VGG's: the baseline's initialisation)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    init = getattr(model, "_init_weights", None)
    if callable(init):
        init()


def run_scratch_e(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                  sparsity: float, seed: int, device: torch.device, work_dir: Path,
                  progress: bool = True) -> Dict[str, Any]:
    """The Scratch-E record of pruner entry ``pruner`` at (``sparsity``, ``seed``); raises
    :class:`benchmarks.grid.experiment.StepError` on failure. Resumes from ``work_dir`` like a
    fine-tuning run."""
    from .backends import step
    from .experiment import prune_and_measure
    from ..core.training import convergence_epoch, hits_text

    started = time.perf_counter()
    initial_path = work_dir / "scratch_initial.pt"
    stage = load_torch_or_none(initial_path)
    if stage is None:
        stage = prune_and_measure(config, baseline, arrays, pruner, sparsity, seed, device, progress)
        seed_everything(seed)
        step("reinitialise", lambda: reinitialise(stage["model"]))
        step("checkpoint", lambda: atomic_torch_save(stage, initial_path))
    model, measurements = stage["model"].to(device), stage["measurements"]
    test_loader = evaluation_loader(arrays, config.eval_batch_size)
    initial = step("measure", lambda: correct_per_image(model, test_loader, device))

    epochs = scratch_e_epochs(config)
    seed_everything(seed)
    history = step("train", lambda: fit(
        model, test_loader=test_loader, epochs=epochs, lr=config.baseline_lr, schedule=config.baseline_schedule,
        seed=seed, device=device,
        checkpoint=work_dir / "scratch.ckpt", desc=f"scratch_e:{pruner} s={sparsity:g} seed={seed}",
        progress=progress, **training_options(config, arrays)))
    curve = [float(initial.mean()), *[row["test_acc"] for row in history]]
    final_hits = step("measure", lambda: hits_text(correct_per_image(model, test_loader, device)))
    kept = ("params", "flops", "latency", "unpruned_latency", "latency_ratio", "layer_widths", "pruning_seconds",
            "speedup_seconds", "pruner_options", "config_list")
    return {
        **{key: measurements[key] for key in kept if key in measurements},
        # "after pruning" of a Scratch-E row = its random initialisation
        "acc_after_pruning": curve[0], "hits_after_pruning": hits_text(initial),
        "params_ratio": measurements["params"] / baseline.info["params"],
        "flops_ratio": measurements["flops"] / baseline.info["flops"],
        "scratch_e": {"epochs": epochs, "lr": config.baseline_lr, "source": pruner},
        "finetune_history": history,
        "curve": curve,
        "recoverability": curve[-1],
        "hits_final": final_hits,
        "convergence_epoch": convergence_epoch(curve, baseline.info["test_acc"], config.convergence_tolerance),
        "finetune_seconds": sum(row["seconds"] for row in history),
        "wall_seconds_this_process": time.perf_counter() - started,
    }
