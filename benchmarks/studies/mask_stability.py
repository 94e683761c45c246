"""How far a tiny perturbation moves the TopologicalPruner's masks (issue 25's table).

Every parameter of a CIFAR VGG-16 is multiplied by ``1 + rel * N(0, 1)`` (a fresh draw per
trial, ``rel`` = 1e-7 by default: the size of float32 rounding differences between CPUs),
every conv layer is pruned at ``--sparsity`` with each criterion variant, and each layer's
kept channels are compared with the unperturbed run's: "layer masks changed" counts
(trial, layer) pairs whose kept set moved, "channels swapped" the channels that left them.

The model is a random-init VGG-16 (Kaiming conv weights, BN affine drawn in [0.5, 1.5] and
[-0.2, 0.2], eval mode) unless ``--weights`` names a state dict (e.g. a trained baseline's
``model.pt``). Calibration images for ``cloud='activations'`` are 64 fixed random tensors, or
with ``--data`` (``auto``, an ``.npz`` path, ...) 64 fixed training images of that data set,
normalised as the benchmark normalises them (a trained network sees what it was trained on).

With ``--environments`` the model is not perturbed: the same model and images are pruned in
child processes under other thread counts and CPU instruction sets (``OMP_NUM_THREADS``,
``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``: what differs between machines), and each
environment's masks are compared with the first's. The model's weights travel to the children
in a file (a random-init model drawn under another ``ATEN_CPU_CAPABILITY`` would be another
model: torch's normal sampler is vectorised). ``--precision`` sets ``calibration_precision``
of the activation variant (``float64``, the default, or ``model``).

Only the pruner's public API is used, so the same script measures an older checkout
(``git worktree add /tmp/before HEAD`` then ``PYTHONPATH=/tmp/before``).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.studies.mask_stability --trials 10 --out table.md
    OMP_NUM_THREADS=1 python -m benchmarks.studies.mask_stability --variants cosine --width 0.5 --trials 3
    python -m benchmarks.studies.mask_stability --environments --variants activations --precision model
"""
from __future__ import annotations

import copy
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from benchmarks.core.cli import ConfigParser, require
from benchmarks.core.models import build_vgg16

logger = logging.getLogger("benchmarks.studies.mask_stability")

#: variant name -> TopologicalPruner options (calibration data is added for activations)
VARIANTS: Dict[str, Dict] = {
    "default": {},
    "bottleneck": {"distance": "bottleneck"},
    "no_anchor": {"zero_anchor": False},
    "cosine": {"cloud_metric": "cosine"},
    "activations": {"cloud": "activations", "num_images": 64},
    "activations_local": {"cloud": "activations", "num_images": 64, "search": "local"},
}


def build_model(width: float, weights: Optional[str], seed: int) -> torch.nn.Module:
    """The VGG-16 the perturbations are applied to (eval mode)."""
    torch.manual_seed(seed)
    model = build_vgg16(width=width)
    if weights:
        state = torch.load(weights, map_location="cpu")
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    else:
        for module in model.modules():  # non-trivial BN, so that BN layers are not all identity
            if isinstance(module, torch.nn.BatchNorm2d):
                with torch.no_grad():
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def calibration(seed: int = 1, batches: int = 2, batch_size: int = 32, data: str = "") -> List[Any]:
    """The calibration batches: random images, or ``batches * batch_size`` fixed training
    images of the data set ``data`` names (:func:`benchmarks.core.data.load_data`)."""
    if data:
        from benchmarks.core.data import calibration_loader, load_data

        return list(calibration_loader(load_data(data), batches * batch_size, batch_size, seed))
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch_size, 3, 32, 32, generator=generator) for _ in range(batches)]


