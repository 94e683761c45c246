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

    python -m benchmarks.bmvc.convergence_study --preset smoke            # CI size, seconds
    python -m benchmarks.bmvc.convergence_study --preset cpu               # about 30 min on 2 cores
    python -m benchmarks.bmvc.convergence_study --preset cpu --seeds 0,1 --batch-sizes 128

Outputs (``--out-dir``, default ``benchmarks/results/convergence/<preset>``): ``results.json``
(config, command, versions, machine, one record per run), ``report.md`` (tables),
``curves_<dataset>.png`` (training accuracy per epoch), ``betti_<dataset>.png`` (b0 and b1
per layer). Records are written after every run; rerunning the same command resumes, and a
different configuration in the same directory is refused unless ``--fresh`` (the command line,
resuming and outputs come from :mod:`benchmarks.core.framework`; ``--set KEY=VALUE`` sets any field of
:class:`StudyConfig`).

Training is :func:`benchmarks.core.training.fit` with Adam at a constant learning rate, stopped after
the first epoch whose training accuracy reaches the target. Results of schema 1 (before the
framework) came from a loop of this module's own: the same optimiser, loss, batches, stopping
rule and initial weights, but one shuffling generator for the whole run where ``fit`` draws each
epoch's order from ``(seed, epoch)``; the batch orders differ, so numbers agree in distribution,
not digit for digit, and such runs are redone (``record_version`` 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nni_topo_pruner.bmvc.synthetic import BmvcMLP, make_dataset
from nni_topo_pruner.topology.betti import betti_numbers

from ..core.data import REPO_ROOT
from ..core.framework import Experiment, ExperimentUsageError, PlannedRecord, main as run_main
from ..core.training import evaluate, fit

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
    """Train one MLP until ``target_acc`` (whole training set, after an epoch) or ``max_epochs``."""
    act, proposed = VARIANTS[activation]
    torch.manual_seed(seed)  # the initial weights
    net = BmvcMLP(act, proposed_layers=proposed)
    train_set = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    train_eval, test_loader = _whole_set(data.x_train, data.y_train), _whole_set(data.x_test, data.y_test)
    cpu = torch.device("cpu")
    train_acc: List[float] = []

    def reached_target(row: Dict[str, Any]) -> bool:
        # fit's train_acc is the running accuracy during the epoch; the study's is after it
        train_acc.append(evaluate(net, train_eval, cpu))
        return train_acc[-1] >= config.target_acc

    start = time.perf_counter()
    history = fit(net, train_set, test_loader, epochs=config.max_epochs, lr=config.lr, batch_size=batch_size,
                  seed=seed, device=cpu, optimizer="adam", schedule="constant", progress=False,
                  desc=f"{data.name} {activation} bs{batch_size} seed{seed}", on_epoch=reached_target)
    wall = time.perf_counter() - start
    reached = len(train_acc) if train_acc and train_acc[-1] >= config.target_acc else None
    betti = class_betti_per_layer(net, data, config) if with_betti else None
    return RunResult(data.name, activation, batch_size, seed, train_acc, [row["test_acc"] for row in history],
                     reached, wall, betti)


def _whole_set(x: np.ndarray, y: np.ndarray) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The whole split as one batch, for :func:`benchmarks.core.training.evaluate` (a DataLoader would
    fetch it item by item, which costs more than an epoch of training here)."""
    return [(torch.from_numpy(x), torch.from_numpy(y))]


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

class ConvergenceStudy(Experiment):
    """One record per (dataset, activation, batch size, seed)."""

    module = "benchmarks.bmvc.convergence_study"
    presets = PRESETS
    records_field = "runs"
    record_version = 2  # 2: trained by benchmarks.core.training.fit (see the module docstring)
    preset_help = "smoke: CI size, seconds; cpu: the paper's study, about 30 min on 2 cores"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
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

    def default_out_dir(self, preset: str) -> Path:
        return REPO_ROOT / "benchmarks" / "results" / "convergence" / preset

    def configure(self, config: StudyConfig, args: argparse.Namespace) -> StudyConfig:
        config = config_from_args(args, config)
        _validate(config)
        return config

    def setup(self, progress: bool) -> Dict[str, Any]:
        torch.set_num_threads(self.config.threads)
        self.datasets: Dict[str, Any] = {}
        return {"study": "bmvc-convergence"}

    def plan(self) -> List[PlannedRecord]:
        config = self.config
        betti_seeds = config.seeds[: config.betti_seeds]
        # the whole config: a run's numbers depend on n_train, lr, target ... and the threads
        return [(run_key(d, a, b, s), {"config": dataclasses.asdict(config), "dataset": d, "activation": a,
                                       "batch_size": b, "seed": s, "with_betti": s in betti_seeds})
                for d in config.datasets for a in config.activations for b in config.batch_sizes
                for s in config.seeds]

    def run_record(self, key: str, inputs: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        name = inputs["dataset"]
        if name not in self.datasets:
            self.datasets[name] = make_dataset(name, self.config.n_train, self.config.n_test,
                                               seed=self.config.data_seed)
        result = train_one(self.datasets[name], inputs["activation"], inputs["batch_size"], inputs["seed"],
                           self.config, inputs["with_betti"])
        return dataclasses.asdict(result)

    def render(self, results: Dict[str, Any]) -> str:
        return render_markdown(results)

    def write_extras(self, results: Dict[str, Any], out_dir: Path) -> None:
        _plot_curves(results, out_dir)
        _plot_betti(results, out_dir)

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        return (f"{key}: epochs to {self.config.target_acc:.2f} = {record['epochs_to_target']} "
                f"({record['wall_s']:.1f} s)")


def _validate(config: StudyConfig) -> None:
    unknown = [a for a in config.activations if a not in VARIANTS]
    if unknown:
        raise ExperimentUsageError(f"unknown activations {unknown} (--activations); known: {list(VARIANTS)}")
    if not config.seeds or not config.batch_sizes or not config.datasets:
        raise ExperimentUsageError("--datasets, --batch-sizes and --seeds must each name at least one value")
    if not 0 < config.target_acc <= 1:
        raise ExperimentUsageError(f"--target-acc must be in (0, 1], got {config.target_acc}")


# ------------------------------------------------------------------------ reports

def _betti_runs(results: dict) -> Iterator[Tuple[str, int, str, int, dict]]:
    """``(dataset, batch size, activation, seed, run)`` of every run with Betti numbers, in table order."""
    config = results["config"]
    for dataset in config["datasets"]:
        for bs in config["batch_sizes"]:
            for act in config["activations"]:
                for seed in config["seeds"]:
                    run = results["runs"].get(run_key(dataset, act, bs, seed))
                    if run and run.get("betti"):
                        yield dataset, bs, act, seed, run


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
    rows = []
    for dataset, bs, act, seed, run in _betti_runs(results):
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
        for dataset, bs, act, seed, run in _betti_runs(results):
            for label, per_layer in run["betti"].items():
                cells = " | ".join(f"{b0}/{b1}" for b0, b1 in per_layer)
                lines.append(f"| {dataset} | {bs} | {act} | {seed} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


def _machine_line(invocation: dict) -> str:
    m = invocation.get("machine", {})
    return (f"{m.get('platform')}, {m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}, "
            f"device {m.get('device')}")


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


def config_from_args(args: argparse.Namespace, config: StudyConfig) -> StudyConfig:
    """``config`` (the preset with ``--set`` applied) with the dedicated flags given on the command line."""
    config = dataclasses.replace(config)
    for name in ("datasets", "activations", "batch_sizes", "seeds", "max_epochs", "target_acc", "lr", "n_train",
                 "n_test", "betti_points", "betti_scale", "betti_seeds", "threads"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line (see the module docstring)."""
    return run_main(ConvergenceStudy, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
