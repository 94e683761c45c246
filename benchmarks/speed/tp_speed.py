"""Pruning-step time of ``TopologicalImportance`` against Torch-Pruning's own ``FPGMImportance``
(the distance-based anchor) and ``MagnitudeImportance``, measured side by side in one run
(machines here are noisy: read the ratios).

    python -m benchmarks.speed.tp_speed                                  # every case, results to stdout
    python -m benchmarks.speed.tp_speed --out-dir benchmarks/results/tp_speed   # + results.json and README.md
    python -m benchmarks.speed.tp_speed --cases resnet18 mlp --profile   # + where the topological time goes
    python -m benchmarks.speed.tp_speed --regularize --out-dir benchmarks/results/tp_speed   # sparse training's cost

Each case builds the model from ``torch.manual_seed(0)`` (random initialisation: no weights are
downloaded), then for each importance a fresh copy is pruned by ``tp.pruner.BasePruner`` at
``pruning_ratio=0.5`` (with the case's ``iterative_steps``); the timed part is the pruning steps
(``step()`` calls, which include Torch-Pruning's own work on the groups), and separately the time
spent inside the importance (``estimate_importance``), each as wall-clock and as this process's
CPU time. The ratios use CPU time: on a shared machine (these have 2 cores, often busy with a
training run) wall-clock time measures the neighbours, while CPU time measures the work; run
with ``--threads 1`` so that both importances do it on one thread (it limits torch's threads,
which Torch-Pruning's FPGM uses, and NumPy's BLAS, which ours uses). The compiled kernels of the
topology are loaded (compiled, on a machine's first run) before any timing; the header says how
long that took. Importances run interleaved per repeat. Exit status 2 on a bad
option or an ``--out-dir`` it cannot write (``--out`` is the same flag's older name).
"""
from __future__ import annotations

import copy
import cProfile
import io
import json
import logging
import platform
import pstats
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torchvision

from nni_topo_pruner.topology.kernels import warm_up
from nni_topo_pruner.torch_pruning import TopologicalImportance, import_torch_pruning

from ..core.cli import ConfigParser, require
from ..core.environment import describe_threads, limit_threads, package_versions
from ..core.store import UnwritablePathError, writable_directory

logger = logging.getLogger(__name__)

Case = Tuple[Callable[[], torch.nn.Module], Tuple[int, ...], int, Callable[[torch.nn.Module], List[torch.nn.Module]]]


