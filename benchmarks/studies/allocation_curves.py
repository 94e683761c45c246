"""Print each conv layer's damage curve (how far its persistence diagram moves, relative to
the whole diagram, when the least salient fraction r of its filters is pruned) and the
per-layer ratios :func:`nni_topo_pruner.allocation.topological_config_list` allocates, for a
trained CIFAR VGG-16 of ``benchmarks/`` (a cached baseline's ``model.pt``).

Usage::

    python -m benchmarks.studies.allocation_curves --weights benchmarks/cache/baseline-HASH/model.pt \
        [--width 1.0] [--sparsities 0.3,0.5,0.7]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..core.models import build_vgg16


def main(argv: Optional[Sequence[str]] = None) -> int:
    from nni_topo_pruner.allocation import topological_config_list

    parser = argparse.ArgumentParser(prog="python -m benchmarks.studies.allocation_curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="state dict of a benchmarks/ VGG-16 (model.pt)")
    parser.add_argument("--width", type=float, default=1.0, help="the model's width multiplier")
    parser.add_argument("--sparsities", default="0.3,0.5,0.7", help="uniform ratios whose FLOPs budget is allocated")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        print(f"error: --weights {args.weights} is not a file (train the baseline: python -m benchmarks.run "
              f"--preset cpu --baseline-only)", file=sys.stderr)
        return 2
    model = build_vgg16(width=args.width)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    dummy = torch.zeros(1, 3, 32, 32)
    for anchor in (None, False):
        label = "zero-anchored (default)" if anchor is None else "without the anchor"
        allocations = {}
        for sparsity in [float(s) for s in args.sparsities.split(",")]:
            _, layers = topological_config_list(model, [{"op_types": ["Conv2d"], "sparse_ratio": sparsity}], dummy,
                                                progress=False, zero_anchor=anchor)
            allocations[sparsity] = {layer.name: layer.sparse_ratio for layer in layers}
        deviation = max(float(np.max(np.abs(layer.damage - layer.ratios))) for layer in layers)
        grid = layers[0].ratios[2::4]
        print(f"\n### Weight cloud {label}: largest |damage - r| over layers and grid = {deviation:.3f}\n")
        print("| layer | filters | " + " | ".join(f"damage at r={r:g}" for r in grid) + " | "
              + " | ".join(f"allocated at {s:g}" for s in allocations) + " |")
        print("| --- " * (2 + len(grid) + len(allocations)) + "|")
        for layer in layers:
            print(f"| {layer.name} | {layer.n} | " + " | ".join(f"{d:.2f}" for d in layer.damage[2::4]) + " | "
                  + " | ".join(f"{allocations[s][layer.name]:g}" for s in allocations) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
