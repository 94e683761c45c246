"""One benchmark record under a pruning schedule (``--set schedule=agp`` or ``linear``): NNI's
``AGPPruner`` / ``LinearPruner`` around the registry pruner, driven by a ``TorchEvaluator`` whose
training function is the benchmark's own fine-tuning loop (:func:`benchmarks.core.training.fit`).

The training budget is the one-shot record's, step for step: ``finetune_epochs`` epochs of the
same batches (same seed, same shuffles and augmentation draws), the same SGD settings and the
same cosine learning rate from ``finetune_lr``. One-shot prunes the baseline at step 0 (then
re-estimates BatchNorm and trains the small network); a schedule starts training from the
unpruned baseline and updates the masks ``schedule_steps`` times (NNI's ``total_times``), after
optimizer steps ``I, 2I, ..., TI`` with ``I = budget // (T + 1)`` (``budget`` = epochs x batches
per epoch), so the last update leaves at least ``I`` steps at the final sparsity. Then the masked
model is unwrapped and sped up (NNI ``ModelSpeedup``: the same physical pruning as one-shot), its
BatchNorm statistics are re-estimated once (one-shot's images; no weight update), and it is
measured. Each schedule thus gets one BatchNorm re-estimation after its change of architecture
and no other extra: the speed-up removes what the masked model still had (a pruned channel's
BatchNorm shift, a constant the training learns to use, and running statistics that lag the last
masks), so the sped-up model is not the masked one. Equal epochs and optimizer steps, not equal
arithmetic: until its last update a schedule trains wider (masked, not removed) layers, so it
costs more FLOPs per step.

The record has the one-shot record's fields, read for a schedule as follows:

* ``acc_after_pruning`` / ``acc_after_bn`` (and their hits): the masked model right after the
  last mask update (at the final sparsity, before the training that follows it), as is and
  after BatchNorm re-estimation on a side copy of the statistics (the training continues with
  the statistics it had; the RNG is restored, so the measurement does not change the run);
* ``curve``: the baseline's accuracy (where training starts), then the test accuracy after
  each epoch (the masked model at that epoch's sparsity); the last point is the final model
  (sped up, BatchNorm re-estimated), whose accuracy is ``recoverability``. An epoch that ends a
  few steps after a large mask update scores low, as a one-shot model does right after pruning:
  with the full preset's 391 steps an epoch and 5 updates, epoch 2 ends 2 steps
  after the third (docs/benchmarks.md, "The dip in the curves");
* ``convergence_epoch``: counted from the first epoch that ends after the last mask update;
* ``pruning_seconds``: the mask updates' wall time (``finetune_seconds`` includes it);
* ``pruning_schedule``: the schedule, the optimizer step and kept channels of every update, and
  ``masked_acc`` / ``sped_up_acc``: the masked model after the budget and the sped-up one before
  its BatchNorm re-estimation (``final_bn_images`` images).

An interrupted scheduled record resumes after its last finished epoch: each epoch's checkpoint
(``work_dir/schedule.ckpt``) holds, besides the training state :func:`fit` keeps, the masks so
far, the step counters of NNI's triggers (the scheduler's and the bound pruner's), the bound
pruner's per-step history and this record's bookkeeping (:func:`schedule_state`), so the resumed
record equals the uninterrupted one (``tests/test_benchmark_schedule.py``). The finished, sped-up
model is kept in ``work_dir`` until the record is written.

Example (needs a trained baseline, so not a doctest)::

    record = run_scheduled(config, baseline, arrays, "l1", 0.5, 0, device, work_dir)
    record["pruning_schedule"]["updates"][-1]["optimizer_step"], record["recoverability"]
"""
from __future__ import annotations

import logging
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .backends import (SPEEDUP_LOGGER, StepError, bn_loader, criterion_summary, kept_channels, nni_pruner_inputs,
                       run_config_list, step, stored_stage)
