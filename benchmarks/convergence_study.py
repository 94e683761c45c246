"""Convergence study of the BMVC paper (section 4, Figure 10): epochs to a target training
accuracy per activation, and the Betti numbers of each class's cloud after every layer.

The paper's 9 x 25 MLP is trained on the nine-ring and nine-sphere datasets with ReLU,
LeakyReLU, tanh, sigmoid and the many-to-one activation (in every hidden layer, and only in
the three middle layers as in the paper's Figure 6) at several batch sizes and seeds, with
the same optimiser and learning rate everywhere. After every epoch the accuracy on the whole
training set is measured; "epochs to target" is the first epoch at which it reaches
``target_acc``. After training, the Betti numbers (b0, b1; Vietoris-Rips at a fraction of
each cloud's diameter, see ``nni_topo_pruner.topology.betti``) of a fixed subsample of each
class are computed at the input and after each hidden layer.

Usage::

    python -m benchmarks.convergence_study --preset smoke            # CI size, seconds
    python -m benchmarks.convergence_study --preset cpu               # about 30 min on 2 cores
    python -m benchmarks.convergence_study --preset cpu --seeds 0,1 --batch-sizes 128

Outputs (``--out-dir``, default ``benchmarks/results/convergence/<preset>``): ``results.json``
(config, command, versions, machine, one record per run), ``report.md`` (tables),
``curves_<dataset>.png`` (training accuracy per epoch), ``betti_<dataset>.png`` (b0 and b1
per layer). Records are written after every run; rerunning the same command resumes, and a
different configuration in the same directory is refused unless ``--fresh``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from nni_topo_pruner.synthetic import BmvcMLP, make_dataset
from nni_topo_pruner.topology.betti import betti_numbers

from .environment import git_state, machine_info, package_versions
from .store import atomic_write_json, atomic_write_text, load_json_or_none

_logger = logging.getLogger("benchmarks.convergence_study")
REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1

#: activation variants: name -> (hidden activation, hidden layers given the many-to-one activation)
VARIANTS: Dict[str, Tuple[str, Tuple[int, ...]]] = {
    "relu": ("relu", ()),
    "leaky_relu": ("leaky_relu", ()),
    "tanh": ("tanh", ()),
    "sigmoid": ("sigmoid", ()),
    "many_to_one": ("many_to_one", ()),
    "many_to_one_mid": ("relu", (3, 4, 5)),   # Figure 6: proposed activation in the middle layers
}


@dataclass
class StudyConfig:
    """Everything that determines the study's numbers (stored with the results)."""

    datasets: List[str] = field(default_factory=lambda: ["nine_rings", "nine_spheres"])
    activations: List[str] = field(default_factory=lambda: list(VARIANTS))
    batch_sizes: List[int] = field(default_factory=lambda: [128, 512, 2048])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    n_train: int = 16000
    n_test: int = 2000
    data_seed: int = 0
    lr: float = 1e-3
    max_epochs: int = 50
    target_acc: float = 0.98
    betti_points: int = 300          # per class
    betti_scale: float = 0.1         # fraction of each class cloud's diameter
    betti_seeds: int = 1             # Betti numbers for the first N seeds of each setting
    threads: int = 1


PRESETS: Dict[str, StudyConfig] = {
    "smoke": StudyConfig(datasets=["nine_rings"], activations=["relu", "many_to_one"], batch_sizes=[64],
                         seeds=[0], n_train=1000, n_test=200, max_epochs=3, target_acc=0.55,
                         betti_points=40, betti_scale=0.1),
    "cpu": StudyConfig(),
}


@dataclass
class RunResult:
    dataset: str
    activation: str
    batch_size: int
    seed: int
    train_acc: List[float]
    test_acc: List[float]
    epochs_to_target: Optional[int]
    wall_s: float
    betti: Optional[Dict[str, List[List[int]]]] = None   # class -> per layer [b0, b1]

    @property
    def key(self) -> str:
        return run_key(self.dataset, self.activation, self.batch_size, self.seed)


def run_key(dataset: str, activation: str, batch_size: int, seed: int) -> str:
    return f"{dataset}|{activation}|bs{batch_size}|seed{seed}"


