"""Inspectable results of a TopologicalPruner run: a per-unit report (JSON) and persistence
diagram plots of a layer before and after pruning (PNG).

Example
-------
>>> # after ``pruner.compress()``:
>>> # pruner.report.to_json('report.json')
>>> # plot_persistence_diagrams(pruner.report, 'features.0', 'features0.png')
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .fileio import atomic_write

REPORT_SCHEMA_VERSION = 1


@dataclass
class UnitReport:
    """What the pruner did to one pruning unit (a layer, a dependency group, or a block)."""

    name: str
    members: List[str]                  # "module.target" names sharing this mask
    neurons: int
    kept: int
    kept_channels: List[int]            # output-channel indices kept (layer numbering)
    salience: List[float]               # per channel of the unit, bigger = more important
    ga_history: List[float]             # best fitness per generation (index 0 = initial population)
    initial_distance: float             # salience-seeded subset's distance to the layer's diagram
    final_distance: float               # the chosen subset's distance (after the GA and its polish)
    evaluations: int
    seconds_analyse: float
    seconds_ga: float
    diagram_before: Dict[str, List[List[float]]] = field(default_factory=dict)   # dim -> (birth, death) pairs
    salience_tied: bool = False         # every channel had the same salience (the criterion did not rank them)
    diagram_after: Dict[str, List[List[float]]] = field(default_factory=dict)
    # the GA's convergence (None in reports written before these fields existed)
    ga_distance: Optional[float] = None   # the GA's own best distance, before the local-search polish
    lower_bound: Optional[float] = None   # proven: no subset of this size can be closer
    polish_swaps: int = 0                 # improving swaps the polish made after the GA
    converged: Optional[bool] = None      # at the bound, or no single swap improves (False: a cap stopped it)


@dataclass
class PruningReport:
    """All units of one ``compress()`` plus the options that produced them."""

    options: Dict[str, Any]
    units: List[UnitReport] = field(default_factory=list)
    schema_version: int = REPORT_SCHEMA_VERSION

    def unit(self, name: str) -> UnitReport:
        """The unit named ``name``, or the unit that contains module ``name``."""
        for unit in self.units:
            if unit.name == name or any(m.rsplit(".", 1)[0] == name for m in unit.members):
                return unit
        raise KeyError(f"no pruning unit or layer named {name!r}; units: {[u.name for u in self.units]}")

    def to_dict(self) -> Dict[str, Any]:
        return {"schema_version": self.schema_version, "options": self.options,
                "units": [asdict(u) for u in self.units]}

    def to_json(self, path: Union[str, Path]) -> None:
        """Write the report atomically as JSON (nothing is left behind if serialisation fails)."""
        with atomic_write(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1, default=_json_default)

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "PruningReport":
        raw = json.loads(Path(path).read_text())
        if raw.get("schema_version") != REPORT_SCHEMA_VERSION:
            raise ValueError(f"{path}: report schema version {raw.get('schema_version')!r}, "
                             f"this version reads {REPORT_SCHEMA_VERSION}")
        return cls(options=raw["options"], units=[UnitReport(**u) for u in raw["units"]])

    def summary(self) -> str:
        """A plain-text table: one line per unit (distances of the salience-seeded start, the
        GA's best, the final answer after the polish, the proven lower bound; the polish's
        swaps, marked ``+`` where a cap stopped it before it converged)."""
        lines = [f"{'unit':40s} {'kept':>11s} {'initial':>9s} {'GA':>9s} {'final':>9s} {'bound':>9s} {'swaps':>5s} "
                 f"{'evals':>6s} {'sec':>6s}"]
        for u in self.units:
            ga = u.final_distance if u.ga_distance is None else u.ga_distance
            bound = float("nan") if u.lower_bound is None else u.lower_bound
            lines.append(f"{u.name[:40]:40s} {u.kept:>5d}/{u.neurons:<5d} {u.initial_distance:9.4f} {ga:9.4f} "
                         f"{u.final_distance:9.4f} {bound:9.4f} {u.polish_swaps:5d}{'' if u.converged is not False else '+'} "
                         f"{u.evaluations:6d} {u.seconds_analyse + u.seconds_ga:6.2f}")
        return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def diagrams_to_lists(diagrams: Dict[int, np.ndarray]) -> Dict[str, List[List[float]]]:
    return {str(dim): np.asarray(pairs, dtype=float).reshape(-1, 2).tolist() for dim, pairs in diagrams.items()}


def plot_persistence_diagrams(report: Union[PruningReport, Any], layer: str, path: Union[str, Path],
                              title: Optional[str] = None) -> Path:
    """Plot a layer's persistence diagram before and after pruning side by side, as a PNG.

    ``report`` is a :class:`PruningReport` or a pruner that has one (``pruner.report``).
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    source = report
    report = getattr(report, "report", report)
    if report is None:
        raise ValueError("no report: call pruner.compress() first")
    if not isinstance(report, PruningReport):
        raise TypeError(f"plot_persistence_diagrams needs a TopologicalPruner (or its PruningReport, pruner.report), "
                        f"got {type(source).__name__}: only the TopologicalPruner records persistence diagrams; "
                        f"prune with nni_topo_pruner.TopologicalPruner to plot them")
    unit = report.unit(layer)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    top = 0.0
    for ax, diagram, label in ((axes[0], unit.diagram_before, f"before: {unit.neurons} neurons"),
                               (axes[1], unit.diagram_after, f"after: {unit.kept} kept")):
        for dim in sorted(diagram, key=int):
            pairs = np.asarray(diagram[dim], dtype=float).reshape(-1, 2)
            if len(pairs):
                top = max(top, float(pairs.max()))
                ax.scatter(pairs[:, 0], pairs[:, 1], s=10, alpha=0.7, label=f"H{dim} ({len(pairs)})")
        ax.set_title(label)
        ax.set_xlabel("birth")
        ax.legend(loc="lower right")
    axes[0].set_ylabel("death")
    for ax in axes:
        ax.plot([0, top * 1.05 or 1], [0, top * 1.05 or 1], color="grey", lw=0.8)
    distance = report.options.get("distance", "diagram")
    fig.suptitle(title or f"{unit.name}: {distance} distance after pruning {unit.final_distance:.4g}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
