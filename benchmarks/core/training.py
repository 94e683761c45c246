"""Training and evaluation loops with per-epoch checkpoints that resume exactly.

Every epoch reseeds torch (augmentation) and the shuffling generator from ``(seed, epoch)``,
so an epoch's randomness does not depend on how many epochs ran in this process: a run
interrupted after epoch k and resumed from its checkpoint follows the same trajectory as an
uninterrupted one (bit for bit on the same CPU build and thread count).

Example
-------
>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
>>> data = TensorDataset(torch.randn(16, 3, 2, 2), torch.arange(16) % 2)
>>> history = fit(model, data, DataLoader(data, batch_size=8), epochs=2, lr=0.1, momentum=0.9,
...               weight_decay=0.0, batch_size=8, seed=0, device=torch.device("cpu"), progress=False)
>>> [row["epoch"] for row in history]
[1, 2]
>>> bn = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
>>> adapt_batchnorm(bn, DataLoader(TensorDataset(torch.randn(16, 3, 2, 2) + 5, torch.zeros(16)), batch_size=4),
...                 torch.device("cpu"), batches=3)
12
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from .config import PRECISIONS
from .data import BatchedAugmentedCifar
from .store import atomic_torch_save, load_torch_or_none

_logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a run seeded ``seed`` (independent of earlier epochs)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2 ** 63)


@torch.no_grad()
def correct_per_image(model: nn.Module, loader: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                      device: torch.device) -> np.ndarray:
    """Whether ``model`` classifies each sample of ``loader`` (a DataLoader or any iterable of
    (inputs, targets) batches) correctly (bool, loader order)."""
    was_training = model.training
    model.eval()
    hits = []
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        hits.append((model(inputs).argmax(dim=1) == targets).cpu().numpy())
    model.train(was_training)
    if not hits or sum(len(h) for h in hits) == 0:
        raise ValueError("evaluate(): the loader yielded no samples")
    return np.concatenate(hits)


def evaluate(model: nn.Module, loader: Iterable[Tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in [0, 1]."""
    return float(correct_per_image(model, loader, device).mean())


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device, batches: int) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches`` batches of ``loader``,
    in train mode with no weight update ("adaptive BN", Li et al., ECCV 2020): after
    structured pruning the old statistics no longer describe the pruned network's activations.

    Statistics are the plain average over the batches (momentum ``None``). Returns the number
    of images used; a model without BatchNorm is left as it is (0).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative moving average = mean over the batches seen
    model.train()
    seen = 0
    try:
        for index, (inputs, _) in enumerate(loader):
            if index >= batches:
                break
            model(inputs.to(device))
            seen += len(inputs)
    finally:
        for module, momentum in saved:
            module.momentum = momentum
        model.train(was_training)
    return seen


#: fraction of the one-cycle schedule's steps spent warming up
ONECYCLE_WARMUP = 0.15


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX, as torch reports
    them); elsewhere CPU autocast emulates it, far slower than float32. A torch without these
    (private) probes is assumed to have it: no warning rather than a wrong one."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):
        return True
    return any(bool(probe()) for probe in probes)


def warn_if_bf16_is_emulated(precision: str, device: torch.device) -> bool:
    """Log a warning (and return True) when ``precision='bf16'`` would train on a CPU without
    native bfloat16: measured on a 2-core AVX2 AMD EPYC, one thread, batch 128, a VGG-16 pruned
    at 0.5 trained at 9.4 images/s under bf16 autocast against 119 in float32."""
    if precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return False
    _logger.warning("precision='bf16' on a CPU without AVX-512 BF16 or AMX (torch reports %s): autocast emulates "
                    "bfloat16 and trains about 12x slower than float32 here. The preset's records and baseline key "
                    "assume bf16: run it on a CPU with bf16 or a GPU (--set device=cuda), or choose "
                    "--set precision=fp32 (another baseline key: that baseline is trained anew)",
                    torch.backends.cpu.get_cpu_capability())
    return True


