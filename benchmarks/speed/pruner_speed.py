"""Mask-generation time of the TopologicalPruner against NNI's L1NormPruner and FPGMPruner,
measured side by side in one run (machines here are noisy: read the ratios).

    python -m benchmarks.speed.pruner_speed                      # full-width CIFAR VGG-16, 0.5 on all 13 convs
    python -m benchmarks.speed.pruner_speed --width 0.25 --repeats 1 --homology-dims 0 1

Prints a Markdown table and, with ``--json``, writes the raw timings. Exit status 2, before
anything is timed, on a bad option (one line naming it).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from nni_topo_pruner.registry import create_pruner  # applies the NNI compat patches, for NNI's pruners too

from ..core.models import build_vgg16


def _time_pruner(name: str, model: torch.nn.Module, config_list, options: Dict) -> float:
    model = copy.deepcopy(model)
    pruner = create_pruner(name, model, copy.deepcopy(config_list), **options)
    started = time.perf_counter()
    pruner.compress()
    seconds = time.perf_counter() - started
    pruner.unwrap_model()
    return seconds


def main(argv: List[str] | None = None) -> Dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.pruner_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier (1.0 = full width)")
    parser.add_argument("--sparse-ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per pruner (median reported)")
    parser.add_argument("--homology-dims", type=int, nargs="+", default=None,
                        help="TopologicalPruner homology_dims (default: the pruner's default)")
    parser.add_argument("--distance", default=None, help="TopologicalPruner distance (default: the pruner's default)")
    parser.add_argument("--cloud-metric", default=None, help="TopologicalPruner cloud_metric (default: the pruner's)")
    parser.add_argument("--wasserstein-order", type=float, default=None, help="TopologicalPruner wasserstein_order")
    parser.add_argument("--zero-anchor", choices=["true", "false"], default=None,
                        help="TopologicalPruner zero_anchor (default: the pruner's default)")
    parser.add_argument("--weights", default=None,
                        help="a state dict (e.g. benchmarks/cache/baseline-*/model.pt) to time on trained weights")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", help="write the raw timings to this file")
    args = parser.parse_args(argv)
    # every option checked before anything is timed: a usage error is one line and exit 2
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 < args.sparse_ratio < 1:
        parser.error(f"--sparse-ratio must lie strictly between 0 and 1, got {args.sparse_ratio}")
    if not (math.isfinite(args.width) and args.width > 0):
        parser.error(f"--width must be a positive number (1.0 = full width), got {args.width}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 0 (0 = torch's default), got {args.threads}")
    if args.weights and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights} is not a file (a state dict such as benchmarks/cache/baseline-*/model.pt)")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    try:
        model = build_vgg16(width=args.width).eval()
    except ValueError as error:
        parser.error(f"--width: {error}")
    if args.weights:
        try:
            model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            parser.error(f"--weights {args.weights} is not a state dict of a CIFAR VGG-16 of --width {args.width} "
                         f"({first})")
    config_list = [{"op_types": ["Conv2d"], "sparse_ratio": args.sparse_ratio}]
    topo_options = {"seed": args.seed, "workers": args.workers, "progress": False}
    for key, value in (("homology_dims", args.homology_dims), ("distance", args.distance),
                       ("cloud_metric", args.cloud_metric), ("wasserstein_order", args.wasserstein_order),
                       ("zero_anchor", None if args.zero_anchor is None else args.zero_anchor == "true")):
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
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every pruner alike
        for name, run in pruners.items():
            timings[name].append(run())
    median = {name: sorted(t)[len(t) // 2] for name, t in timings.items()}
    result = {
        "command": " ".join([sys.executable, "-m", "benchmarks.speed.pruner_speed", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads".strip(),
        "model": f"CIFAR VGG-16 width {args.width} ({filters} conv filters)",
        "sparse_ratio": args.sparse_ratio, "topological_options": {k: v for k, v in topo_options.items()
                                                                   if k != "progress"},
        "weights": args.weights or "random init (seed)",
        "timings_s": timings, "median_s": median,
        "ratio_topological_to_fpgm": median["topological"] / median["fpgm"],
        "ratio_topological_to_l1": median["topological"] / median["l1"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{result['model']} ({result['weights']}), sparse_ratio {args.sparse_ratio}, "
          f"TopologicalPruner options {result['topological_options']}, median of {args.repeats}")
    print("| pruner | median mask generation (s) | vs FPGM | vs L1 |")
    print("| --- | ---: | ---: | ---: |")
    for name in pruners:
        print(f"| {name} | {median[name]:.3f} | {median[name] / median['fpgm']:.2f}x | {median[name] / median['l1']:.1f}x |")
    print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    if args.json:
        try:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=1)
        except OSError as error:
            parser.error(f"--json {args.json}: cannot write it ({error.strerror or error}); the table above has the "
                         f"medians")
    return result


if __name__ == "__main__":
    main()