class MLP(torch.nn.Module):
    """1024 -> 4096 -> 1024 -> 10, the issue's iterative case."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = torch.nn.Linear(1024, 4096), torch.nn.Linear(4096, 1024), torch.nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _vision(name: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, **kwargs)


#: name -> (model builder, example input shape, iterative steps, ignored layers)
CASES: Dict[str, Case] = {
    # conv_proj writes the residual stream, whose width torchvision's ViT fixes: the MLP groups are pruned
    "vit_b_16": (_vision("vit_b_16", image_size=32), (1, 3, 32, 32), 1, lambda m: [m.heads, m.conv_proj]),
    "mlp": (MLP, (1, 1024), 5, lambda m: [m.head]),
    "convnext_tiny": (_vision("convnext_tiny"), (1, 3, 64, 64), 2, lambda m: [m.classifier[-1]]),
    "resnet18": (_vision("resnet18"), (1, 3, 64, 64), 1, lambda m: [m.fc]),
    "resnet50": (_vision("resnet50"), (1, 3, 224, 224), 1, lambda m: [m.fc]),
    "convnext_base": (_vision("convnext_base"), (1, 3, 224, 224), 5, lambda m: [m.classifier[-1]]),
}

IMPORTANCES = ("topological", "fpgm", "magnitude")


def build_importance(name: str) -> Any:
    tp = import_torch_pruning()
    if name == "topological":
        return TopologicalImportance(seed=0)
    if name == "fpgm":
        return tp.importance.FPGMImportance()
    return tp.importance.MagnitudeImportance(p=2)


def time_case(model: torch.nn.Module, example: torch.Tensor, steps: int, ignored: List[torch.nn.Module],
              importance_name: str, profile: Optional[cProfile.Profile] = None) -> Dict[str, float]:
    """Prune ``model`` (changed in place) at ratio 0.5 in ``steps`` steps; seconds of the steps, of the
    importance calls within them, and of building the dependency graph."""
    tp = import_torch_pruning()
    importance = build_importance(importance_name)
    started = time.perf_counter()
    pruner = tp.pruner.BasePruner(model, example, importance=importance, pruning_ratio=0.5,
                                  iterative_steps=steps, ignored_layers=ignored)
    graph_s = time.perf_counter() - started
    inside = [0.0, 0.0]
    estimate = pruner.estimate_importance

    def timed_estimate(group: Any) -> Any:
        begun, begun_cpu = time.perf_counter(), time.process_time()
        try:
            return estimate(group)
        finally:
            inside[0] += time.perf_counter() - begun
            inside[1] += time.process_time() - begun_cpu

    pruner.estimate_importance = timed_estimate  # the importance still finds the pruner on the stack
    if profile is not None:
        profile.enable()
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        pruner.step()
    steps_s, steps_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    if profile is not None:
        profile.disable()
    params = sum(p.numel() for p in model.parameters())
    on_bound = None
    if importance_name == "topological":
        choices = list(importance.choices.values())
        on_bound = sum(1 for c in choices if c.initial_distance == c.final_distance)
    return {"steps_s": steps_s, "importance_s": inside[0], "steps_cpu_s": steps_cpu_s, "importance_cpu_s": inside[1],
            "graph_s": graph_s, "params_after": params,
            "groups_on_start": on_bound}


def run(cases: List[str], repeats: int, profile: bool) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    profiles: Dict[str, str] = {}
    for name in cases:
        build, shape, steps, ignored_of = CASES[name]
        torch.manual_seed(0)
        base = build().eval()
        example = torch.rand(shape)
        timings: Dict[str, List[Dict[str, float]]] = {imp: [] for imp in IMPORTANCES}
        prof = cProfile.Profile() if profile else None
        if prof is not None:  # a run of its own: cProfile's overhead must not enter the timings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = copy.deepcopy(base)
                time_case(model, example, steps, ignored_of(model), "topological", prof)
        for repeat in range(repeats):
            for imp in IMPORTANCES:
                model = copy.deepcopy(base)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    timings[imp].append(time_case(model, example, steps, ignored_of(model), imp))
                last = timings[imp][-1]
                logger.info("%s / %s: steps %.2f s CPU (%.2f s wall), in the importance %.2f s CPU", name, imp,
                            last["steps_cpu_s"], last["steps_s"], last["importance_cpu_s"])
        median = {imp: sorted(t, key=lambda r: r["steps_cpu_s"])[len(t) // 2] for imp, t in timings.items()}
        row = {"case": name, "input": "x".join(map(str, shape[1:])), "steps": steps, "repeats": repeats,
               "timings": timings, "median": median,
               "ratio_steps_topological_to_fpgm": median["topological"]["steps_cpu_s"] / median["fpgm"]["steps_cpu_s"],
               "ratio_importance_topological_to_fpgm":
                   median["topological"]["importance_cpu_s"] / max(median["fpgm"]["importance_cpu_s"], 1e-9)}
        rows.append(row)
        print(markdown_row(row), flush=True)
        if prof is not None:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
            profiles[name] = out.getvalue()
    return {"rows": rows, "profiles": profiles}


def regularize_cost(calls: int = 10) -> str:
    """Markdown table: CPU seconds of one ``GroupNormPruner.regularize()`` call on resnet18 (64 px),
    which asks the importance for every group (sparse training does it on every batch)."""
    tp = import_torch_pruning()
    rows = ["| importance | CPU s per regularize() call (mean of %d) |" % calls, "| --- | ---: |"]
    for label, make in (("TopologicalImportance", lambda: TopologicalImportance(seed=0)),
                        ("TopologicalImportance(regularize_every=10)",
                         lambda: TopologicalImportance(seed=0, regularize_every=10)),
                        ("TP FPGMImportance", tp.importance.FPGMImportance),
                        ("TP GroupMagnitudeImportance", tp.importance.GroupMagnitudeImportance)):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
        pruner = tp.pruner.GroupNormPruner(model, torch.rand(1, 3, 64, 64), importance=make(), pruning_ratio=0.5,
                                           ignored_layers=[model.fc])
        model(torch.rand(2, 3, 64, 64)).sum().backward()
        started = time.process_time()
        for _ in range(calls):
            pruner.regularize(model)
        rows.append(f"| {label} | {(time.process_time() - started) / calls:.3f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


HEADER = ("| case | input | steps | TopologicalImportance: steps (in the importance), CPU s "
          "| TP FPGMImportance: steps (in the importance), CPU s | ratio: steps (importance) "
          "| TP Magnitude: steps, CPU s | wall s: topological / FPGM |\n"
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")


def markdown_row(row: Dict[str, Any]) -> str:
    m = row["median"]
    topo, fpgm = m["topological"], m["fpgm"]
    return (f"| {row['case']} | {row['input']} | {row['steps']} | {topo['steps_cpu_s']:.2f} "
            f"({topo['importance_cpu_s']:.2f}) | {fpgm['steps_cpu_s']:.2f} ({fpgm['importance_cpu_s']:.2f}) | "
            f"{row['ratio_steps_topological_to_fpgm']:.2f}x ({row['ratio_importance_topological_to_fpgm']:.2f}x) | "
            f"{m['magnitude']['steps_cpu_s']:.2f} | {topo['steps_s']:.1f} / {fpgm['steps_s']:.1f} |")


@dataclass
class TpSpeedConfig:
    """What ``--preset`` / ``--set`` choose (the flags below set the same fields)."""

    cases: List[str] = field(default_factory=lambda: list(CASES))
    repeats: int = 1  # timed repeats per importance (median reported)
    threads: int = 0  # torch's and NumPy's BLAS threads (0 = their defaults)
    profile: bool = False  # profile the topological importance in an extra, untimed run
    regularize: bool = False  # instead: the cost of one GroupNormPruner.regularize() call (resnet18)


PRESETS = {"default": TpSpeedConfig()}


def check(config: TpSpeedConfig) -> None:
    unknown = [c for c in config.cases if c not in CASES]
    if unknown:
        raise ValueError(f"--cases: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    require(config.repeats >= 1, "repeats", "--repeats", "be >= 1", config.repeats)
    require(config.threads >= 0, "threads", "--threads", "be >= 0 (0 = torch's default)", config.threads)


def build_parser() -> ConfigParser[TpSpeedConfig]:
    parser = ConfigParser("python -m benchmarks.speed.tp_speed", PRESETS, description=__doc__, check=check,
                          out_dir_help="folder for results.json and README.md", out_aliases=["--out"])
    parser.add_shorthand("--cases", field="cases", nargs="+", metavar="CASE",
                         help=f"cases to run (default: all): {', '.join(CASES)}")
    parser.add_shorthand("--repeats", field="repeats", type=int, help="timed repeats per importance (median reported)")
    parser.add_shorthand("--threads", field="threads", type=int, help="threads of torch and of NumPy's BLAS (0 = their defaults)")
    parser.add_shorthand("--profile", field="profile", action="store_true",
                         help="profile the topological importance (cProfile) in an extra, untimed run; "
                              "printed and saved with --out-dir")
    parser.add_shorthand("--regularize", field="regularize", action="store_true",
                         help="instead: the cost of one GroupNormPruner.regularize() call (resnet18), to "
                              "OUT_DIR/regularize.md")
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = build_parser()
    args, config = parser.parse_config(argv)
    out = args.out_dir
    if out is not None:
        try:
            writable_directory(out, "--out-dir")
        except UnwritablePathError as error:
            parser.usage_error(str(error))
    if config.threads:
        limit_threads(config.threads)  # torch's pool and NumPy's BLAS: both importances on the same count
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nni_topo_pruner").setLevel(logging.WARNING)
    command = " ".join(["python -m benchmarks.speed.tp_speed", *(sys.argv[1:] if argv is None else argv)])
    jit_s = warm_up()  # the compiled kernels' one-time load (or first compilation) stays off the clock
    machine = (f"{platform.machine()} {platform.processor() or ''} {describe_threads()}; compiled kernels loaded "
               f"in {jit_s:.1f} s before timing (once per process)").strip()
    if config.regularize:
        print(f"{command}\n{machine}\n", flush=True)
        table = regularize_cost()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "regularize.md").write_text(
                f"# Sparse training: one GroupNormPruner.regularize() call on resnet18 (64 px)\n\n"
                f"Command: `{command}`  \nMachine: {machine}\n\n{table}\n")
        return {"command": command, "regularize": table}
    print(f"{command}\n{machine}\n\n{HEADER}", flush=True)
    result = {"command": command, "machine": machine, "kernels_loaded_s": jit_s, "packages": package_versions(),
              **run(config.cases, config.repeats, config.profile)}
    for name, text in result["profiles"].items():
        print(f"\nprofile of TopologicalImportance, {name} (top 15 by own time):\n{text}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1))
        lines = [f"# Torch-Pruning pruning-step time: TopologicalImportance vs FPGMImportance and Magnitude\n",
                 f"Command: `{command}`  \nMachine: {machine}\n", HEADER,
                 *(markdown_row(r) for r in result["rows"])]
        for name, text in result["profiles"].items():
            lines.append(f"\n## Profile of TopologicalImportance, {name} (top 15 by own time)\n\n```\n{text}```")
        (out / "README.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
