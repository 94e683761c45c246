"""Do the two backends agree? Prune the smoke baseline with every pruner through NNI and through
Torch-Pruning, and compare parameters, FLOPs, accuracy and the kept channels.

Each (pruner, backend) pair runs the benchmark's own :func:`benchmarks.grid.experiment.prune_and_measure`
(same baseline, config list, seed and measurements: thop FLOPs, parameters, test accuracy
right after pruning and after BatchNorm re-estimation); no fine-tuning. Writes ``results.json``
and ``README.md`` (a table) into ``--out-dir``.

Usage::

    python -m benchmarks.studies.backends_smoke --out-dir benchmarks/results/backends_smoke

Exit status: 0 when parameters and FLOPs agree for every pruner and the kept channels agree
for every pruner whose criterion is the same in both backends (l1, l2, topological and its
variants, betti); 1 otherwise; 2 on a usage error.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.cli import ConfigParser, require
from ..core.config import apply_overrides, preset_config, pruner_spec, validate
from ..core.data import REPO_ROOT
from ..core.store import UnwritablePathError, writable_directory

_logger = logging.getLogger(__name__)

DEFAULT_PRUNERS = ["l1", "l2", "fpgm", "random", "topological", "topo_w2=topological", "betti"]
DEFAULT_OPTIONS = {"topo_w2": {"distance": "wasserstein", "wasserstein_order": 2}}
#: criteria that are the same computation in both backends: their kept channels must agree
SAME_CRITERION = ("l1", "l2", "topological", "betti")
WHY_DIFFERENT = {
    "fpgm": "Torch-Pruning's FPGMImportance sums distances between rows of |w|^2, NNI's FPGMPruner between rows of w",
    "random": "Torch-Pruning's RandomImportance draws from torch's global RNG, NNI's RandomPruner from its own generator",
}


def compare(pruner: str, nni: Dict[str, Any], tp: Dict[str, Any]) -> Dict[str, Any]:
    """How the two backends' results for ``pruner`` compare: equal size, equal kept channels, overlap.

    >>> a = {"params": 5, "flops": 9, "kept_channels": {"c": [0, 1]}}
    >>> compare("fpgm", a, {"params": 5, "flops": 9, "kept_channels": {"c": [1, 2]}})["kept_overlap"]
    0.5
    """
    label, name = pruner_spec(pruner)
    name = name.lower()
    kept_a, kept_b = nni["kept_channels"], tp["kept_channels"]
    common = sum(len(set(kept_a[layer]) & set(kept_b.get(layer, ()))) for layer in kept_a)
    total = sum(len(indices) for indices in kept_a.values())
    same_size = nni["params"] == tp["params"] and nni["flops"] == tp["flops"]
    same_kept = kept_a == kept_b
    expected_same = name in SAME_CRITERION
    return {"pruner": label, "pruner_name": name, "same_params_and_flops": same_size, "same_kept_channels": same_kept,
            "kept_overlap": common / total if total else 1.0, "kept_channels_expected_equal": expected_same,
            "agrees": same_size and (same_kept or not expected_same), "why_different": WHY_DIFFERENT.get(name)}


def run(out_dir: Path, pruners: Sequence[str], sparsity: float, seed: int, command_line: List[str]) -> int:
    """Prune with each pruner through both backends, write the outputs; 0 if the backends agree."""
    from ..grid.backends import check_backend_pruners
    from ..core.baseline import measure_size
    from ..core.environment import git_state, machine_info, package_versions
    from ..grid.experiment import prune_and_measure
    from ..grid.runner import prepare
    from ..core.store import atomic_write_json, atomic_write_text

    options = {pruner_spec(p)[0]: DEFAULT_OPTIONS[pruner_spec(p)[0]] for p in pruners
               if pruner_spec(p)[0] in DEFAULT_OPTIONS}
    base = apply_overrides(preset_config("smoke"), [f"pruners={','.join(pruners)}", f"sparsities={sparsity}",
                                                    f"seeds={seed}", "finetune_epochs=0",
                                                    f"pruner_options={json.dumps(options)}"])
    configs = {backend: check_backend_pruners(validate(apply_overrides(base, [f"backend={backend}"])))
               for backend in ("nni", "torch-pruning")}
    device, arrays, baseline = prepare(configs["nni"], progress=False)
    rows: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    for pruner in pruners:
        results = {}
        for backend, config in configs.items():
            started = time.perf_counter()
            stage = prune_and_measure(config, baseline, arrays, pruner, sparsity, seed, device, progress=False)
            measured = stage["measurements"]
            size = measure_size(stage["model"])  # the benchmark's own measure, on the pruned model
            results[backend] = {
                "pruner": pruner_spec(pruner)[0], "backend": backend, **size,
                "acc_after_pruning": measured["acc_after_pruning"], "acc_after_bn": measured.get("acc_after_bn"),
                "layer_widths": measured["layer_widths"], "kept_channels": stage["kept_channels"],
                "importance": measured.get("importance"), "pruner_options": measured["pruner_options"],
                "pruning_seconds": measured["pruning_seconds"], "speedup_seconds": measured["speedup_seconds"],
                "wall_seconds": time.perf_counter() - started,
            }
            _logger.info("%s / %s: %d params, %d FLOPs, acc after BN %.4f", pruner, backend, size["params"],
                         size["flops"], measured.get("acc_after_bn", float("nan")))
        comparison = compare(pruner, results["nni"], results["torch-pruning"])
        comparisons.append(comparison)
        rows += [results["nni"], results["torch-pruning"]]
    agree = all(c["agrees"] for c in comparisons)
    payload = {
        "what": "the smoke baseline pruned by each pruner through both backends (benchmarks.studies.backends_smoke)",
        "command_line": command_line, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(device), "packages": {**package_versions(), **package_versions(["torch-pruning"])},
        "git": git_state(REPO_ROOT), "baseline": {"key_hash": baseline.key_hash, "test_acc": baseline.info["test_acc"],
                                                  "params": baseline.info["params"], "flops": baseline.info["flops"]},
        "sparsity": sparsity, "seed": seed, "config": configs["nni"].to_dict(), "rows": rows,
        "comparisons": comparisons, "backends_agree": agree,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(payload, out_dir / "results.json")
    atomic_write_text(render(payload), out_dir / "README.md")
    _logger.info("wrote %s and %s; backends agree: %s", out_dir / "results.json", out_dir / "README.md", agree)
    return 0 if agree else 1


def render(payload: Dict[str, Any]) -> str:
    """The README: how it was run, then one row per (pruner, backend)."""
    machine, baseline = payload["machine"], payload["baseline"]
    by_pruner = {c["pruner"]: c for c in payload["comparisons"]}
    gpu = machine.get("gpu") or "no GPU"
    lines = [
        "# Both backends on the smoke baseline: NNI vs Torch-Pruning",
        "",
        f"The smoke preset's tiny CIFAR VGG-16 (width 0.125, baseline **{100 * baseline['test_acc']:.2f}%** on "
        f"{payload['config']['test_size']} test images, {baseline['params']} parameters, {baseline['flops']} FLOPs) "
        f"pruned at sparse ratio {payload['sparsity']:g} on every Conv2d (the benchmark's NNI config list), seed "
        f"{payload['seed']}, by each pruner through `--backend nni` (masks, then NNI `ModelSpeedup`) and "
        f"`--backend torch-pruning` (Torch-Pruning's `BasePruner`, the same per-layer counts, no NNI speed-up); "
        f"no fine-tuning. Parameters and FLOPs are `benchmarks.core.baseline.measure_size` (thop MACs of one 32x32 "
        f"image) on the pruned model; accuracy is after BatchNorm re-estimation ({payload['config']['bn_batches']} "
        f"batches of {payload['config']['batch_size']} training images, no weight update).",
        "",
        "```bash",
        " ".join(payload["command_line"]),
        "```",
        "",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPU cores (shared with other jobs), "
        f"{machine['torch_threads']} torch thread(s), device `{machine['device']}`, {gpu}. "
        f"Generated {payload['generated']}; git commit `{payload['git']['commit']}`"
        + (" (uncommitted changes)" if payload["git"].get("dirty") else "") + ". torch-pruning "
        f"{payload['packages'].get('torch-pruning')}, nni {payload['packages'].get('nni')}, torch "
        f"{payload['packages'].get('torch')}.",
        "",
        "| pruner | backend | params | FLOPs | acc. after pruning | acc. after BN re-estimation | equal kept channels | "
        "seconds (prune + speed-up) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in payload["rows"]:
        comparison = by_pruner[row["pruner"]]
        if comparison["same_kept_channels"]:
            kept = "yes"
        else:
            kept = f"no ({100 * comparison['kept_overlap']:.0f}% in common)"
        accuracy_bn = "" if row["acc_after_bn"] is None else f"{100 * row['acc_after_bn']:.2f}%"
        lines.append(f"| {row['pruner']} | {row['backend']} | {row['params']} | {row['flops']} | "
                     f"{100 * row['acc_after_pruning']:.2f}% | {accuracy_bn} | {kept} | "
                     f"{row['pruning_seconds']:.2f} + {row['speedup_seconds']:.2f} |")
    verdict = "agree" if payload["backends_agree"] else "DISAGREE"
    lines += [
        "",
        f"**The backends {verdict}**: parameters and FLOPs are equal for every pruner"
        if all(c["same_params_and_flops"] for c in payload["comparisons"]) else
        f"**The backends {verdict}**: parameters or FLOPs differ for some pruner (see results.json)",
        "",
        "Kept channels are compared layer by layer (original channel indices). Where they cannot be "
        "equal, the criterion itself differs between the two libraries:",
        "",
    ]
    for name, why in WHY_DIFFERENT.items():
        lines.append(f"- `{name}`: {why}; counts, parameters and FLOPs still agree.")
    lines += [
        "- `l1` / `l2` run as `MagnitudeImportance(p, group_reduction='first', normalizer=None, target_types=[Conv, "
        "Linear])`: the filter's own weight norm, as NNI's L1/L2 pruners (Torch-Pruning's default would add the "
        "BatchNorm scale and the next layer's input columns).",
        "- `topological` and `topo_w2` (Wasserstein-2) run as `TopologicalImportance` with the same options and seed: "
        "the same engine.",
        "- `betti` runs as `BettiImportance`: BettiPruner's Betti scores of each filter's feature maps on the same "
        f"{payload['config']['calibration_size']} calibration images.",
        "",
        "`seconds`: for NNI, `compress()` + (`unwrap_model()` and `ModelSpeedup`); for Torch-Pruning, the "
        "importance and ranking + (building the dependency graph and removing the channels). On a shared 2-core "
        "machine these are indicative only.",
        "",
        "The smoke baseline is trained for seconds (6 epochs on 1024 images), and halving every layer leaves it near "
        "chance: these accuracies show that equal channels give equal models (identical accuracy), not which "
        "criterion is better; `../criterion_variants_cpu/` compares the criteria.",
        "",
        "`results.json` holds every number, the per-layer widths and the kept channel indices of each row.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class BackendsSmokeConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    pruners: List[str] = field(default_factory=lambda: list(DEFAULT_PRUNERS))
    sparsity: float = 0.5  # sparse ratio of every Conv2d
    seed: int = 0


PRESETS = {"default": BackendsSmokeConfig()}


def check(config: BackendsSmokeConfig) -> None:
    require(0 < config.sparsity < 1, "sparsity", "--sparsity", "lie strictly between 0 and 1", config.sparsity)


def build_parser() -> ConfigParser[BackendsSmokeConfig]:
    parser = ConfigParser("python -m benchmarks.studies.backends_smoke", PRESETS, description=__doc__.split("\n\n")[0],
                          check=check, out_dir=REPO_ROOT / "benchmarks" / "runs" / "backends_smoke",
                          out_dir_help="where results.json and README.md go (default: benchmarks/runs/backends_smoke)")
    parser.add_shorthand("--pruners", field="pruners",
                         help=f"comma-separated pruners (default: {','.join(DEFAULT_PRUNERS)})")
    parser.add_shorthand("--sparsity", field="sparsity", type=float, help="sparse ratio of every Conv2d (default 0.5)")
    parser.add_shorthand("--seed", field="seed", type=int, help="seed (default 0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line; returns the exit status (see the module docstring)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"nni\.")
    warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*", category=UserWarning)
    parser = build_parser()
    args, config = parser.parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nni.runtime.log import silence_stdout

    silence_stdout()
    for name in ("nni", "matplotlib", "PIL"):  # after NNI's import, which sets its own levels
        logging.getLogger(name).setLevel(logging.WARNING)
    command_line = ["python", "-m", "benchmarks.studies.backends_smoke", *(sys.argv[1:] if argv is None else argv)]
    try:
        writable_directory(args.out_dir, "--out-dir")
        return run(args.out_dir, config.pruners, config.sparsity, config.seed, command_line)
    except (ValueError, UnwritablePathError) as error:
        parser.error(str(error))
    return 2


if __name__ == "__main__":
    sys.exit(main())
