"""PNG plots of a benchmark: accuracy recovery per fine-tuning epoch, and accuracy vs FLOPs.

Both draw the mean over seeds with the seed spread (± one sample std) around it.

Example (needs a trained baseline, so not a doctest)::

    plot_recovery(summary, baseline_acc=0.78, tolerance=0.01, path=Path("recovery.png"))
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List

from ..core.store import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt



def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(buffer.getvalue(), path)


def _colours(pruners: List[str]) -> Dict[str, Any]:
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {pruner: ("0.35" if pruner == "random" else cycle[index % len(cycle)])
            for index, pruner in enumerate(pruners)}


def plot_recovery(summary: List[Dict[str, Any]], baseline_acc: float, tolerance: float, path: Path) -> None:
    """Test accuracy vs fine-tuning epoch (0 = right after pruning), one panel per sparsity."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    sparsities = sorted({group["sparsity"] for group in summary})
    pruners = list(dict.fromkeys(group["pruner"] for group in summary))
    colours = _colours(pruners)
    figure, axes = plt.subplots(1, len(sparsities), figsize=(5.5 * len(sparsities), 4.2), squeeze=False)
    for axis, sparsity in zip(axes[0], sparsities):
        for group in (g for g in summary if g["sparsity"] == sparsity):
            epochs = list(range(len(group["curve"])))
            mean = [100 * point["mean"] for point in group["curve"]]
            spread = [100 * (point["std"] or 0.0) for point in group["curve"]]
            style = "--" if group["pruner"] == "random" else "-"
            axis.plot(epochs, mean, style, marker="o", markersize=3, color=colours[group["pruner"]],
                      label=f"{group['pruner']} (n={group['n']})")
            axis.fill_between(epochs, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                              color=colours[group["pruner"]], alpha=0.15, linewidth=0)
        axis.axhline(100 * baseline_acc, color="black", linewidth=1, label="unpruned")
        axis.axhline(100 * (baseline_acc - tolerance), color="black", linewidth=0.8, linestyle=":",
                     label=f"unpruned - {100 * tolerance:g} pt")
        axis.set_title(f"sparse ratio {sparsity:g}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("fine-tuning epoch (0 = right after pruning)")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle("Accuracy recovery during fine-tuning (mean ± std over seeds)")
    _save(figure, path)
    plt.close(figure)


def plot_accuracy_vs_flops(summary: List[Dict[str, Any]], baseline: Dict[str, Any], path: Path) -> None:
    """Accuracy after the fine-tuning budget (filled) and right after pruning (hollow) vs FLOPs.

    Pruners at one sparsity share their FLOPs; they are shifted apart by about 1% of the
    unpruned FLOPs on the x axis so that their error bars stay legible.
    """
    plt = _pyplot()
    pruners = list(dict.fromkeys(group["pruner"] for group in summary))
    colours = _colours(pruners)
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for index, pruner in enumerate(pruners):
        groups = sorted((g for g in summary if g["pruner"] == pruner), key=lambda g: g["flops"]["mean"])
        shift = 0.012 * baseline["flops"] / 1e6 * (index - (len(pruners) - 1) / 2)
        flops = [g["flops"]["mean"] / 1e6 + shift for g in groups]
        for key, filled in (("recoverability", True), ("acc_after_pruning", False)):
            axis.errorbar(flops, [100 * g[key]["mean"] for g in groups],
                          yerr=[100 * (g[key]["std"] or 0.0) for g in groups], fmt="o-" if filled else "o:",
                          color=colours[pruner], markerfacecolor=colours[pruner] if filled else "white",
                          capsize=3, label=pruner if filled else None)
    axis.scatter([baseline["flops"] / 1e6], [100 * baseline["test_acc"]], marker="*", s=160, color="black",
                 label="unpruned", zorder=5)
    axis.set_xlim(left=0)
    axis.set_xlabel("FLOPs per image (M, thop MACs)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Accuracy vs FLOPs: filled = after fine-tuning, hollow = right after pruning", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)