def _autocast(precision: str, device: torch.device):
    """bf16 autocast (matmuls and convolutions in bfloat16, reductions and the loss in float32),
    or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_one_epoch(model: nn.Module, loader: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                     optimizer: torch.optim.Optimizer, device: torch.device, desc: str, progress: bool, *,
                     precision: str = "fp32", channels_last: bool = False, label_smoothing: float = 0.0,
                     step_scheduler: Optional[Any] = None, total: Optional[int] = None) -> Dict[str, float]:
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for inputs, targets in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch", total=total):
        inputs, targets = inputs.to(device), targets.to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(precision, device):
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        with torch.no_grad():  # accumulated on the device: no host sync per batch on an accelerator
            loss_sum += loss.detach().double() * len(targets)
            correct += (outputs.argmax(dim=1) == targets).sum()
        seen += len(targets)
    return {"train_loss": float(loss_sum) / seen, "train_acc": int(correct) / seen}


OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant", "onecycle")


def _optimizer(name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float,
               nesterov: bool = False) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"fit(): optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _epoch_loader(train_set: Any, batch_size: int, generator: torch.Generator,
                  num_workers: int) -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
    """The shuffled batches of one epoch. A ``BatchedAugmentedCifar`` draws its permutation and
    every batch's augmentation from ``generator`` in this process (no workers needed). A
    ``TensorDataset`` is indexed a batch at a time (one tensor gather instead of ``batch_size``
    item look-ups and a collate): the same batches in the same order, from the same draws of
    ``generator``, many times faster for small models."""
    if isinstance(train_set, BatchedAugmentedCifar):
        order = torch.randperm(len(train_set), generator=generator)
        return (train_set.batch(order[start:start + batch_size], generator)
                for start in range(0, len(order), batch_size))
    if isinstance(train_set, TensorDataset):
        batches = BatchSampler(RandomSampler(train_set, generator=generator), batch_size, drop_last=False)
        return DataLoader(train_set, batch_size=None, sampler=batches, generator=generator, num_workers=num_workers)
    return DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                      num_workers=num_workers, drop_last=False)


def fit(model: nn.Module, train_set: Dataset, test_loader: Iterable[Tuple[torch.Tensor, torch.Tensor]], *, epochs: int, lr: float,
        batch_size: int, seed: int, device: torch.device, momentum: float = 0.0, weight_decay: float = 0.0,
        optimizer: str = "sgd", schedule: str = "cosine", checkpoint: Optional[Path] = None,
        num_workers: int = 0, desc: str = "train", progress: bool = True,
        on_epoch: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None, precision: str = "fp32",
        channels_last: bool = False, label_smoothing: float = 0.0, nesterov: bool = False,
        optimizer_instance: Optional[torch.optim.Optimizer] = None,
        checkpoint_extra: Optional[Callable[[], Any]] = None,
        resume_extra: Optional[Callable[[Any], None]] = None) -> List[Dict[str, Any]]:
    """Train ``model`` for at most ``epochs`` epochs; test accuracy after every epoch.

    ``optimizer``: ``'sgd'`` (with ``momentum``) or ``'adam'``, both with ``weight_decay``;
    ``schedule``: ``'cosine'`` (the learning rate falls from ``lr`` to 0 over ``epochs``),
    ``'constant'`` or ``'onecycle'`` (per batch: up from ``lr / 25`` to ``lr`` over the first
    ``ONECYCLE_WARMUP`` of the steps, then cosine down to ``lr / 2.5e5``; Smith & Topin 2019).
    ``precision='bf16'`` trains under bfloat16 autocast (evaluation stays float32);
    ``channels_last`` stores the model and its inputs in NHWC, which oneDNN's convolutions
    prefer. ``on_epoch`` is called with each epoch's row; when it returns ``True`` training
    stops after that epoch (an early stop).

    With ``checkpoint`` set, the state after each epoch is saved there atomically and a later
    call with the same arguments resumes after the last finished epoch (or returns at once
    after an early stop). ``checkpoint_extra()`` (picklable) is saved with each checkpoint and
    handed to ``resume_extra`` on resumption, before the model's state is loaded (so that a
    caller can first give the model buffers the checkpoint holds, e.g. NNI's masks).
    ``optimizer_instance``, when given, is used instead of building
    ``optimizer`` (it must hold ``model``'s parameters with ``lr`` set): NNI's ``TorchEvaluator``
    re-creates the optimizer and patches its ``step`` to run a scheduled pruner's triggers.
    The model is trained in place; returns one dict per epoch
    (``epoch``, ``test_acc``, ``train_loss``, ``train_acc`` -- the running accuracy over the
    epoch's batches, in train mode --, ``lr``, ``seconds``).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"fit(): optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"fit(): schedule must be one of {SCHEDULES}, got {schedule!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"fit(): precision must be one of {PRECISIONS}, got {precision!r}")
    model.to(device)
    warn_if_bf16_is_emulated(precision, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimiser = (optimizer_instance if optimizer_instance is not None
                 else _optimizer(optimizer, model, lr, momentum, weight_decay, nesterov=nesterov))
    steps_per_epoch = -(-len(train_set) // batch_size)
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=ONECYCLE_WARMUP,
            anneal_strategy="cos", cycle_momentum=False)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    history: List[Dict[str, Any]] = []
    stopped = False  # an early stop already saved in the checkpoint
    if checkpoint is not None:
        state = load_torch_or_none(checkpoint)
        if state is not None and state.get("epochs") == epochs and state.get("seed") == seed:
            if resume_extra is not None:
                resume_extra(state.get("extra"))
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            stopped = bool(state.get("stopped", False))
            _logger.info("%s: resuming from %s after epoch %d/%d", desc, checkpoint, len(history), epochs)
        elif state is not None:
            _logger.warning("%s: checkpoint %s belongs to another schedule; starting over", desc, checkpoint)
    for epoch in range(len(history) + 1, 0 if stopped else epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch))  # augmentation draws
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))  # shuffling
        loader = _epoch_loader(train_set, batch_size, generator, num_workers)
        current_lr = optimiser.param_groups[0]["lr"]
        per_step = schedule == "onecycle"
        stats = _train_one_epoch(model, loader, optimiser, device, f"{desc} {epoch}/{epochs}", progress,
                                 precision=precision, channels_last=channels_last, label_smoothing=label_smoothing,
                                 step_scheduler=scheduler if per_step else None, total=steps_per_epoch)
        if not per_step:
            scheduler.step()
        row = {"epoch": epoch, "test_acc": evaluate(model, test_loader, device), "lr": current_lr,
               **stats, "seconds": time.perf_counter() - started}
        history.append(row)
        _logger.info("%s epoch %d/%d: test acc %.4f, train loss %.4f (%.1f s)", desc, epoch, epochs,
                     row["test_acc"], row["train_loss"], row["seconds"])
        if checkpoint is not None:
            _save_checkpoint(checkpoint, epochs, seed, model, optimiser, scheduler, history, stopped=False,
                             extra=None if checkpoint_extra is None else checkpoint_extra())
        if on_epoch is not None and on_epoch(row):
            if checkpoint is not None:  # a resumed call then returns at once
                _save_checkpoint(checkpoint, epochs, seed, model, optimiser, scheduler, history, stopped=True,
                                 extra=None if checkpoint_extra is None else checkpoint_extra())
            break
    return history


def _save_checkpoint(path: Path, epochs: int, seed: int, model: nn.Module, optimiser: torch.optim.Optimizer,
                     scheduler: Any, history: List[Dict[str, Any]], stopped: bool, extra: Any = None) -> None:
    atomic_torch_save({"epochs": epochs, "seed": seed, "model": model.state_dict(),
                       "optimizer": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                       "history": history, "stopped": stopped, "extra": extra}, path)


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