def perturbed(model: torch.nn.Module, rel: float, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every floating parameter and buffer times ``1 + rel * N(0, 1)``.

    Example:
        >>> layer = torch.nn.Linear(4, 3)
        >>> moved = perturbed(layer, 1e-7, seed=0)
        >>> torch.equal(layer.weight, moved.weight), torch.allclose(layer.weight, moved.weight, rtol=1e-6, atol=0)
        (False, True)
    """
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            tensor.copy_((tensor.double() * (1.0 + rel * noise)).to(tensor.dtype))
    return model


#: (label, environment variables) of ``--environments``; the first is the reference
ENVIRONMENTS = [
    ("1 thread", {"OMP_NUM_THREADS": "1"}),
    ("2 threads", {"OMP_NUM_THREADS": "2"}),
    ("1 thread, oneDNN up to AVX2", {"OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("1 thread, ATen AVX2 kernels", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"}),
    ("1 thread, no SIMD (ATen default, oneDNN SSE4.1)",
     {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("2 threads, no SIMD", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}),
]


def environment_child(folder: str) -> None:
    """In a child process: prune the model of ``folder/job.pt`` and write its kept channels."""
    job = torch.load(Path(folder) / "job.pt", weights_only=False)
    model = build_vgg16(width=job["width"])
    model.load_state_dict(job["state"])
    units = unit_reports(model.eval(), job["options"], job["sparsity"], job["images"])
    (Path(folder) / "kept.json").write_text(json.dumps({name: sorted(map(int, unit.kept_channels))
                                                        for name, unit in units.items()}))


def measure_environments(model: torch.nn.Module, width: float, options: Dict, sparsity: float,
                         images: Optional[List[Any]] = None,
                         environments: Sequence = tuple(ENVIRONMENTS)) -> List[Dict[str, Any]]:
    """Prune the same model and images under each of ``environments`` (default
    :data:`ENVIRONMENTS`) in a child process; per environment, the layer masks (and channels)
    that differ from the first's."""
    root = Path(__file__).resolve().parents[2]
    results, reference = [], None
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"width": width, "state": model.state_dict(), "options": options, "sparsity": sparsity,
                    "images": images if images is not None else calibration()}, Path(folder) / "job.pt")
        for label, variables in environments:
            env = {**os.environ, **variables, "PYTHONPATH": os.pathsep.join(
                filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
            for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
                if name not in variables:
                    env.pop(name, None)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from benchmarks.studies.mask_stability import "
                            "environment_child; environment_child(sys.argv[1])", folder],
                           env=env, check=True, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            kept = json.loads((Path(folder) / "kept.json").read_text())
            reference = reference or kept
            moved = [len(set(reference[layer]) ^ set(kept[layer])) // 2 for layer in reference]
            results.append({"environment": label, "layers": len(moved), "changed": sum(m > 0 for m in moved),
                            "swapped": sum(moved), "seconds": time.perf_counter() - started})
    return results


def unit_reports(model: torch.nn.Module, options: Dict, sparsity: float,
                 images: Optional[List[Any]] = None) -> Dict[str, Any]:
    """The pruner's report per pruned layer (``UnitReport``: kept channels, salience, GA)."""
    from nni_topo_pruner import TopologicalPruner

    options = dict(options)
    if options.get("cloud") == "activations":
        options["calibration_loader"] = images if images is not None else calibration()
    config = [{"op_types": ["Conv2d"], "sparse_ratio": sparsity}]
    pruner = TopologicalPruner(model, config, progress=False, **options)
    pruner.compress()
    pruner.unwrap_model()
    return {unit.name: unit for unit in pruner.report.units}


def explain(reference: Any, moved: Any) -> str:
    """Why one layer's mask moved: how far its salience moved, the salience gap at the cut
    (both relative to the largest salience), and where the GA stopped in each run."""
    salience, other = np.asarray(reference.salience), np.asarray(moved.salience)
    top = float(np.max(np.abs(salience))) or 1.0
    ranked = np.sort(salience)[::-1]
    cut = float(ranked[reference.kept - 1] - ranked[reference.kept]) / top if reference.kept < len(ranked) else float("nan")

    def ga(unit: Any) -> str:
        return (f"start {unit.initial_distance:.6g}, GA {unit.ga_distance:.6g}, final {unit.final_distance:.6g}, "
                f"{len(unit.ga_history) - 1} generations, {unit.polish_swaps} polish swaps, converged {unit.converged}")

    return (f"{reference.name} ({reference.neurons} channels): salience moved {np.max(np.abs(salience - other)) / top:.2g}, "
            f"gap at the cut {cut:.2g}; bound {reference.lower_bound:.6g}; reference: {ga(reference)}; perturbed: {ga(moved)}")


def measure(model: torch.nn.Module, options: Dict, sparsity: float, trials: int, rel: float,
            explain_changes: bool = False, images: Optional[List[Any]] = None) -> Dict[str, float]:
    reference = unit_reports(copy.deepcopy(model), options, sparsity, images)
    changed = swapped = 0
    started = time.perf_counter()
    for trial in range(trials):
        units = unit_reports(perturbed(model, rel, 1000 + trial), options, sparsity, images)
        for layer, unit in reference.items():
            moved = len(set(unit.kept_channels) ^ set(units[layer].kept_channels)) // 2
            changed += moved > 0
            swapped += moved
            if moved and explain_changes:
                logger.info("trial %d, %d channels swapped: %s", trial, moved, explain(unit, units[layer]))
    return {"layers": len(reference) * trials, "changed": changed, "swapped": swapped,
            "seconds": time.perf_counter() - started}


@dataclass
class MaskStabilityConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    variants: List[str] = field(default_factory=lambda: list(VARIANTS))
    width: float = 0.125
    weights: str = ""  # state dict to load ('' = random init)
    trials: int = 10
    rel: float = 1e-7  # relative perturbation of every parameter
    sparsity: float = 0.5
    seed: int = 0
    data: str = ""  # calibration images: '' = random tensors, else a data spec (load_data) for real ones
    explain: bool = False  # log, for every layer mask that moved, how its salience moved and where the GA stopped
    environments: bool = False  # compare masks across thread counts and instruction sets instead of perturbing
    precision: str = "float64"  # calibration_precision of the activation variant ('float64' or 'model')


PRESETS = {"default": MaskStabilityConfig()}


def check(config: MaskStabilityConfig) -> None:
    unknown = [name for name in config.variants if name not in VARIANTS]
    if unknown:
        raise ValueError(f"variants (--variants): unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if config.weights and not Path(config.weights).is_file():
        raise ValueError(f"--weights {config.weights}: no such file (a state dict saved with torch.save)")
    require(config.width > 0, "width", "--width", "be > 0", config.width)
    require(config.trials >= 1, "trials", "--trials", "be >= 1", config.trials)
    require(0 < config.sparsity < 1, "sparsity", "--sparsity", "lie strictly between 0 and 1", config.sparsity)
    require(config.rel >= 0, "rel", "--rel", "be >= 0", config.rel)
    require(config.precision in ("float64", "model"), "precision", "--precision", "be 'float64' or 'model'",
            config.precision)


def build_parser() -> ConfigParser[MaskStabilityConfig]:
    parser = ConfigParser("python -m benchmarks.studies.mask_stability", PRESETS, description=__doc__.split("\n\n")[0],
                          check=check, out_dir_help="also append the markdown rows to DIR/mask_stability.md "
                                                    "(like --out)")
    parser.add_shorthand("--variants", field="variants", nargs="+", choices=list(VARIANTS))
    parser.add_shorthand("--width", field="width", type=float, help="default 0.125")
    parser.add_shorthand("--weights", field="weights", help="state dict to load (default: random init)")
    parser.add_shorthand("--trials", field="trials", type=int, help="default 10")
    parser.add_shorthand("--rel", field="rel", type=float,
                         help="relative perturbation of every parameter (default 1e-7)")
    parser.add_shorthand("--sparsity", field="sparsity", type=float, help="default 0.5")
    parser.add_shorthand("--seed", field="seed", type=int, help="default 0")
    parser.add_shorthand("--data", field="data",
                         help="calibration images of cloud='activations' from this data set ('auto', an .npz path, "
                              "...; default: random tensors)")
    parser.add_shorthand("--environments", field="environments", action="store_true",
                         help="prune the same model under other thread counts and instruction sets (child "
                              "processes) instead of perturbing it")
    parser.add_shorthand("--precision", field="precision", choices=["float64", "model"],
                         help="calibration_precision of the activation variant (default float64)")
    parser.add_argument("--out", default=None, help="append the markdown rows to this file")
    parser.add_shorthand("--explain", field="explain", action="store_true",
                         help="log, for every layer mask that moved, how far its salience moved and where the GA "
                              "stopped")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, config = build_parser().parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = build_model(config.width, config.weights or None, config.seed)
    source = config.weights or "random-init"
    images = calibration(data=config.data) if config.data else None
    if config.data:
        source += f", {config.data} images"
    rows = ["| model / criterion | layer masks changed | channels swapped | seconds |", "| --- | --- | --- | --- |"]
    if config.environments:
        rows[0] = "| model / criterion | environment | layer masks changed | channels swapped | seconds |"
        rows[1] = "| --- | --- | --- | --- | --- |"
    for name in config.variants:
        options = dict(VARIANTS[name])
        if options.get("cloud") == "activations":
            options["calibration_precision"] = config.precision
            name = f"{name} ({config.precision})"
        if config.environments:
            for result in measure_environments(model, config.width, options, config.sparsity, images):
                rows.append(f"| VGG-16 width {config.width:g} ({source}), {name} | {result['environment']} | "
                            f"{result['changed']}/{result['layers']} | {result['swapped']} | {result['seconds']:.0f} |")
                logger.info(rows[-1])
            continue
        result = measure(model, options, config.sparsity, config.trials, config.rel, config.explain, images)
        rows.append(f"| VGG-16 width {config.width:g} ({source}), {name} | {result['changed']}/{result['layers']} "
                    f"| {result['swapped']} | {result['seconds']:.0f} |")
        logger.info(rows[-1])
    measured = "environments (child processes)" if config.environments else f"rel={config.rel:g}, trials={config.trials}"
    header = (f"{measured}, sparsity={config.sparsity:g}, torch {torch.__version__}, "
              f"{platform.machine()} {platform.processor() or ''}, threads={torch.get_num_threads()}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    text = "\n".join([header, "", *rows]) + "\n"
    logger.info("\n%s", text)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in (args.out, args.out_dir / "mask_stability.md" if args.out_dir is not None else None):
        if path:
            with Path(path).open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
