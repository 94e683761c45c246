"""Mask-generation time of the TopologicalPruner against NNI's L1NormPruner and FPGMPruner,
measured side by side in one run (machines here are noisy: read the ratios).

    python -m benchmarks.speed.pruner_speed                      # full-width CIFAR VGG-16, 0.5 on all 13 convs
    python -m benchmarks.speed.pruner_speed --width 0.25 --repeats 1 --homology-dims 0 1

Prints a Markdown table and, with ``--json``, writes the raw timings. Exit status 2, before
anything is timed, on a bad option (one line naming it).
"""
from __future__ import annotations

import copy
import json
import math
import pickle
import platform
import resource
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch

from nni_topo_pruner.registry import create_pruner  # applies the NNI compat patches, for NNI's pruners too
from nni_topo_pruner.topology.kernels import warm_up

from ..core.cli import ConfigParser, require
from ..core.environment import describe_threads, limit_threads
from ..core.models import build_vgg16


def _time_pruner(name: str, model: torch.nn.Module, config_list, options: Dict) -> float:
    model = copy.deepcopy(model)
    pruner = create_pruner(name, model, copy.deepcopy(config_list), **options)
    started = time.perf_counter()
    pruner.compress()
    seconds = time.perf_counter() - started
    pruner.unwrap_model()
    return seconds


@dataclass
class PrunerSpeedConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields); '' / [] / 0 in a
    TopologicalPruner option leave the pruner's default."""

    width: float = 1.0  # VGG-16 width multiplier (1.0 = full width)
    sparse_ratio: float = 0.5
    repeats: int = 3  # timed repeats per pruner (median reported)
    homology_dims: List[int] = field(default_factory=list)
    distance: str = ""
    cloud_metric: str = ""
    wasserstein_order: float = 0.0
    zero_anchor: str = ""  # '', 'true' or 'false'
    weights: str = ""  # a state dict to time on trained weights ('' = random init)
    workers: int = 1
    seed: int = 0
    threads: int = 0  # torch's and NumPy's BLAS threads (0 = their defaults)


PRESETS = {"default": PrunerSpeedConfig()}


def check(config: PrunerSpeedConfig) -> None:
    """Every option checked before anything is timed: a usage error is one line and exit 2."""
    require(config.repeats >= 1, "repeats", "--repeats", "be >= 1", config.repeats)
    require(0 < config.sparse_ratio < 1, "sparse_ratio", "--sparse-ratio", "lie strictly between 0 and 1",
            config.sparse_ratio)
    require(math.isfinite(config.width) and config.width > 0, "width", "--width",
            "be a positive number (1.0 = full width)", config.width)
    require(config.threads >= 0, "threads", "--threads", "be >= 0 (0 = torch's default)", config.threads)
    require(config.zero_anchor in ("", "true", "false"), "zero_anchor", "--zero-anchor",
            "be 'true', 'false' or '' (the pruner's default)", config.zero_anchor)
    if config.weights and not Path(config.weights).is_file():
        raise ValueError(f"--weights {config.weights} is not a file (a state dict such as "
                         f"benchmarks/cache/baseline-*/model.pt)")


def build_parser() -> ConfigParser[PrunerSpeedConfig]:
    parser = ConfigParser("python -m benchmarks.speed.pruner_speed", PRESETS, description=__doc__, check=check,
                          out_dir_help="also write the raw timings to DIR/results.json (like --json)")
    parser.add_shorthand("--width", field="width", type=float, help="VGG-16 width multiplier (1.0 = full width)")
    parser.add_shorthand("--sparse-ratio", field="sparse_ratio", type=float, help="default 0.5")
    parser.add_shorthand("--repeats", field="repeats", type=int, help="timed repeats per pruner (median reported; "
                                                                        "default 3)")
    parser.add_shorthand("--homology-dims", field="homology_dims", type=int, nargs="+",
                         help="TopologicalPruner homology_dims (default: the pruner's default)")
    parser.add_shorthand("--distance", field="distance",
                         help="TopologicalPruner distance (default: the pruner's default)")
    parser.add_shorthand("--cloud-metric", field="cloud_metric",
                         help="TopologicalPruner cloud_metric (default: the pruner's)")
    parser.add_shorthand("--wasserstein-order", field="wasserstein_order", type=float,
                         help="TopologicalPruner wasserstein_order")
    parser.add_shorthand("--zero-anchor", field="zero_anchor", choices=["true", "false"],
                         help="TopologicalPruner zero_anchor (default: the pruner's default)")
    parser.add_shorthand("--weights", field="weights",
                         help="a state dict (e.g. benchmarks/cache/baseline-*/model.pt) to time on trained weights")
    parser.add_shorthand("--workers", field="workers", type=int, help="default 1")
    parser.add_shorthand("--seed", field="seed", type=int, help="default 0")
    parser.add_shorthand("--threads", field="threads", type=int, help="threads of torch and of NumPy's BLAS (0 = their defaults)")
    parser.add_argument("--json", help="write the raw timings to this file")
    return parser


