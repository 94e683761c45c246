"""Print each conv layer's damage curve (how far its persistence diagram moves, relative to
the whole diagram, when the least salient fraction r of its filters is pruned) and the
per-layer ratios :func:`nni_topo_pruner.allocation.topological_config_list` allocates, for a
trained CIFAR VGG-16 of ``benchmarks/`` (a cached baseline's ``model.pt``).

Usage::

    python -m benchmarks.studies.allocation_curves --weights benchmarks/cache/baseline-HASH/model.pt \
        [--width 1.0] [--sparsities 0.3,0.5,0.7]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..core.cli import ConfigParser, require
from ..core.models import build_vgg16


@dataclass
class AllocationCurvesConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    weights: str = ""  # state dict of a benchmarks/ VGG-16 (model.pt); required
    width: float = 1.0  # the model's width multiplier
    #: uniform ratios whose FLOPs budget is allocated
    sparsities: List[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])


PRESETS = {"default": AllocationCurvesConfig()}


def check(config: AllocationCurvesConfig) -> None:
    require(bool(config.weights), "weights", "--weights", "name a state dict of a benchmarks/ VGG-16 (model.pt)",
            config.weights)


def build_parser() -> ConfigParser[AllocationCurvesConfig]:
    parser = ConfigParser("python -m benchmarks.studies.allocation_curves", PRESETS,
                          description=__doc__.split("\n\n")[0], check=check,
                          out_dir_help="also write the tables to DIR/allocation_curves.md")
    parser.add_shorthand("--weights", field="weights", type=Path,
                         help="state dict of a benchmarks/ VGG-16 (model.pt); required")
    parser.add_shorthand("--width", field="width", type=float, help="the model's width multiplier")
    parser.add_shorthand("--sparsities", field="sparsities", help="uniform ratios whose FLOPs budget is allocated "
                                                                  "(default 0.3,0.5,0.7)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from nni_topo_pruner.allocation import topological_config_list

    args, config = build_parser().parse_config(argv)
    if not Path(config.weights).is_file():
        print(f"error: --weights {config.weights} is not a file (train the baseline: python -m benchmarks.run "
              f"--preset cpu --baseline-only)", file=sys.stderr)
        return 2
    model = build_vgg16(width=config.width)
    model.load_state_dict(torch.load(config.weights, map_location="cpu", weights_only=True))
    model.eval()
    dummy = torch.zeros(1, 3, 32, 32)
    lines: List[str] = []

    def emit(text: str) -> None:
        print(text)
        lines.append(text)

    for anchor in (None, False):
        label = "zero-anchored (default)" if anchor is None else "without the anchor"
        allocations = {}
        for sparsity in config.sparsities:
            _, layers = topological_config_list(model, [{"op_types": ["Conv2d"], "sparse_ratio": sparsity}], dummy,
                                                progress=False, zero_anchor=anchor)
            allocations[sparsity] = {layer.name: layer.sparse_ratio for layer in layers}
        deviation = max(float(np.max(np.abs(layer.damage - layer.ratios))) for layer in layers)
        grid = layers[0].ratios[2::4]
        emit(f"\n### Weight cloud {label}: largest |damage - r| over layers and grid = {deviation:.3f}\n")
        emit("| layer | filters | " + " | ".join(f"damage at r={r:g}" for r in grid) + " | "
             + " | ".join(f"allocated at {s:g}" for s in allocations) + " |")
        emit("| --- " * (2 + len(grid) + len(allocations)) + "|")
        for layer in layers:
            emit(f"| {layer.name} | {layer.n} | " + " | ".join(f"{d:.2f}" for d in layer.damage[2::4]) + " | "
                 + " | ".join(f"{allocations[s][layer.name]:g}" for s in allocations) + " |")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "allocation_curves.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