from ..core.baseline import Baseline, measure_size, measure_speed, training_options
from ..core.config import BenchmarkConfig
from ..core.data import CifarArrays, calibration_loader, evaluation_loader
from ..core.measure import layer_widths
from ..core.training import (adapt_batchnorm, convergence_epoch, correct_per_image, evaluate, fit, hits_text,
                       seed_everything)

_logger = logging.getLogger(__name__)

#: the rule that spaces the mask updates (it enters the record's key with the schedule)
INTERVAL_RULE = "budget // (total_times + 1)"


def schedule_interval(budget_steps: int, total_times: int) -> int:
    """Optimizer steps between two mask updates: the ``total_times`` updates split the budget into
    ``total_times + 1`` parts, the last (at the final sparsity) taking the remainder too.

    >>> schedule_interval(32, 5), schedule_interval(972, 5)
    (5, 162)
    """
    return budget_steps // (total_times + 1)


def schedule_plan(config: BenchmarkConfig, train_images: int) -> Tuple[int, int, int]:
    """``(batches per epoch, budget in optimizer steps, interval between mask updates)`` of a
    scheduled record on ``train_images`` training images; ``ValueError`` when the budget has fewer
    steps than the schedule has parts (known only once the data is loaded).

    >>> from benchmarks.core.config import BenchmarkConfig
    >>> schedule_plan(BenchmarkConfig(schedule="agp", schedule_steps=5, finetune_epochs=12, batch_size=64), 5170)
    (81, 972, 162)
    """
    steps_per_epoch = -(-train_images // config.batch_size)  # fit()'s batches per epoch (the last one partial)
    budget = config.finetune_epochs * steps_per_epoch
    interval = schedule_interval(budget, config.schedule_steps)
    if interval < 1:
        raise ValueError(f"schedule_steps={config.schedule_steps} needs at least {config.schedule_steps + 1} "
                         f"optimizer steps, but finetune_epochs={config.finetune_epochs} x {steps_per_epoch} "
                         f"batches gives {budget}; lower schedule_steps or raise finetune_epochs")
    return steps_per_epoch, budget, interval


def untrained_parameters(model: nn.Module, optimizer: torch.optim.Optimizer) -> List[str]:
    """Names of the trainable parameters of ``model`` that ``optimizer`` does not update."""
    held = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad and id(parameter) not in held]


#: NNI's trigger counters (``_ComboPruner._register_trigger``, ``_NormPruner._register_trigger``):
#: private attributes of NNI 3.0, its last release
TRIGGER_COUNTERS = ("_current_step", "_remaining_times", "_is_first_step")
#: what the bound pruner keeps of its steps (``ScheduledMasks.steps``; the Topological Pruner's reports)
PRUNER_HISTORY = ("steps", "report", "reports")


def schedule_state(scheduler: Any, bound: Any) -> Dict[str, Any]:
    """What a scheduled training needs, besides its model, optimizer and learning rate, to go on
    where it stopped: the masks so far, the counters of NNI's triggers (when the next update
    comes and how many are left) and the bound pruner's history of steps."""
    return {"masks": {module: {target: mask for target, mask in targets.items() if mask is not None}
                      for module, targets in bound.get_masks().items()},
            "counters": {role: {name: getattr(owner, name) for name in TRIGGER_COUNTERS if hasattr(owner, name)}
                         for role, owner in (("scheduler", scheduler), ("bound", bound))},
            "history": {name: getattr(bound, name) for name in PRUNER_HISTORY if hasattr(bound, name)}}


def restore_schedule_state(scheduler: Any, bound: Any, state: Dict[str, Any]) -> None:
    """Put :func:`schedule_state`'s ``state`` back into a freshly compressing ``scheduler`` and its
    ``bound`` pruner (after NNI registered its triggers, before the model's state is loaded: the
    masks are buffers that exist only once set)."""
    type(bound).update_masks(bound, state["masks"])  # the class's: a record may wrap the instance's
    for role, owner in (("scheduler", scheduler), ("bound", bound)):
        for name, value in state["counters"][role].items():
            setattr(owner, name, value)
    done = scheduler.total_times - scheduler._remaining_times
    if done:  # the target spaces' ratios at the last update (the next update sets its own anyway)
        scheduler.update_sparse_goals(done)
    for name, value in state["history"].items():
        setattr(bound, name, value)