def main(argv: List[str] | None = None) -> Dict:
    parser = build_parser()
    args, config = parser.parse_config(argv)
    if config.threads:
        limit_threads(config.threads)  # torch's pool and NumPy's BLAS: every pruner on the same count

    jit_s = warm_up()  # the compiled kernels' one-time load (or first compilation) stays off the clock
    torch.manual_seed(config.seed)
    try:
        model = build_vgg16(width=config.width).eval()
    except ValueError as error:
        parser.error(f"--width: {error}")
    if config.weights:
        try:
            model.load_state_dict(torch.load(config.weights, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            parser.error(f"--weights {config.weights} is not a state dict of a CIFAR VGG-16 of --width {config.width} "
                         f"({first})")
    config_list = [{"op_types": ["Conv2d"], "sparse_ratio": config.sparse_ratio}]
    topo_options = {"seed": config.seed, "workers": config.workers, "progress": False}
    for key, value in (("homology_dims", config.homology_dims or None), ("distance", config.distance or None),
                       ("cloud_metric", config.cloud_metric or None),
                       ("wasserstein_order", config.wasserstein_order or None),
                       ("zero_anchor", config.zero_anchor == "true" if config.zero_anchor else None)):
        if value is not None:
            topo_options[key] = tuple(value) if key == "homology_dims" else value
    try:  # the pruner validates its own options at construction: ask it before timing anything
        create_pruner("topological", copy.deepcopy(model), copy.deepcopy(config_list), **topo_options)
    except (ValueError, TypeError) as error:
        message = str(error)
        flag = next((f"--{key.replace('_', '-')}" for key in topo_options if message.startswith(key)), None)
        parser.error(f"{flag}: {message}" if flag else f"TopologicalPruner options {topo_options}: {message}")
    pruners: Dict[str, Callable[[], float]] = {
        "l1": lambda: _time_pruner("l1", model, config_list, {}),
        "fpgm": lambda: _time_pruner("fpgm", model, config_list, {}),
        "topological": lambda: _time_pruner("topological", model, config_list, topo_options),
    }
    filters = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    timings: Dict[str, List[float]] = {name: [] for name in pruners}
    for _ in range(config.repeats):  # interleaved, so drifts in machine load hit every pruner alike
        for name, run in pruners.items():
            timings[name].append(run())
    median = {name: sorted(t)[len(t) // 2] for name, t in timings.items()}
    result = {
        "command": " ".join([sys.executable, "-m", "benchmarks.speed.pruner_speed", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()} {platform.processor() or ''} {describe_threads()}".strip(),
        "kernels_loaded_s": jit_s,
        "model": f"CIFAR VGG-16 width {config.width} ({filters} conv filters)",
        "sparse_ratio": config.sparse_ratio, "topological_options": {k: v for k, v in topo_options.items()
                                                                   if k != "progress"},
        "weights": config.weights or "random init (seed)",
        "timings_s": timings, "median_s": median,
        "ratio_topological_to_fpgm": median["topological"] / median["fpgm"],
        "ratio_topological_to_l1": median["topological"] / median["l1"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{result['model']} ({result['weights']}), sparse_ratio {config.sparse_ratio}, "
          f"TopologicalPruner options {result['topological_options']}, median of {config.repeats}")
    print("| pruner | median mask generation (s) | vs FPGM | vs L1 |")
    print("| --- | ---: | ---: | ---: |")
    for name in pruners:
        print(f"| {name} | {median[name]:.3f} | {median[name] / median['fpgm']:.2f}x | {median[name] / median['l1']:.1f}x |")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    for flag, path in (("--json", args.json), ("--out-dir", args.out_dir and args.out_dir / "results.json")):
        if not path:
            continue
        try:
            if flag == "--out-dir":
                args.out_dir.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as handle:
                json.dump(result, handle, indent=1)
        except OSError as error:
            parser.error(f"{flag} {path}: cannot write it ({error.strerror or error}); the table above has the "
                         f"medians")
    return result


if __name__ == "__main__":
    main()
