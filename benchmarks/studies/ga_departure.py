"""Where the genetic algorithm takes the Topological Pruner's choice, layer by layer: how many
kept filters the salience-ranked start shares with L2's choice (the largest filter norms), how
many the GA's answer shares with the start and with L2, and the diagram distance of the start,
of the GA's answer (after its polish) and the proven lower bound, for a CIFAR VGG-16 of ``benchmarks/`` (random init or a ``model.pt``).

Usage::

    python -m benchmarks.studies.ga_departure --weights benchmarks/baselines/baseline-HASH/model.pt \\
        [--width 1.0] [--sparsity 0.5] [--seed 0] [--out FILE.md]

Exit status 2 on a bad option (one line naming it).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core.cli import ConfigParser, require
from ..core.models import build_vgg16


def top_k(scores: Sequence[float], k: int) -> set:
    """The indices of the ``k`` largest scores (ties by index: only a reading aid here).

    Example:
        >>> sorted(top_k([0.1, 3.0, 2.0, 3.0], 2))
        [1, 3]
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return set(int(i) for i in order[:k])


def departure_rows(model: torch.nn.Module, sparsity: float, seed: int) -> List[Dict[str, Any]]:
    """One row per pruned conv layer: the GA's kept set against the salience start and L2."""
    from nni_topo_pruner import TopologicalPruner

    weights = {name: module.weight.detach().reshape(module.weight.shape[0], -1).double().norm(dim=1).numpy()
               for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)}
    pruner = TopologicalPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": sparsity}], seed=seed, progress=False)
    pruner.compress()
    pruner.unwrap_model()
    rows = []
    for unit in pruner.report.units:
        kept = set(unit.kept_channels)
        k = len(kept)
        start, l2 = top_k(unit.salience, k), top_k(weights[unit.name], k)
        rows.append({"layer": unit.name, "filters": unit.neurons, "kept": k,
                     "start_shared_with_l2": len(start & l2) / k,
                     "shared_with_start": len(kept & start) / k, "shared_with_l2": len(kept & l2) / k,
                     "start_distance": unit.initial_distance, "final_distance": unit.final_distance,
                     "lower_bound": unit.lower_bound})
    return rows


def markdown(rows: List[Dict[str, Any]], header: str) -> str:
    lines = [header, "", "| layer | filters | kept | salience start: shared with L2 | GA's answer: shared with the start "
             "| GA's answer: shared with L2 | distance: start | distance: GA's answer | proven bound |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['filters']} | {r['kept']} | {r['start_shared_with_l2']:.0%} "
                     f"| {r['shared_with_start']:.0%} | {r['shared_with_l2']:.0%} "
                     f"| {r['start_distance']:.5g} | {r['final_distance']:.5g} | {r['lower_bound']:.5g} |")
    return "\n".join(lines) + "\n"


@dataclass
class GaDepartureConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    weights: str = ""  # state dict of a benchmarks/ VGG-16 ('' = random init)
    width: float = 1.0  # the model's width multiplier
    sparsity: float = 0.5  # uniform sparse ratio of every conv layer
    seed: int = 0  # the TopologicalPruner's seed


PRESETS = {"default": GaDepartureConfig()}


def check(config: GaDepartureConfig) -> None:
    if config.weights and not Path(config.weights).is_file():
        raise ValueError(f"--weights {config.weights}: no such file (a state dict saved with torch.save)")
    require(config.width > 0, "width", "--width", "be > 0", config.width)
    require(0 < config.sparsity < 1, "sparsity", "--sparsity", "lie strictly between 0 and 1", config.sparsity)


def build_parser() -> ConfigParser[GaDepartureConfig]:
    parser = ConfigParser("python -m benchmarks.studies.ga_departure", PRESETS, description=__doc__.split("\n\n")[0],
                          check=check, out_dir_help="also write the table to DIR/ga_departure.md (like --out)")
    parser.add_shorthand("--weights", field="weights", type=Path,
                         help="state dict of a benchmarks/ VGG-16 (default: random init)")
    parser.add_shorthand("--width", field="width", type=float, help="the model's width multiplier")
    parser.add_shorthand("--sparsity", field="sparsity", type=float, help="uniform sparse ratio of every conv layer")
    parser.add_shorthand("--seed", field="seed", type=int, help="the TopologicalPruner's seed")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, config = build_parser().parse_config(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.manual_seed(0)
    model = build_vgg16(width=config.width)
    if config.weights:
        model.load_state_dict(torch.load(config.weights, map_location="cpu", weights_only=True))
    rows = departure_rows(model.eval(), config.sparsity, config.seed)
    header = (f"VGG-16 width {config.width:g} ({config.weights or 'random init'}), sparse ratio {config.sparsity:g}, "
              f"TopologicalPruner defaults, seed {config.seed}")
    text = markdown(rows, header)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "ga_departure.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