# ------------------------------------------------------------------------ one training run

def train_one(data, activation: str, batch_size: int, seed: int, config: StudyConfig,
              with_betti: bool) -> RunResult:
    """Train one MLP until ``target_acc`` (whole training set) or ``max_epochs``."""
    act, proposed = VARIANTS[activation]
    torch.manual_seed(seed)
    net = BmvcMLP(act, proposed_layers=proposed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    shuffle = torch.Generator().manual_seed(seed)
    train_acc: List[float] = []
    test_acc: List[float] = []
    reached: Optional[int] = None
    start = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        train_acc.append(_accuracy(net, x_train, y_train))
        test_acc.append(_accuracy(net, x_test, y_test))
        if reached is None and train_acc[-1] >= config.target_acc:
            reached = epoch
            break
    wall = time.perf_counter() - start
    betti = class_betti_per_layer(net, data, config) if with_betti else None
    return RunResult(data.name, activation, batch_size, seed, train_acc, test_acc, reached, wall, betti)


@torch.no_grad()
def _accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net(x).argmax(1) == y).float().mean())


@torch.no_grad()
def class_betti_per_layer(net: BmvcMLP, data, config: StudyConfig) -> Dict[str, List[List[int]]]:
    """``{class: [[b0, b1] at the input, after hidden layer 1, ...]}`` on a fixed subsample."""
    out: Dict[str, List[List[int]]] = {}
    for label in (0, 1):
        cloud = torch.from_numpy(data.class_cloud(label, n=config.betti_points, seed=config.data_seed))
        per_layer = []
        for h in net.hidden(cloud):
            b = betti_numbers(h.double().numpy(), dims=(0, 1), scale=config.betti_scale, scale_reference="diameter")
            per_layer.append(list(b))
        out[str(label)] = per_layer
    return out


# ------------------------------------------------------------------------ the study

def run_study(config: StudyConfig, out_dir: Path, *, command: str, fresh: bool = False,
              progress: bool = True) -> dict:
    """Run every (dataset, activation, batch size, seed) not yet in ``out_dir/results.json``."""
    _validate(config)
    torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    results = None if fresh else load_json_or_none(path)
    config_dict = dataclasses.asdict(config)
    if results is not None and results.get("config") != config_dict:
        raise SystemExit(f"{path} holds results of a different configuration; rerun with --fresh to replace them "
                         f"or pick another --out-dir.\n stored: {results.get('config')}\n asked:  {config_dict}")
    if results is None:
        results = {"schema_version": SCHEMA_VERSION, "study": "bmvc-convergence", "config": config_dict,
                   "runs": {}}
    # every invocation (first run, resumes, report re-renders) is recorded; runs are never redone
    invocation = dict(command=command, versions=package_versions(), git=git_state(REPO_ROOT),
                      machine=machine_info(torch.device("cpu")), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      runs_before=len(results["runs"]))
    if "command" in results and "invocations" not in results:   # files written before invocations existed
        results["invocations"] = [{k: results.pop(k) for k in ("command", "versions", "git", "machine")}]
    results.setdefault("invocations", []).append(invocation)

    todo = [(d, a, b, s) for d in config.datasets for a in config.activations for b in config.batch_sizes
            for s in config.seeds if run_key(d, a, b, s) not in results["runs"]]
    _logger.info("%d runs to do, %d already in %s", len(todo), len(results["runs"]), path)
    cache: Dict[str, object] = {}
    for dataset, activation, batch_size, seed in tqdm(todo, desc="runs", disable=not progress):
        if dataset not in cache:
            cache[dataset] = make_dataset(dataset, config.n_train, config.n_test, seed=config.data_seed)
        with_betti = seed in config.seeds[: config.betti_seeds]
        result = train_one(cache[dataset], activation, batch_size, seed, config, with_betti)
        results["runs"][result.key] = dataclasses.asdict(result)
        atomic_write_json(results, path)
        write_reports(results, out_dir)
        _logger.info("%s: epochs to %.2f = %s (%.1f s)", result.key, config.target_acc,
                     result.epochs_to_target, result.wall_s)
    write_reports(results, out_dir)
    atomic_write_json(results, path)
    return results