def _scheduler_class(schedule: str) -> type:
    from nni.compression.pruning import AGPPruner, LinearPruner

    return {"agp": AGPPruner, "linear": LinearPruner}[schedule]


def _measure_masked(model: nn.Module, config: BenchmarkConfig, arrays: CifarArrays, seed: int,
                    device: torch.device) -> Dict[str, Any]:
    """Accuracy of the masked model as it is, and after BatchNorm re-estimation on the same images
    as one-shot's, without changing the model or the RNG the training goes on with."""

    test_loader = evaluation_loader(arrays, config.eval_batch_size)
    raw = correct_per_image(model, test_loader, device)
    values: Dict[str, Any] = {"acc_after_pruning": float(raw.mean()), "hits_after_pruning": hits_text(raw)}
    if not config.bn_batches:
        return values
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{name: buffer.clone() for name, buffer in m.named_buffers(recurse=False)} for m in norms]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loader = bn_loader(config, arrays, seed)
        values["bn_images"] = adapt_batchnorm(model, loader, device, config.bn_batches)
        adapted = correct_per_image(model, test_loader, device)
    with torch.no_grad():
        for module, buffers in zip(norms, saved):
            for name, value in buffers.items():
                getattr(module, name).copy_(value)
    values.update(acc_after_bn=float(adapted.mean()), hits_after_bn=hits_text(adapted))
    return values


