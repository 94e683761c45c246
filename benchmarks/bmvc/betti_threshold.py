"""The BMVC paper's pruning claim: remove every filter whose Betti number exceeds a threshold
(the paper: 300) "without significant reduction in accuracy".

On the benchmark's cached CIFAR VGG-16 baseline (same data, model and training as
``python -m benchmarks.run``; the same ``--preset`` / ``--set`` keys), for each threshold
and seed (the seed picks the calibration images):

* ``betti``: BettiPruner with ``betti_threshold=T`` on every Conv2d;
* ``random`` and ``l1``: the same number of filters per layer, chosen at random / by NNI's
  L1NormPruner -- the controls that say whether the Betti ranking matters.

Accuracy is measured right after pruning (masked model) and, with ``--finetune-epochs``,
after fine-tuning the sped-up model. The Betti scores of every layer (min / median / max /
count above T) are recorded too: the paper states neither its scale nor its number of
images, so whether "300" prunes anything depends on both.

    python -m benchmarks.bmvc.betti_threshold --preset cpu --set width=0.25 --set baseline_epochs=20 \\
        --thresholds 300,400 --seeds 0,1,2 --finetune-epochs 2 --out-dir benchmarks/results/betti/threshold

Outputs in ``--out-dir``: ``results.json`` (written after every record; rerunning resumes:
a record is redone only when what it depends on changed), ``report.md``. The command line,
resuming and outputs come from :mod:`benchmarks.core.framework`.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core.baseline import measure_size
from ..core.config import PRESETS, BenchmarkConfig, preset_config, validate
from ..core.data import calibration_loader, evaluation_loader, train_dataset
from ..grid.backends import SPEEDUP_LOGGER
from ..core.framework import Experiment, PlannedRecord, main as run_main
from ..grid.runner import prepare
from ..core.training import evaluate, fit, seed_everything

METHODS = ("betti", "random", "l1")
#: the flags a record depends on (the thresholds and seeds name records instead)
RECORD_ARGS = ("num_images", "scale", "scale_reference", "max_sparse_ratio", "finetune_epochs")


def _conv_names(model: torch.nn.Module) -> List[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def _kept_counts(masks: Dict[str, Dict[str, torch.Tensor]]) -> Dict[str, int]:
    return {name: int(m["weight"].flatten(1).sum(1).ne(0).sum()) for name, m in masks.items() if "weight" in m}


def _matched_config_list(kept: Dict[str, int], sizes: Dict[str, int]) -> List[Dict[str, Any]]:
    """Per-layer sparse ratios that make NNI prune exactly ``sizes - kept`` filters."""
    configs = []
    for name, size in sizes.items():
        pruned = size - kept[name]
        if pruned == 0:
            continue
        # NNI prunes int(size * ratio) channels: aim at the middle of the interval
        ratio = 1.0 if pruned == size else (pruned + 0.5) / size
        configs.append({"op_names": [name], "sparse_ratio": ratio})
    return configs


def run_record(method: str, threshold: float, seed: int, args: argparse.Namespace, config: BenchmarkConfig,
               baseline: Any, arrays: Any, device: torch.device,
               betti_kept: Optional[Dict[str, int]]) -> Dict[str, Any]:
    """One record: prune the baseline with ``method`` at ``threshold`` (the controls prune
    ``betti_kept`` filters per layer), measure, and fine-tune if asked."""
    from nni_topo_pruner.bmvc.pruner import BettiPruner
    from nni_topo_pruner.random_pruner import RandomPruner
    from nni.compression.pruning import L1NormPruner
    from nni_topo_pruner.speedup import speedup_model

    seed_everything(seed)
    model = baseline.fresh_model().to(device)
    sizes = {name: model.get_submodule(name).out_channels for name in _conv_names(model)}
    started = time.perf_counter()
    extra: Dict[str, Any] = {}
    if method == "betti":
        entry: Dict[str, Any] = {"op_types": ["Conv2d"]}
        if args.max_sparse_ratio is not None:
            entry["max_sparse_ratio"] = args.max_sparse_ratio
        pruner = BettiPruner(model, [entry], calibration_loader=calibration_loader(
            arrays, args.num_images, config.eval_batch_size, seed), num_images=args.num_images,
            betti_threshold=threshold, scale=args.scale, scale_reference=args.scale_reference, progress=False)
    else:
        config_list = _matched_config_list(betti_kept, sizes)
        if not config_list:
            return {"method": method, "threshold": threshold, "seed": seed, "status": "nothing to prune",
                    "kept": dict(sizes), "sizes": sizes}
        pruner = RandomPruner(model, config_list, seed=seed) if method == "random" else L1NormPruner(model, config_list)
    _, masks = pruner.compress()
    seconds = time.perf_counter() - started
    kept = {name: _kept_counts(masks).get(name, size) for name, size in sizes.items()}
    if method != "betti" and kept != betti_kept:
        raise RuntimeError(f"{method}: per-layer counts {kept} differ from BettiPruner's {betti_kept}")
    if method == "betti":
        extra["scores"] = {name: _stats(pruner.scores[name], threshold) for name in sizes}
        extra["images_used"] = min(pruner.images_used.values())
    test_loader = evaluation_loader(arrays, config.eval_batch_size)
    # the masked model differs from the sped-up one: a zeroed conv channel still feeds its
    # BatchNorm's shift forward, a removed one does not. The sped-up model is the pruned one.
    acc_masked = evaluate(model, test_loader, device)
    pruner.unwrap_model()
    record: Dict[str, Any] = {"method": method, "threshold": threshold, "seed": seed, "status": "ok",
                              "kept": kept, "sizes": sizes, "pruning_seconds": seconds,
                              "acc_masked": acc_masked, **extra}
    if any(k == 0 for k in kept.values()):
        record["status"] = "a layer lost every filter: no speed-up, no fine-tuning"
        return record
    dummy = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    speedup_model(model, dummy, masks, logger=SPEEDUP_LOGGER)
    record.update(measure_size(model))
    record["acc_after_pruning"] = evaluate(model, test_loader, device)
    if args.finetune_epochs:
        history = fit(model, train_dataset(arrays), test_loader, epochs=args.finetune_epochs, lr=config.finetune_lr,
                      momentum=config.momentum, weight_decay=config.weight_decay, batch_size=config.batch_size,
                      seed=seed, device=device, desc=f"{method} T={threshold:g} seed={seed}", progress=False)
        record["finetune_curve"] = [row["test_acc"] for row in history]
    return record


def _stats(score: np.ndarray, threshold: float) -> Dict[str, Any]:
    return {"n": int(score.size), "min": int(score.min()), "median": float(np.median(score)),
            "max": int(score.max()), "above": int((score > threshold).sum())}


def record_key(method: str, threshold: float, seed: int) -> str:
    return f"{method}|T{threshold:g}|seed{seed}"


def render(results: Dict[str, Any]) -> str:
    args = results["args"]
    base = results["baseline"]
    lines = ["# BettiPruner at the paper's threshold (BMVC: 'all filters with Betti numbers greater than 300 removed')",
             "", f"Command: `{results['command']}`  ",
             f"Machine: {results['machine'].get('platform')}, {results['machine'].get('cpu_count')} CPUs, "
             f"torch threads {results['machine'].get('torch_threads')}, device {results['machine'].get('device')}  ",
             f"Commit: {results['git'].get('commit')} (dirty: {results['git'].get('dirty')})", "",
             f"Baseline: CIFAR VGG-16 width {base['width']}, test accuracy {base['test_acc']:.4f} "
             f"({base['params']} parameters). BettiPruner: {args['num_images']} calibration images per seed, "
             f"score = b0 at {args['scale']} x the cloud's {args['scale_reference']} distance"
             + ("" if args["scale_reference"] == "absolute" else "") + "; random / l1 prune the same number of "
             f"filters per layer. Fine-tuning: {args['finetune_epochs']} epoch(s).", "",
             "Accuracy after pruning is that of the sped-up (physically smaller) model. A layer whose every filter "
             "exceeds T loses all of them; such runs cannot be sped up (column 'emptied': runs with such a layer) "
             "and have no accuracy after pruning; 'masked' is the accuracy with the masks applied to the full "
             "model instead (a zeroed channel still passes its BatchNorm shift on), given for every run.", "",
             "| threshold | method | filters pruned | emptied | params | acc after pruning (mean ± sd) | "
             f"acc masked | acc after {args['finetune_epochs']} ft epochs | seeds |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for threshold in args["thresholds"]:
        for method in METHODS:
            recs = [r for r in results["records"].values() if r["method"] == method and r["threshold"] == threshold
                    and "acc_masked" in r]
            if not recs:
                continue
            total = sum(recs[0]["sizes"].values())
            pruned = statistics.fmean(total - sum(r["kept"].values()) for r in recs)
            emptied = sum(any(k == 0 for k in r["kept"].values()) for r in recs)
            accs = [r["acc_after_pruning"] for r in recs if "acc_after_pruning" in r]
            masked = [r["acc_masked"] for r in recs]
            ft = [r["finetune_curve"][-1] for r in recs if r.get("finetune_curve")]
            params = [r["params"] for r in recs if "params" in r]
            lines.append(f"| {threshold:g} | {method} | {pruned:.0f}/{total} ({100 * pruned / total:.0f}%) | "
                         f"{emptied} | {f'{statistics.fmean(params):.0f}' if params else 'n/a'} | "
                         f"{_ms(accs) if accs else 'n/a'} | {_ms(masked)} | {_ms(ft) if ft else 'n/a'} | {len(recs)} |")
    first = next((r for r in results["records"].values() if r["method"] == "betti" and "scores" in r), None)
    if first:
        lines += ["", f"## Betti scores per layer (seed {first['seed']}; b0 of each filter's cloud of "
                      f"{first['images_used']} points)", "",
                  "| layer | filters | min | median | max | " + " | ".join(f"> {t:g}" for t in args["thresholds"]) + " |",
                  "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(args["thresholds"])]
        for name, st in first["scores"].items():
            above = []
            for t in args["thresholds"]:
                rec = results["records"].get(record_key("betti", t, first["seed"]))
                above.append(str(rec["scores"][name]["above"]) if rec and "scores" in rec else "")
            lines.append(f"| {name} | {st['n']} | {st['min']} | {st['median']:.0f} | {st['max']} | "
                         + " | ".join(above) + " |")
    return "\n".join(lines) + "\n"


def _ms(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


class BettiThreshold(Experiment):
    """The records: per threshold and seed, betti then its two controls (which need betti's counts)."""

    module = "benchmarks.bmvc.betti_threshold"
    presets = {name: preset_config(name) for name in PRESETS}
    preset_help = "benchmark preset (smoke, cpu, paper), as for python -m benchmarks.run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--thresholds", default="300", help="comma-separated Betti thresholds")
        parser.add_argument("--seeds", default="0,1,2")
        parser.add_argument("--num-images", type=int, default=512)
        parser.add_argument("--scale", type=float, default=0.5)
        parser.add_argument("--scale-reference", default="median")
        parser.add_argument("--max-sparse-ratio", type=float, default=None, help="cap per layer (default: none)")
        parser.add_argument("--finetune-epochs", type=int, default=0)

    def configure(self, config: BenchmarkConfig, args: argparse.Namespace) -> BenchmarkConfig:
        self.thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        self.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not self.thresholds or not self.seeds:
            raise ValueError("--thresholds and --seeds must each name at least one value, e.g. --thresholds 300")
        return validate(config)

    def setup(self, progress: bool) -> Dict[str, Any]:
        self.device, self.arrays, self.baseline = prepare(self.config, progress=False)
        flags = {key: getattr(self.args, key) for key in RECORD_ARGS}
        return {"args": {**flags, "thresholds": self.thresholds, "seeds": self.seeds,
                         "preset": self.args.preset, "assignments": self.args.assignments},
                "baseline": {"width": self.baseline.width, "test_acc": self.baseline.info["test_acc"],
                             "params": self.baseline.info["params"], "key_hash": self.baseline.key_hash}}

    def config_dict(self) -> Dict[str, Any]:
        return self.config.to_dict()

    def plan(self) -> List[PlannedRecord]:
        # a control depends on everything betti's record does (it copies betti's counts)
        inputs = {"baseline": self.baseline.key_hash, **{key: getattr(self.args, key) for key in RECORD_ARGS}}
        return [(record_key(method, threshold, seed), {**inputs, "method": method, "threshold": threshold,
                                                       "seed": seed})
                for threshold in self.thresholds for seed in self.seeds for method in METHODS]

    def run_record(self, key: str, inputs: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        method, threshold, seed = inputs["method"], inputs["threshold"], inputs["seed"]
        betti = records.get(record_key("betti", threshold, seed), {})
        return run_record(method, threshold, seed, self.args, self.config, self.baseline, self.arrays, self.device,
                          betti.get("kept"))

    def render(self, results: Dict[str, Any]) -> str:
        return render(results)

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        return (f"{key}: {record['status']}, acc after pruning {record.get('acc_after_pruning', float('nan')):.4f} "
                f"(masked {record.get('acc_masked', float('nan')):.4f})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (see the module docstring)."""
    return run_main(BettiThreshold, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