def _validate(config: StudyConfig) -> None:
    unknown = [a for a in config.activations if a not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown activations {unknown}; known: {list(VARIANTS)}")
    if not config.seeds or not config.batch_sizes or not config.datasets:
        raise SystemExit("datasets, batch sizes and seeds must be non-empty")
    if not 0 < config.target_acc <= 1:
        raise SystemExit(f"target_acc must be in (0, 1], got {config.target_acc}")


# ------------------------------------------------------------------------ reports

def summarise(results: dict) -> List[dict]:
    """One row per (dataset, batch size, activation): epochs to target over seeds."""
    config = results["config"]
    rows = []
    for dataset in config["datasets"]:
        for bs in config["batch_sizes"]:
            for act in config["activations"]:
                runs = [results["runs"][k] for s in config["seeds"]
                        if (k := run_key(dataset, act, bs, s)) in results["runs"]]
                if not runs:
                    continue
                epochs = [r["epochs_to_target"] for r in runs]
                censored = [e if e is not None else config["max_epochs"] for e in epochs]
                rows.append(dict(
                    dataset=dataset, batch_size=bs, activation=act, n=len(runs),
                    reached=sum(e is not None for e in epochs),
                    epochs=epochs, mean_epochs=statistics.fmean(censored),
                    sd_epochs=statistics.stdev(censored) if len(censored) > 1 else 0.0,
                    final_train=statistics.fmean(r["train_acc"][-1] for r in runs),
                    final_test=statistics.fmean(r["test_acc"][-1] for r in runs),
                    wall_s=statistics.fmean(r["wall_s"] for r in runs)))
    return rows


def speedups(rows: List[dict], reference: str = "relu") -> List[dict]:
    """Epochs(reference) / epochs(activation) per dataset and batch size (censored at max_epochs)."""
    out = []
    ref = {(r["dataset"], r["batch_size"]): r for r in rows if r["activation"] == reference}
    for r in rows:
        base = ref.get((r["dataset"], r["batch_size"]))
        if base is None or r["activation"] == reference:
            continue
        out.append(dict(dataset=r["dataset"], batch_size=r["batch_size"], activation=r["activation"],
                        ratio=base["mean_epochs"] / r["mean_epochs"],
                        exact=base["reached"] == base["n"] and r["reached"] == r["n"]))
    return out


def betti_summary(results: dict) -> List[dict]:
    """Per run with Betti numbers: total hidden-layer Betti, peak b0, first 'simple' layer."""
    config = results["config"]
    rows = []
    for dataset in config["datasets"]:
        for bs in config["batch_sizes"]:
            for act in config["activations"]:
                for seed in config["seeds"]:
                    run = results["runs"].get(run_key(dataset, act, bs, seed))
                    if not run or not run.get("betti"):
                        continue
                    classes = list(run["betti"].values())
                    n = len(classes[0])
                    simple = [all(c[i][0] <= 2 and c[i][1] == 0 for c in classes) for i in range(n)]
                    simple_from = next((i for i in range(1, n) if all(simple[i:])), None)
                    rows.append(dict(dataset=dataset, batch_size=bs, activation=act, seed=seed,
                                     total=sum(b0 + b1 for c in classes for b0, b1 in c[1:]),
                                     peak_b0=max(c[i][0] for c in classes for i in range(1, n)),
                                     simple_from=simple_from))
    return rows


def render_markdown(results: dict) -> str:
    config = results["config"]
    rows = summarise(results)
    lines = ["# BMVC convergence study (nine rings / nine spheres, 9 x 25 MLP)", "",
             "Invocations (the first ran the runs; later ones resumed or re-rendered this report):", ""]
    for inv in results.get("invocations", []):
        lines += [f"- `{inv['command']}` ({inv.get('started', '?')}; {inv.get('runs_before', 0)} runs already done)  ",
                  f"  machine: {_machine_line(inv)}  ",
                  f"  commit {inv['git'].get('commit')} (dirty: {inv['git'].get('dirty')}); "
                  f"{', '.join(f'{k} {v}' for k, v in inv.get('versions', {}).items())}"]
    lines += ["",
             f"Adam, lr {config['lr']}, same for every activation and batch size; {config['n_train']} train / "
             f"{config['n_test']} test points; seeds {config['seeds']}; target: training accuracy (whole training "
             f"set, measured after each epoch) >= {config['target_acc']}; at most {config['max_epochs']} epochs.", "",
             "## Epochs to target", "",
             "Mean ± sd over seeds; runs that never reached the target count as max_epochs (a lower bound), "
             "shown as `>`.", "",
             "| dataset | batch | activation | reached | epochs per seed | mean ± sd | final train acc | final test acc | s/run |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        per_seed = ", ".join(str(e) if e is not None else f">{config['max_epochs']}" for e in r["epochs"])
        bound = "" if r["reached"] == r["n"] else ">="
        lines.append(f"| {r['dataset']} | {r['batch_size']} | {r['activation']} | {r['reached']}/{r['n']} | {per_seed} "
                     f"| {bound}{r['mean_epochs']:.1f} ± {r['sd_epochs']:.1f} | {r['final_train']:.4f} "
                     f"| {r['final_test']:.4f} | {r['wall_s']:.0f} |")
    sp = speedups(rows)
    if sp:
        lines += ["", "## Speed-up over ReLU (mean epochs of ReLU / mean epochs of the activation)", "",
                  "`~` marks ratios that involve runs which never reached the target (censored at max_epochs).", "",
                  "| dataset | batch | activation | ratio |", "| --- | ---: | --- | ---: |"]
        for s in sp:
            lines.append(f"| {s['dataset']} | {s['batch_size']} | {s['activation']} | "
                         f"{'' if s['exact'] else '~'}{s['ratio']:.2f} |")
    lines += ["", f"## Betti numbers per layer (b0/b1, Vietoris-Rips at {config['betti_scale']} x the class cloud's "
              f"diameter, {config['betti_points']} points per class, after training; first "
              f"{config['betti_seeds']} seed(s))", "",
              "Layer 0 is the input; layers 1-9 are the hidden layers' activation outputs.", ""]
    summary = betti_summary(results)
    if summary:
        lines += ["Summary per run: total = sum of b0 + b1 over the 9 hidden layers and both classes; "
                  "peak = largest b0 of any hidden layer; simple from = first layer from which every later layer "
                  "has b0 <= 2 and b1 = 0 for both classes (`-` if never).", "",
                  "| dataset | batch | activation | seed | total | peak b0 | simple from |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
        for row in summary:
            lines.append(f"| {row['dataset']} | {row['batch_size']} | {row['activation']} | {row['seed']} | "
                         f"{row['total']} | {row['peak_b0']} | {row['simple_from'] if row['simple_from'] is not None else '-'} |")
        lines += ["", "Per layer:", ""]
    n_layers = None
    for key, run in results["runs"].items():
        if run.get("betti"):
            n_layers = len(run["betti"]["0"])
            break
    if n_layers:
        head = " | ".join(f"L{i}" for i in range(n_layers))
        lines += [f"| dataset | batch | activation | seed | class | {head} |",
                  "| --- | ---: | --- | ---: | ---: |" + " ---: |" * n_layers]
        for dataset in config["datasets"]:
            for bs in config["batch_sizes"]:
                for act in config["activations"]:
                    for seed in config["seeds"]:
                        run = results["runs"].get(run_key(dataset, act, bs, seed))
                        if not run or not run.get("betti"):
                            continue
                        for label, per_layer in run["betti"].items():
                            cells = " | ".join(f"{b0}/{b1}" for b0, b1 in per_layer)
                            lines.append(f"| {dataset} | {bs} | {act} | {seed} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


def _machine_line(invocation: dict) -> str:
    m = invocation.get("machine", {})
    return (f"{m.get('platform')}, {m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}, "
            f"device {m.get('device')}")


def write_reports(results: dict, out_dir: Path) -> None:
    atomic_write_text(render_markdown(results), out_dir / "report.md")
    _plot_curves(results, out_dir)
    _plot_betti(results, out_dir)


def _plot_curves(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    for dataset in config["datasets"]:
        fig, axes = plt.subplots(1, len(config["batch_sizes"]), figsize=(5.5 * len(config["batch_sizes"]), 4),
                                 squeeze=False)
        drawn = False
        for ax, bs in zip(axes[0], config["batch_sizes"]):
            for act in config["activations"]:
                curves = [results["runs"][k]["train_acc"] for s in config["seeds"]
                          if (k := run_key(dataset, act, bs, s)) in results["runs"]]
                if not curves:
                    continue
                drawn = True
                # runs stop at the target: pad with their last value to average over seeds
                width = max(map(len, curves))
                padded = np.array([c + [c[-1]] * (width - len(c)) for c in curves])
                epochs = np.arange(1, width + 1)
                line, = ax.plot(epochs, padded.mean(0), label=act, lw=2 if "many" in act else 1.2)
                if len(curves) > 1:
                    ax.fill_between(epochs, padded.min(0), padded.max(0), color=line.get_color(), alpha=0.12)
            ax.axhline(config["target_acc"], color="0.5", ls=":", lw=1)
            ax.set(title=f"{dataset}, batch {bs}", xlabel="epoch", ylabel="training accuracy", ylim=(0.45, 1.0))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if drawn:
            fig.tight_layout()
            fig.savefig(out_dir / f"curves_{dataset}.png", dpi=100)
        plt.close(fig)


def _plot_betti(results: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    for dataset in config["datasets"]:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
        drawn = False
        for act in config["activations"]:
            for bs in config["batch_sizes"]:
                run = results["runs"].get(run_key(dataset, act, bs, config["seeds"][0]))
                if not run or not run.get("betti"):
                    continue
                drawn = True
                for col, label in enumerate(("0", "1")):
                    per_layer = np.array(run["betti"][label])
                    for row in (0, 1):
                        axes[row][col].plot(per_layer[:, row], marker="o", ms=3,
                                            label=f"{act} bs{bs}", lw=2 if "many" in act else 1)
        for row in (0, 1):
            for col in (0, 1):
                axes[row][col].set(title=f"{dataset}: class {col}, b{row}", xlabel="layer (0 = input)",
                                   ylabel=f"b{row}", yscale="symlog")
        if drawn:
            axes[0][0].legend(fontsize=6, ncol=2)
            fig.tight_layout()
            fig.savefig(out_dir / f"betti_{dataset}.png", dpi=100)
        plt.close(fig)


# ------------------------------------------------------------------------ command line

def _int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _str_list(text: str) -> List[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convergence_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: benchmarks/results/convergence/<preset>")
    parser.add_argument("--datasets", type=_str_list, help="comma-separated: nine_rings,nine_spheres")
    parser.add_argument("--activations", type=_str_list, help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--batch-sizes", type=_int_list)
    parser.add_argument("--seeds", type=_int_list)
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--target-acc", type=float)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-test", type=int)
    parser.add_argument("--betti-points", type=int, help="points per class for the Betti numbers")
    parser.add_argument("--betti-scale", type=float, help="Rips scale as a fraction of the cloud's diameter")
    parser.add_argument("--betti-seeds", type=int, help="compute Betti numbers for the first N seeds")
    parser.add_argument("--threads", type=int, help="torch threads (default 1)")
    parser.add_argument("--fresh", action="store_true", help="discard results already in --out-dir")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    config = dataclasses.replace(PRESETS[args.preset])
    for name in ("datasets", "activations", "batch_sizes", "seeds", "max_epochs", "target_acc", "lr", "n_train",
                 "n_test", "betti_points", "betti_scale", "betti_seeds", "threads"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    out_dir = args.out_dir or REPO_ROOT / "benchmarks" / "results" / "convergence" / args.preset
    command = "python -m benchmarks.convergence_study " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = run_study(config, out_dir, command=command, fresh=args.fresh, progress=not args.no_progress)
    print(f"{len(results['runs'])} runs in {out_dir / 'results.json'}; report: {out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
