"""Does the benchmark's BatchNorm re-estimation cost a trained network accuracy, and would
re-estimating on augmented images avoid it?

The grid re-estimates every BatchNorm's statistics ("adaptive BN") on ``bn_batches`` batches of
training images **without augmentation**: after one-shot pruning (``acc_after_bn``, before
fine-tuning) and, under a schedule, once after the final speed-up (``final_bn``). This study
measures the same re-estimation, on the same images (``calibration_loader``), once without and
once with the training augmentation (random crop with zero padding, horizontal flip), on

* ``trained``: the preset's baseline as trained (its running statistics kept over augmented batches);
* per pruner: ``pruned``: right after one-shot pruning and speed-up (where the grid uses it), and
  ``fine_tuned``: after the grid's one-shot protocol (un-augmented re-estimation, then
  ``finetune_epochs`` of fine-tuning): the state of one-shot's final model, which the grid never
  re-estimates again.

Each stage's three test accuracies (as is, re-estimated un-augmented, re-estimated augmented)
are compared image by image (McNemar per seed, a bootstrap interval over seeds;
:func:`benchmarks.grid.summary.paired_difference`).

    python -m benchmarks.studies.bn_reestimation --preset full --pruners l1,topological --sparsity 0.5 \\
        --seeds 0 --out-dir benchmarks/results/bn_reestimation

Outputs in ``--out-dir``: ``results.json`` (written after every record; rerunning resumes) and
``report.md``. The command line, resuming and outputs come from :mod:`benchmarks.core.framework`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core.baseline import training_options
from ..core.config import PRESETS, BenchmarkConfig, preset_config, validate
from ..core.data import CifarArrays, calibration_loader, evaluation_loader
from ..core.framework import Experiment, ExperimentUsageError, PlannedRecord, main as run_main
from ..core.training import adapt_batchnorm, correct_per_image, fit, hits_text, seed_everything
from ..grid.backends import bn_loader
from ..grid.experiment import prune_and_measure
from ..grid.runner import prepare
from ..grid.summary import paired_difference

#: the three measurements of every stage, in report order
VARIANTS = ("as_is", "un_augmented", "augmented")
#: the stages a record measures: the baseline's, and a pruner's
STAGES = {"baseline": ("trained",), "pruner": ("pruned", "fine_tuned")}


def reestimation_effects(model: torch.nn.Module, config: BenchmarkConfig, arrays: CifarArrays, seed: int,
                         device: torch.device) -> Dict[str, Dict[str, Any]]:
    """Test accuracy (and per-image hits) of ``model`` as it is and after re-estimating its
    BatchNorm statistics on the grid's ``bn_batches`` x ``batch_size`` training images for
    ``seed``, without and with augmentation (each on a copy: ``model`` is left unchanged)."""
    test_loader = evaluation_loader(arrays, config.eval_batch_size)
    effects: Dict[str, Dict[str, Any]] = {}
    for variant in VARIANTS:
        measured = model
        images = 0
        if variant != "as_is":
            measured = copy.deepcopy(model)
            loader = calibration_loader(arrays, config.bn_batches * config.batch_size, config.batch_size, seed,
                                        augmented=variant == "augmented")
            images = adapt_batchnorm(measured, loader, device, config.bn_batches)
        hits = correct_per_image(measured, test_loader, device)
        effects[variant] = {"acc": float(hits.mean()), "hits": hits_text(hits), "bn_images": images}
    return effects


def baseline_record(config: BenchmarkConfig, baseline: Any, arrays: CifarArrays, seed: int,
                    device: torch.device) -> Dict[str, Any]:
    """The ``trained`` stage: the baseline as trained."""
    model = baseline.fresh_model().to(device)
    return {"trained": reestimation_effects(model, config, arrays, seed, device)}


def pruner_record(config: BenchmarkConfig, baseline: Any, arrays: CifarArrays, pruner: str, sparsity: float,
                  seed: int, device: torch.device, progress: bool) -> Dict[str, Any]:
    """The ``pruned`` and ``fine_tuned`` stages of one-shot pruning as the grid runs it
    (:func:`benchmarks.grid.experiment.prune_and_measure`, then the grid's fine-tuning)."""
    # pruned and sped up, BatchNorm as the baseline left it: the re-estimations are done here
    stage = prune_and_measure(dataclasses.replace(config, bn_batches=0), baseline, arrays, pruner, sparsity, seed,
                              device, progress=progress)
    model = stage["model"].to(device)
    record: Dict[str, Any] = {"pruned": reestimation_effects(model, config, arrays, seed, device)}
    # the grid's protocol: its re-estimation (un-augmented unless bn_augmented), then fine-tuning from that model
    adapt_batchnorm(model, bn_loader(config, arrays, seed), device, config.bn_batches)
    seed_everything(seed)
    history = fit(model, test_loader=evaluation_loader(arrays, config.eval_batch_size),
                  epochs=config.finetune_epochs, lr=config.finetune_lr, seed=seed, device=device,
                  desc=f"{pruner} s={sparsity:g} seed={seed}", progress=progress, **training_options(config, arrays))
    record["fine_tuned"] = reestimation_effects(model, config, arrays, seed, device)
    record["finetune_curve"] = [row["test_acc"] for row in history]
    return record


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _comparison(records: List[Dict[str, Any]], stage: str, candidate: str, reference: str) -> str:
    """``candidate - reference`` of ``stage`` over the records' seeds, image by image: one seed
    gives the images only each side gets right and McNemar's p, several a bootstrap interval.

    >>> records = [{"seed": 0, "trained": {"as_is": {"hits": "1100"}, "augmented": {"hits": "1000"}}}]
    >>> _comparison(records, "trained", "as_is", "augmented")
    '+25.00 (1 / 0, p 1)'
    """
    def runs(variant: str) -> List[Dict[str, Any]]:
        return [{"seed": r["seed"], "hits_after_bn": r[stage][variant]["hits"]} for r in records]

    paired = paired_difference(runs(candidate), runs(reference), "acc_after_bn")
    if len(paired["per_seed"]) == 1:
        row = paired["per_seed"][0]
        p_value = f"p {row['mcnemar_p']:.2g}" if row["mcnemar_p"] >= 1e-16 else "p < 1e-16"
        return f"{_points(paired['difference'])} ({row['wins']} / {row['losses']}, {p_value})"
    low, high = paired["ci95"]
    return f"{_points(paired['difference'])} [{_points(low)}, {_points(high)}] {paired['verdict']}"


def render(results: Dict[str, Any]) -> str:
    args, base, config = results["args"], results["baseline"], results["config"]
    machine = results["machine"]
    lines = ["# BatchNorm re-estimation with and without augmentation", "",
             f"Command: `{results['command']}`  ",
             f"Machine: {machine.get('platform')}, {machine.get('cpu_count')} CPUs, torch threads "
             f"{machine.get('torch_threads')}. Invocations: " + "; ".join(
                 f"{run['started']} at {run['git'].get('commit', '?')[:7]}"
                 f"{' (dirty: ' + ', '.join(run['git'].get('changed', [])) + ')' if run['git'].get('dirty') else ''}, "
                 f"{run['records_before']} records before" for run in results["invocations"]), "",
             f"Baseline {base['key_hash']} (VGG-16 width {base['width']}, test accuracy {100 * base['test_acc']:.2f}%, "
             f"{base['test_images']} test images). Re-estimation: {config['bn_batches']} batches of "
             f"{config['batch_size']} training images per seed (the grid's `bn_batches`, the same images for both "
             f"variants), running statistics averaged over them; augmented = the training augmentation drawn once "
             f"from the seed. One-shot pruning at sparse ratio {args['sparsity']:g}; fine-tuning "
             f"{config['finetune_epochs']} epochs (the grid's protocol).", "",
             "Accuracies in %, differences in points (in brackets: images only the first gets right / only the "
             "second, and McNemar's p; over several seeds a 95% bootstrap interval).", "",
             "| model | stage | seeds | as is | re-estimated, un-augmented (the grid's) | re-estimated, augmented "
             "| un-augmented - as is | augmented - as is | augmented - un-augmented |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for record in results["records"].values():
        for stage in STAGES["baseline" if record["model"] == "baseline" else "pruner"]:
            groups.setdefault((record["model"], stage), []).append(record)
    for (model, stage), records in groups.items():
        means = {v: sum(r[stage][v]["acc"] for r in records) / len(records) for v in VARIANTS}
        lines.append(f"| {model} | {stage} | {len(records)} | {100 * means['as_is']:.2f} | "
                     f"{100 * means['un_augmented']:.2f} | {100 * means['augmented']:.2f} | "
                     f"{_comparison(records, stage, 'un_augmented', 'as_is')} | "
                     f"{_comparison(records, stage, 'augmented', 'as_is')} | "
                     f"{_comparison(records, stage, 'augmented', 'un_augmented')} |")
    return "\n".join(lines) + "\n"


class BnReestimation(Experiment):
    """Records: the baseline per seed, then each pruner per seed."""

    module = "benchmarks.studies.bn_reestimation"
    presets = {name: preset_config(name) for name in PRESETS}
    preset_help = "benchmark preset (smoke, cpu, full, paper), as for python -m benchmarks.run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pruners", default="l1,topological", help="comma-separated grid pruner names")
        parser.add_argument("--sparsity", type=float, default=0.5, help="one-shot sparse ratio of every conv layer")
        parser.add_argument("--seeds", default="0", help="comma-separated seeds (images of the re-estimation, "
                                                         "pruner seed, fine-tuning order)")

    def configure(self, config: BenchmarkConfig, args: argparse.Namespace) -> BenchmarkConfig:
        self.pruners = [name.strip() for name in args.pruners.split(",") if name.strip()]
        self.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
        if not self.seeds:
            raise ExperimentUsageError("--seeds must name at least one seed, e.g. --seeds 0")
        if not 0 < args.sparsity < 1:
            raise ExperimentUsageError(f"--sparsity must lie strictly between 0 and 1, got {args.sparsity}")
        config = validate(config)
        if config.bn_batches < 1:
            raise ExperimentUsageError("bn_batches must be >= 1: this study measures the BatchNorm re-estimation")
        if getattr(config, "schedule", "oneshot") != "oneshot":
            raise ExperimentUsageError("this study prunes one-shot; drop --set schedule=...")
        return config

    def setup(self, progress: bool) -> Dict[str, Any]:
        self.progress = progress
        self.device, self.arrays, self.baseline = prepare(self.config, progress=False)
        return {"args": {"pruners": self.pruners, "sparsity": self.args.sparsity, "seeds": self.seeds,
                         "preset": self.args.preset, "assignments": self.args.assignments},
                "baseline": {"width": self.baseline.width, "test_acc": self.baseline.info["test_acc"],
                             "key_hash": self.baseline.key_hash, "test_images": len(self.arrays.y_test)}}

    def config_dict(self) -> Dict[str, Any]:
        return self.config.to_dict()

    def plan(self) -> List[PlannedRecord]:
        config = self.config
        inputs = {"baseline": self.baseline.key_hash, "bn_batches": config.bn_batches, "batch_size": config.batch_size,
                  **({"bn_augmented": True} if config.bn_augmented else {})}  # the fine-tuned stage's start
        plan = [(f"baseline|seed{seed}", {**inputs, "model": "baseline", "seed": seed}) for seed in self.seeds]
        tuned = {**inputs, "sparsity": self.args.sparsity, "finetune_epochs": config.finetune_epochs,
                 "finetune_lr": config.finetune_lr}
        plan += [(f"{pruner}|s{self.args.sparsity:g}|seed{seed}", {**tuned, "model": pruner, "seed": seed})
                 for seed in self.seeds for pruner in self.pruners]
        return plan

    def run_record(self, key: str, inputs: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        started = time.perf_counter()
        seed = inputs["seed"]
        if inputs["model"] == "baseline":
            stages = baseline_record(self.config, self.baseline, self.arrays, seed, self.device)
        else:
            stages = pruner_record(self.config, self.baseline, self.arrays, inputs["model"], inputs["sparsity"], seed,
                                   self.device, self.progress)
        return {"model": inputs["model"], "seed": seed, **stages, "seconds": time.perf_counter() - started}

    def render(self, results: Dict[str, Any]) -> str:
        return render(results)

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        return key + ": " + "; ".join(
            f"{stage} " + " / ".join(f"{100 * record[stage][v]['acc']:.2f}" for v in VARIANTS)
            for stage in ("trained", "pruned", "fine_tuned") if stage in record)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (see the module docstring)."""
    return run_main(BnReestimation, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