def prune_during_training(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                          sparsity: float, seed: int, device: torch.device, progress: bool = True,
                          checkpoint: Optional[Path] = None) -> Dict[str, Any]:
    """Train the baseline for the fine-tuning budget under ``config.schedule``, speed it up and
    measure it; returns ``{"model", "measurements", "history", "pruning_schedule"}``. With
    ``checkpoint``, the state after each epoch is saved there and a later call resumes from it."""
    import nni
    from nni.compression.utils import TorchEvaluator

    from nni_topo_pruner.registry import create_pruner
    from nni_topo_pruner.scheduled import with_batchnorm_masks
    from nni_topo_pruner.speedup import speedup_model


    seed_everything(seed)
    model = baseline.fresh_model().to(device)
    config_list = step("create", lambda: run_config_list(config, baseline, sparsity))
    if config.batchnorm_masks:  # the masked model trained is then the one the speed-up keeps
        config_list = step("create", lambda: with_batchnorm_masks(model, config_list))
    dummy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    options = training_options(config, arrays)
    steps_per_epoch, budget, interval = step("create", lambda: schedule_plan(config, len(options["train_set"])))
    total_times = config.schedule_steps

    optimizer_steps = [0]
    updates: List[Dict[str, Any]] = []
    snapshot: Dict[str, Any] = {}
    history: List[Dict[str, Any]] = []

    def training_func(wrapped, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        # the benchmark's loop and loss (a pruner does not patch NNI's training_step; a distiller would)
        missing = untrained_parameters(wrapped, optimizers)
        if missing:
            raise RuntimeError(f"NNI's optimizer for the wrapped model leaves out {len(missing)} parameters "
                               f"({', '.join(missing[:3])}, ...): they would not be trained")
        nni_step = optimizers.step

        def counted_step(self, *args, **kwargs):  # counted before NNI's triggers run inside it
            optimizer_steps[0] += 1
            return nni_step(*args, **kwargs)

        optimizers.step = types.MethodType(counted_step, optimizers)  # a method: LR schedulers wrap __func__

        def saved() -> Dict[str, Any]:
            return {**schedule_state(scheduler, bound), "optimizer_steps": optimizer_steps[0],
                    "updates": list(updates), "snapshot": dict(snapshot)}

        def resumed(state: Dict[str, Any]) -> None:
            restore_schedule_state(scheduler, bound, state)
            optimizer_steps[0] = state["optimizer_steps"]
            updates[:] = state["updates"]
            snapshot.update(state["snapshot"])
            _logger.info("%s %s s=%g seed %d: resumed at optimizer step %d, %d of %d mask updates done", pruner,
                         config.schedule, sparsity, seed, optimizer_steps[0], len(updates), total_times)

        history.extend(fit(wrapped, test_loader=evaluation_loader(arrays, config.eval_batch_size),
                           epochs=config.finetune_epochs, lr=config.finetune_lr, seed=seed, device=device,
                           desc=f"{pruner} {config.schedule} s={sparsity:g} seed={seed}", progress=progress,
                           optimizer_instance=optimizers, checkpoint=checkpoint, checkpoint_extra=saved,
                           resume_extra=resumed, **options))

    def training_step(batch, wrapped):
        inputs, targets = batch
        return nn.functional.cross_entropy(wrapped(inputs), targets, label_smoothing=config.label_smoothing)

    traced = nni.trace(torch.optim.SGD)(model.parameters(), lr=config.finetune_lr, momentum=config.momentum,
                                        weight_decay=config.weight_decay, nesterov=config.nesterov)
    evaluator = TorchEvaluator(training_func, traced, training_step)
    name, pruner_opts, loader = nni_pruner_inputs(
        config, pruner, seed, lambda: calibration_loader(arrays, config.calibration_size, config.eval_batch_size, seed),
        progress)
    # The evaluator goes to the bound pruner, not to the scheduler: NNI records the optimizer's
    # parameters by name when it first sees the evaluator, and the scheduler sees it only after the
    # bound pruner wrapped the model (then the wrapped layers' weights drop out of the optimizer it
    # re-creates: tests/test_benchmark_schedule.py)
    bound = step("create", lambda: create_pruner(name, model, config_list, calibration_loader=loader,
                                                 evaluator=evaluator, **pruner_opts))
    generate, update = bound.generate_masks, bound.update_masks

    def timed_generate_masks():  # NNI's trigger calls self.generate_masks(), then self.update_masks(masks)
        started = time.perf_counter()
        masks = generate()
        updates.append({"optimizer_step": optimizer_steps[0], "seconds": time.perf_counter() - started,
                        "kept": {module: len(channels) for module, channels in sorted(kept_channels(masks).items())}})
        return masks

    def update_and_measure(masks):
        update(masks)
        if len(updates) == total_times:  # the final sparsity reached: "right after pruning"
            snapshot.update(_measure_masked(model, config, arrays, seed, device))

    bound.generate_masks, bound.update_masks = timed_generate_masks, update_and_measure
    scheduler = step("create", lambda: _scheduler_class(config.schedule)(
        bound, interval_steps=interval, total_times=total_times))
    seed_everything(seed)  # the one-shot record's fine-tuning starts from this seed too
    _, masks = step("compress", lambda: scheduler.compress(max_steps=budget, max_epochs=config.finetune_epochs))
    if len(updates) != total_times:
        raise StepError("compress", RuntimeError(f"{config.schedule} made {len(updates)} of {total_times} mask "
                                                 f"updates in {optimizer_steps[0]} optimizer steps"))

    started = time.perf_counter()
    step("unwrap", scheduler.unwrap_model)
    model.to(memory_format=torch.contiguous_format)  # fit() may have left it channels_last
    step("speedup", lambda: speedup_model(model, dummy, masks, logger=SPEEDUP_LOGGER))
    speedup_seconds = time.perf_counter() - started

    def measure() -> Dict[str, Any]:
        unpruned = measure_speed(baseline.fresh_model().to(device).eval(), config, device)
        latency = measure_speed(model, config, device)
        return {**measure_size(model), "latency": latency, "unpruned_latency": unpruned,
                "latency_ratio": latency["median_ms"] / unpruned["median_ms"], "layer_widths": layer_widths(model)}

    def readapt() -> Dict[str, Any]:
        # The speed-up drops what the masked model still had: a pruned channel's BatchNorm shift (a
        # constant the training learns to use) and running statistics that lag the last masks. One
        # BatchNorm re-estimation after the change of architecture, as one-shot gets after its pruning
        # (same images, no weight update), so each schedule has one and the same training budget.
        test_loader = evaluation_loader(arrays, config.eval_batch_size)
        values = {"sped_up_acc": evaluate(model, test_loader, device), "final_bn_images": 0}
        if config.bn_batches and config.final_bn:
            loader = bn_loader(config, arrays, seed)
            values["final_bn_images"] = adapt_batchnorm(model, loader, device, config.bn_batches)
        return values

    measurements = {**step("measure", measure), **snapshot}
    after_speedup = step("measure", readapt)
    criterion = criterion_summary(bound)
    if criterion is not None:
        measurements["criterion"] = criterion
    measurements.update({"pruning_seconds": sum(u["seconds"] for u in updates), "speedup_seconds": speedup_seconds,
                         "pruner_options": pruner_opts, "config_list": config_list,
                         "calibration_images": None if loader is None else len(loader.dataset), "backend": "nni"})
    final_step = updates[-1]["optimizer_step"]
    schedule = {"kind": config.schedule, "total_times": total_times, "interval_steps": interval,
                "steps_per_epoch": steps_per_epoch, "budget_steps": budget,
                "steps_at_final_sparsity": optimizer_steps[0] - final_step,
                # curve index of the first epoch that ends after the last update (convergence counts from it)
                "first_full_sparsity_epoch": -(-final_step // steps_per_epoch),
                "updates": updates, "kept_channels": {m: len(c) for m, c in sorted(kept_channels(masks).items())},
                # the masked model after the budget, then the sped-up one before its BatchNorm re-estimation
                "masked_acc": history[-1]["test_acc"] if history else None, **after_speedup}
    return {"model": model, "measurements": measurements, "history": history, "pruning_schedule": schedule}


def run_scheduled(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                  sparsity: float, seed: int, device: torch.device, work_dir: Path,
                  progress: bool = True) -> Dict[str, Any]:
    """The record for (``pruner``, ``sparsity``, ``seed``) under ``config.schedule``; raises
    :class:`benchmarks.grid.backends.StepError` on failure."""

    started = time.perf_counter()
    stage = stored_stage(work_dir / "scheduled.pt",
                         lambda: prune_during_training(config, baseline, arrays, pruner, sparsity, seed, device,
                                                       progress, checkpoint=work_dir / "schedule.ckpt"),
                         f"{pruner} sparsity {sparsity:g} seed {seed}: scheduled model found")
    model, measurements, history = stage["model"].to(device), stage["measurements"], stage["history"]
    schedule = stage["pruning_schedule"]

    final = step("measure", lambda: correct_per_image(model, evaluation_loader(arrays, config.eval_batch_size),
                                                      device))
    recoverability = float(final.mean())
    _logger.info("%s %s s=%g seed %d: masked model %.4f, sped up %.4f, after BN re-estimation %.4f", pruner,
                 config.schedule, sparsity, seed, schedule["masked_acc"], schedule["sped_up_acc"], recoverability)
    curve = [baseline.info["test_acc"], *[row["test_acc"] for row in history[:-1]], recoverability]
    start = schedule["first_full_sparsity_epoch"]
    converged = convergence_epoch(curve[start:], baseline.info["test_acc"], config.convergence_tolerance)
    return {
        **measurements,
        "pruning_schedule": schedule,
        "params_ratio": measurements["params"] / baseline.info["params"],
        "flops_ratio": measurements["flops"] / baseline.info["flops"],
        "finetune_history": history,
        "curve": curve,
        "recoverability": recoverability,
        "hits_final": hits_text(final),
        "convergence_epoch": None if converged is None else converged + start,
        "finetune_seconds": sum(row["seconds"] for row in history),
        "wall_seconds_this_process": time.perf_counter() - started,
    }
