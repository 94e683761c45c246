"""Training and evaluation throughput of full-width VGG-16 on this machine, recipe by recipe.

Every variant runs in one process, one after another, on real CIFAR-10 images, so the ratios
between rows are measured under the same conditions (absolute images/s depend on the machine
and on whatever else runs). Rows: the ``cpu`` preset's loop (per-image torchvision v2
transforms through a ``DataLoader``, fp32, batch 64), the batched uint8 augmentation
(``benchmarks.core.data.BatchedAugmentedCifar``), ``channels_last``, bf16 autocast, batch sizes,
thread counts and ``torch.compile``; plus the data pipelines alone and the cores' measured
matmul peak (fp32 and bf16), which bounds what any recipe can reach.

    python -m benchmarks.speed.cpu_throughput                      # writes benchmarks/results/cpu_throughput/
    python -m benchmarks.speed.cpu_throughput --steps 4 --quick    # a fast look (no compile, fewer rows)

Outputs: ``results.json`` (rows as they finish, machine and versions) and ``README.md``.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..core.cli import ConfigParser, require
from ..core.data import (AugmentedCifar, BatchedAugmentedCifar, DEFAULT_FULL_NPZ, DEFAULT_NPZ, evaluation_tensors,
                   load_npz)
from ..core.environment import machine_info, package_versions
from ..core.measure import count_flops
from ..core.models import build_vgg16
from ..core.store import atomic_write_json, atomic_write_text

_logger = logging.getLogger(__name__)
OUT_DIR = Path(__file__).resolve().parents[1] / "results" / "cpu_throughput"


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of a square matmul (2 size^3 FLOPs) at the current thread count."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size ** 3 * repeats / (time.perf_counter() - started)


def _batches_per_item(images: np.ndarray, labels: np.ndarray, batch: int, workers: int):
    dataset = AugmentedCifar(images, labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0), persistent_workers=workers > 0)
    while True:
        yield from loader


def _batches_batched(images: np.ndarray, labels: np.ndarray, batch: int, channels_last: bool):
    dataset = BatchedAugmentedCifar(images, labels, channels_last=channels_last)
    generator = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(dataset), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):
            yield dataset.batch(order[start:start + batch], generator)


def pipeline_rate(images: np.ndarray, labels: np.ndarray, pipeline: str, batch: int, batches: int) -> float:
    """Augmented training images/s of a data pipeline alone (no model)."""
    stream = (_batches_per_item(images, labels, batch, 0) if pipeline == "per_image"
              else _batches_batched(images, labels, batch, False))
    next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batch * batches / (time.perf_counter() - started)


def train_rate(images: np.ndarray, labels: np.ndarray, *, batch: int, pipeline: str, precision: str,
               channels_last: bool, compile_model: bool, workers: int, steps: int, warmup: int) -> Dict[str, float]:
    """Training images/s of full-width VGG-16 (SGD step included) and the seconds of the warm-up
    steps (where ``torch.compile`` compiles)."""
    torch.manual_seed(0)
    model = build_vgg16(1.0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    step_model = torch.compile(model) if compile_model else model
    stream = (_batches_per_item(images, labels, batch, workers) if pipeline == "per_image"
              else _batches_batched(images, labels, batch, channels_last))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def step() -> None:
        inputs, targets = next(stream)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        optimiser.zero_grad(set_to_none=True)
        with autocast():
            loss = criterion(step_model(inputs), targets)
        loss.backward()
        optimiser.step()

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return {"train_images_per_s": batch * steps / (time.perf_counter() - started), "warmup_s": warmup_seconds}


@torch.no_grad()
def eval_rate(inputs: torch.Tensor, *, batch: int, precision: str, channels_last: bool, batches: int) -> float:
    """Inference images/s of full-width VGG-16 in eval mode."""
    model = build_vgg16(1.0).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    chunks = [inputs[i * batch:(i + 1) * batch] for i in range(batches + 1)]
    if channels_last:
        chunks = [chunk.contiguous(memory_format=torch.channels_last) for chunk in chunks]
    with autocast():
        model(chunks[0])
        started = time.perf_counter()
        for chunk in chunks[1:]:
            model(chunk)
    return batch * batches / (time.perf_counter() - started)


#: (label, options) of the training rows, in the order they run
TRAIN_ROWS: List[Dict[str, Any]] = [
    dict(label="cpu preset loop: per-image v2 transforms, DataLoader, fp32, batch 64", batch=64,
         pipeline="per_image", precision="fp32", channels_last=False, workers=0),
    dict(label="per-image v2 transforms, 1 loader worker, fp32, batch 64", batch=64,
         pipeline="per_image", precision="fp32", channels_last=False, workers=1),
    dict(label="batched uint8 augmentation, fp32, batch 64", batch=64, pipeline="batched", precision="fp32",
         channels_last=False),
    dict(label="batched, fp32, batch 128", batch=128, pipeline="batched", precision="fp32", channels_last=False),
    dict(label="batched, fp32, channels_last, batch 128", batch=128, pipeline="batched", precision="fp32",
         channels_last=True),
    dict(label="batched, bf16 autocast, batch 128", batch=128, pipeline="batched", precision="bf16",
         channels_last=False),
    dict(label="batched, bf16 autocast, channels_last, batch 64", batch=64, pipeline="batched", precision="bf16",
         channels_last=True),
    dict(label="batched, bf16 autocast, channels_last, batch 128", batch=128, pipeline="batched",
         precision="bf16", channels_last=True),
    dict(label="batched, bf16 autocast, channels_last, batch 256", batch=256, pipeline="batched",
         precision="bf16", channels_last=True),
    dict(label="batched, bf16 autocast, channels_last, batch 128, 1 thread", batch=128, pipeline="batched",
         precision="bf16", channels_last=True, threads=1),
    dict(label="batched, bf16 autocast, channels_last, batch 128, torch.compile", batch=128,
         pipeline="batched", precision="bf16", channels_last=True, compile=True),
]
EVAL_ROWS: List[Dict[str, Any]] = [
    dict(label="eval fp32, batch 256", batch=256, precision="fp32", channels_last=False),
    dict(label="eval fp32, channels_last, batch 256", batch=256, precision="fp32", channels_last=True),
    dict(label="eval bf16 autocast, channels_last, batch 256", batch=256, precision="bf16", channels_last=True),
]


def render(payload: Dict[str, Any]) -> str:
    env = payload["environment"]
    peak = payload["peak"]
    flops = payload["train_flops_per_image"]
    lines = [
        "# VGG-16 (full width) training and evaluation throughput on the CPU",
        "",
        f"Command: `{payload['command']}`. Machine: {env.get('cpu_model') or '?'}, "
        f"{env['machine'].get('cpu_count')} cores "
        f"({payload['threads']} torch threads), torch {env.get('versions', {}).get('torch', '?')}. "
        "All rows ran in one process, one after another, on real CIFAR-10 training images; "
        "ratios between rows are what this table is for (absolute rates move with machine load).",
        "",
        f"Measured arithmetic rate: a 2048 x 2048 matmul runs at {peak['fp32'] / 1e9:.0f} GFLOP/s in fp32 and "
        f"{peak['bf16'] / 1e9:.0f} GFLOP/s in bf16 here. One training image of VGG-16 costs about "
        f"{flops / 1e9:.2f} GFLOP (3 x the forward pass's {payload['forward_macs'] / 1e6:.0f} M multiply-adds, "
        f"2 FLOPs each): {peak['fp32'] / flops:.0f} images/s in fp32 and {peak['bf16'] / flops:.0f} images/s in "
        "bf16 at those rates (a row above 100% means the matmul under-reads the cores' peak; the notes below "
        "give the architectural bound).",
        "",
        "| training recipe | images/s | vs cpu preset loop | % of the precision's matmul peak | warm-up s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    base = payload["train"][0]["train_images_per_s"] if payload["train"] else None
    for row in payload["train"]:
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error']} | | | |")
            continue
        rate = row["train_images_per_s"]
        share = 100 * rate * flops / peak[row["precision"]]
        lines.append(f"| {row['label']} | {rate:.1f} | {rate / base:.2f}x | {share:.0f}% | {row['warmup_s']:.1f} |")
    lines += ["", "| evaluation | images/s |", "| --- | ---: |"]
    lines += [f"| {row['label']} | {row['eval_images_per_s']:.0f} |" for row in payload["eval"]]
    lines += ["", "| data pipeline alone (augmentation + normalisation, batch 128) | images/s |", "| --- | ---: |"]
    lines += [f"| {name} | {rate:.0f} |" for name, rate in payload["pipelines"].items()]
    lines += ["", payload.get("notes", "")]
    return "\n".join(lines).rstrip() + "\n"


@dataclass
class ThroughputConfig:
    """What ``--preset`` / ``--set`` choose (``--steps``, ``--warmup``, ``--eval-batches`` set them too)."""

    steps: int = 8  # timed training steps per row
    warmup: int = 2  # untimed steps per row
    eval_batches: int = 6  # timed evaluation batches per row
    quick: bool = False  # skip torch.compile and the 1-thread row


PRESETS = {"default": ThroughputConfig(), "quick": ThroughputConfig(quick=True)}


def check(config: ThroughputConfig) -> None:
    for key, flag, low in (("steps", "--steps", 1), ("warmup", "--warmup", 0), ("eval_batches", "--eval-batches", 1)):
        require(getattr(config, key) >= low, key, flag, f"be >= {low}", getattr(config, key))


def build_parser() -> ConfigParser[ThroughputConfig]:
    parser = ConfigParser("python -m benchmarks.speed.cpu_throughput", PRESETS, description=__doc__.split("\n")[0],
                          check=check, out_dir=OUT_DIR,
                          out_dir_help="where results.json and README.md go "
                                       "(default: benchmarks/results/cpu_throughput)")
    parser.add_shorthand("--steps", field="steps", type=int, help="timed training steps per row (default 8)")
    parser.add_shorthand("--warmup", field="warmup", type=int, help="untimed steps per row (default 2)")
    parser.add_shorthand("--eval-batches", field="eval_batches", type=int, help="timed evaluation batches per row")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, config = build_parser().parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    source = DEFAULT_FULL_NPZ if DEFAULT_FULL_NPZ.is_file() else DEFAULT_NPZ
    arrays = load_npz(source)
    images, labels = arrays.x_train[:8192], arrays.y_train[:8192]
    threads = torch.get_num_threads()
    forward_macs = count_flops(build_vgg16(1.0), (1, 3, 32, 32))
    payload: Dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.speed.cpu_throughput", *(argv if argv is not None else sys.argv[1:])]),
        "environment": {"machine": machine_info(torch.device("cpu")), "versions": package_versions(),
                        "cpu_model": _cpu_model()}, "threads": threads, "data": source.name,
        "forward_macs": forward_macs, "train_flops_per_image": 6 * forward_macs,
        "peak": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
        "pipelines": {}, "train": [], "eval": [],
    }
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        atomic_write_json(payload, out / "results.json")
        atomic_write_text(render(payload), out / "README.md")

    for pipeline in ("per_image", "batched"):
        payload["pipelines"][pipeline] = pipeline_rate(images, labels, pipeline, 128, 6)
    eval_inputs = evaluation_tensors(arrays)[0][: 256 * (config.eval_batches + 1)]
    for row in EVAL_ROWS:
        rate = eval_rate(eval_inputs, batch=row["batch"], precision=row["precision"],
                         channels_last=row["channels_last"], batches=config.eval_batches)
        payload["eval"].append({**row, "eval_images_per_s": rate})
        _logger.info("%s: %.0f images/s", row["label"], rate)
    save()
    for row in TRAIN_ROWS:
        if config.quick and (row.get("compile") or row.get("threads")):
            continue
        torch.set_num_threads(row.get("threads", threads))
        try:
            result = train_rate(images, labels, batch=row["batch"], pipeline=row["pipeline"],
                                precision=row["precision"], channels_last=row["channels_last"],
                                compile_model=row.get("compile", False), workers=row.get("workers", 0),
                                steps=config.steps, warmup=config.warmup + (3 if row.get("compile") else 0))
        except Exception as error:  # noqa: BLE001 - a recipe that fails here is a row of the table
            result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        finally:
            torch.set_num_threads(threads)
        payload["train"].append({**row, **result})
        _logger.info("%s: %s", row["label"], result)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
