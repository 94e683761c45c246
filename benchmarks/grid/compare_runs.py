"""Compare two benchmark output directories image by image: each pruner of a *candidate* run
against pruners of a *reference* run at the same sparsity and seeds (e.g. per-layer ratios
from ``allocation=topological`` against the uniform ratios of an earlier run).

Both runs must share the baseline and the test images (checked); pairing is by seed, with
:func:`benchmarks.grid.summary.paired_difference` (paired bootstrap interval + McNemar per seed).

Usage::

    python -m benchmarks.grid.compare_runs CANDIDATE_DIR REFERENCE_DIR [--metric acc_after_bn]
        [--against same|random|best-norm|all] [--same-as LABEL=REFERENCE_LABEL] [--out FILE.md]

``--against same`` (default) compares each candidate pruner with the reference pruner of the
same label; ``random`` with the reference's random control; ``best-norm`` with the reference's
best of L1/L2/FPGM at that sparsity; ``all`` does the three. Exit status 2 on unusable input (a
directory that is not a ``benchmarks.run`` output, other baselines, an ``--out`` it cannot write).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.store import atomic_write_text, run_output_problem
from .summary import CONTROL, NORM_PRUNERS, finished_groups, paired_difference

METRICS = ("acc_after_bn", "acc_after_pruning", "recoverability")


class CompareInputError(ValueError):
    """An output directory that cannot be compared (missing, unreadable, another baseline)."""


def load_results(directory: Path) -> Dict[str, Any]:
    """The ``results.json`` of a ``benchmarks.run`` output directory; :class:`CompareInputError`
    when it is missing, unreadable or not one (another experiment's results, a foreign file)."""
    path = Path(directory) / "results.json"
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CompareInputError(f"{path} does not exist: give a benchmark --out-dir") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompareInputError(f"{path} cannot be read as JSON ({error}); rerun the benchmark to rewrite it") \
            from error
    problem = run_output_problem(stored, path)
    if problem is not None:
        raise CompareInputError(f"{problem}: give two --out-dir of python -m benchmarks.run")
    return stored


def _mean(records: Sequence[Dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def compare_runs(candidate: Dict[str, Any], reference: Dict[str, Any], metric: str = "acc_after_bn",
                 against: str = "same", same_as: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """One row per (sparsity, candidate pruner, reference pruner) with both FLOPs ratios, both
    mean accuracies and the paired difference (``None`` fields when nothing pairs).
    ``same_as`` maps a candidate label to the reference label that counts as the same pruner
    (e.g. ``{"topological": "topo_w1_zero"}`` when the reference ran it under a variant label)."""
    same_as = same_as or {}
    if metric not in METRICS:
        raise CompareInputError(f"metric must be one of {METRICS}, got {metric!r}")
    if against not in ("same", "random", "best-norm", "all"):
        raise CompareInputError(f"against must be 'same', 'random', 'best-norm' or 'all', got {against!r}")
    for key in ("key_hash",):
        mine, theirs = candidate.get("baseline", {}).get(key), reference.get("baseline", {}).get(key)
        if mine != theirs:
            raise CompareInputError(f"the runs have different baselines ({mine} vs {theirs}): paired comparisons "
                                    f"need the same model and test images")
    if candidate.get("data", {}).get("test_images") != reference.get("data", {}).get("test_images"):
        raise CompareInputError("the runs were measured on different numbers of test images")
    mine, theirs = finished_groups(candidate.get("runs", [])), finished_groups(reference.get("runs", []))
    rows = []
    for sparsity, pruner in sorted(mine, key=lambda k: (k[0], k[1])):
        references = []
        if against in ("same", "all"):
            references.append((same_as.get(pruner, pruner), "same pruner"))
        if against in ("random", "all"):
            references.append((CONTROL, "random control"))
        if against in ("best-norm", "all"):
            norms = [p for s, p in theirs if s == sparsity and p in NORM_PRUNERS
                     and _mean(theirs[(s, p)], metric) is not None]
            if norms:
                references.append((max(norms, key=lambda p: _mean(theirs[(sparsity, p)], metric)), "best norm pruner"))
        for other, role in references:
            if (sparsity, other) not in theirs:
                continue
            result = paired_difference(mine[(sparsity, pruner)], theirs[(sparsity, other)], metric)
            # the accuracies shown are over the seeds the difference pairs (all seeds when nothing pairs)
            seeds = set(result["seeds"]) if result is not None else None
            ours, others = ([r for r in group if seeds is None or r["seed"] in seeds]
                            for group in (mine[(sparsity, pruner)], theirs[(sparsity, other)]))
            rows.append({"sparsity": sparsity, "pruner": pruner, "reference": other, "role": role, "metric": metric,
                         "flops_ratio": _mean(ours, "flops_ratio"), "reference_flops_ratio": _mean(others, "flops_ratio"),
                         "accuracy": _mean(ours, metric), "reference_accuracy": _mean(others, metric),
                         "seeds": sorted(seeds) if seeds is not None else None, "paired": result})
    return rows


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def render_rows(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as a Markdown table (accuracies and differences in points)."""
    lines = ["Accuracies are means over the seeds paired (runs paired by seed, images by index).", "",
             "| sparsity | seeds | candidate | FLOPs left | acc. (%) | reference | FLOPs left | acc. (%) | difference "
             "(points, 95% CI) | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        paired = row["paired"]
        diff = "-" if paired is None else (f"{100 * paired['difference']:+.2f} [{100 * paired['ci95'][0]:+.1f}, "
                                           f"{100 * paired['ci95'][1]:+.1f}]")
        seeds = "-" if row.get("seeds") is None else ",".join(str(seed) for seed in row["seeds"])
        lines.append(f"| {row['sparsity']:g} | {seeds} | {row['pruner']} | {_pct(row['flops_ratio'])}% | {_pct(row['accuracy'])} "
                     f"| {row['reference']} ({row['role']}) | {_pct(row['reference_flops_ratio'])}% | "
                     f"{_pct(row['reference_accuracy'])} | {diff} | {'-' if paired is None else paired['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid.compare_runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", type=Path, help="benchmark output directory of the candidate run")
    parser.add_argument("reference", type=Path, help="benchmark output directory of the reference run")
    parser.add_argument("--metric", default="acc_after_bn", choices=METRICS)
    parser.add_argument("--against", default="same", choices=("same", "random", "best-norm", "all"))
    parser.add_argument("--same-as", action="append", default=[], metavar="LABEL=REFERENCE_LABEL",
                        help="the reference's label of the same pruner, when it differs (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        pairs = [item.split("=", 1) for item in args.same_as]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise CompareInputError(f"--same-as takes LABEL=REFERENCE_LABEL, got {args.same_as}")
        rows = compare_runs(load_results(args.candidate), load_results(args.reference), args.metric, args.against,
                            dict(pairs))
    except CompareInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = render_rows(rows)
    sys.stdout.write(table)
    if args.out:
        try:
            atomic_write_text(table, args.out)
        except OSError as error:  # read-only, a directory there, a missing parent ...
            print(f"error: --out {args.out}: cannot write it ({error.strerror or error}); pass a file path this "
                  f"user can write", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
