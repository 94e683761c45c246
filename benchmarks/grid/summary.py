"""Aggregate per-seed records into mean and spread per (pruner, sparsity), and compare each
pruner with the random control.

"Beyond the spread" means the intervals mean ± spread of the pruner and of the control do not
overlap, where spread = max(sample std over seeds, binomial standard error of one accuracy on
the test set). The second term matters for deterministic pruners: their masks do not depend
on the seed, so their accuracy right after pruning has zero seed spread, yet it is measured on
a finite test set. With fewer than two seeds on either side no verdict is given. Welch's
t-test p-value is reported alongside, for information (with three seeds it has little power).

Example
-------
>>> round(stat([0.70, 0.72, 0.74])["mean"], 6), round(stat([0.70, 0.72, 0.74])["std"], 6)
(0.72, 0.02)
>>> verdict(stat([0.80, 0.81, 0.82]), stat([0.70, 0.71, 0.72]))
'beats'
>>> verdict(stat([0.70, 0.75]), stat([0.72, 0.73]))
'within spread'
>>> verdict(stat([0.11, 0.11]), stat([0.09, 0.10]), test_images=512)  # 1.5 points < test-set noise
'within spread'
"""
from __future__ import annotations

import functools
import math
import statistics
import warnings
from typing import Any, Dict, List, Optional, Sequence

CONTROL = "random"
SCRATCH_LABEL = "scratch_e:"  # prefix of a Scratch-E row's pruner label (benchmarks.grid.scratch)
COMPARED_METRICS = ("acc_after_pruning", "acc_after_bn", "recoverability")
NORM_PRUNERS = ("l1", "l2", "fpgm")
#: accuracy metric -> the record key of its per-image correctness string
HITS_KEYS = {"acc_after_pruning": "hits_after_pruning", "acc_after_bn": "hits_after_bn",
             "recoverability": "hits_final"}


def stat(values: Sequence[float]) -> Dict[str, Any]:
    """``{"mean", "std", "n", "values"}``; ``std`` is the sample std (``None`` when n < 2)."""
    values = [float(value) for value in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def spread(value: Dict[str, Any], test_images: Optional[int] = None) -> float:
    """max(sample std over seeds, binomial standard error on ``test_images`` images)."""
    noise = binomial_noise(value["mean"], test_images) if test_images else 0.0
    return max(value["std"] or 0.0, noise)


def verdict(candidate: Dict[str, Any], control: Dict[str, Any], test_images: Optional[int] = None) -> str:
    """``beats`` / ``worse`` when the intervals mean ± :func:`spread` do not overlap, else
    ``within spread``; ``cannot tell (n < 2)`` without two seeds on each side."""
    if candidate["n"] < 2 or control["n"] < 2:
        return "cannot tell (n < 2)"
    low, high = candidate["mean"] - spread(candidate, test_images), candidate["mean"] + spread(candidate, test_images)
    control_low = control["mean"] - spread(control, test_images)
    control_high = control["mean"] + spread(control, test_images)
    if low > control_high:
        return "beats"
    if high < control_low:
        return "worse"
    return "within spread"


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided Welch t-test p-value (``None`` if undefined: n < 2 or zero variance on both sides)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-identical samples: scipy warns about precision, p is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p_value) else p_value


def binomial_noise(accuracy: float, test_images: int) -> float:
    """Standard error of one accuracy measured on ``test_images`` images: sqrt(p(1-p)/N)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / test_images)


def summarize(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One group per (sparsity, pruner) among successful records, in first-seen pruner order."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for record in records:
        if record.get("status") == "ok":
            groups.setdefault((record["sparsity"], record["pruner"]), []).append(record)
    summary = []
    for (sparsity, pruner), members in sorted(groups.items(), key=lambda item: item[0][0]):
        curves = [member["curve"] for member in members]
        length = min(len(curve) for curve in curves)
        converged = [member["convergence_epoch"] for member in members if member["convergence_epoch"] is not None]
        summary.append({
            "pruner": pruner,
            "sparsity": sparsity,
            "seeds": [member["seed"] for member in members],
            "n": len(members),
            **{key: stat([member[key] for member in members])
               for key in ("params", "params_ratio", "flops", "flops_ratio", "acc_after_pruning", "acc_after_bn",
                           "recoverability", "pruning_seconds", "speedup_seconds", "finetune_seconds",
                           "latency_ratio")
               if all(key in member for member in members)},
            "latency_ms": stat([member["latency"]["median_ms"] for member in members]),
            "convergence": {**stat(converged), "converged": len(converged), "runs": len(members)},
            "curve": [stat([curve[epoch] for curve in curves]) for epoch in range(length)],
            # how flat each curve ends: what its last epoch added (no entry without fine-tuning)
            **({"last_epoch_gain": stat([curve[-1] - curve[-2] for curve in curves])} if length > 1 else {}),
        })
    return summary


def compare_with_control(summary: List[Dict[str, Any]], test_images: Optional[int] = None,
                         control: str = CONTROL) -> List[Dict[str, Any]]:
    """Each non-control pruner vs ``control`` at the same sparsity, on each compared metric
    (accuracies measured on ``test_images`` images; see :func:`verdict`)."""
    by_key = {(group["sparsity"], group["pruner"]): group for group in summary}
    comparisons = []
    for group in summary:
        reference = by_key.get((group["sparsity"], control))
        if group["pruner"] == control or reference is None:
            continue
        for metric in COMPARED_METRICS:
            if metric not in group or metric not in reference:
                continue
            mine, theirs = group[metric], reference[metric]
            comparisons.append({
                "pruner": group["pruner"], "sparsity": group["sparsity"], "metric": metric, "control": control,
                "difference": mine["mean"] - theirs["mean"],
                "pruner_stat": mine, "control_stat": theirs,
                "verdict": verdict(mine, theirs, test_images),
                "welch_p": welch_p_value(mine["values"], theirs["values"]),
            })
    return comparisons


def _hits(record: Dict[str, Any], metric: str):
    import numpy as np

    text = record.get(HITS_KEYS[metric])
    return None if text is None else np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


@functools.lru_cache(maxsize=2048)
def _bootstrap_interval(per_image: bytes, resamples: int) -> tuple:
    """95% percentile-bootstrap interval of the mean of ``per_image`` (float64 bytes; fixed RNG).
    Cached on the data: the runner re-renders the report after every record, and most pairs
    have not changed since the last render."""
    import numpy as np
    from scipy.stats import bootstrap

    values = np.frombuffer(per_image, dtype=np.float64)
    interval = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=0.95,
                         method="percentile", random_state=np.random.default_rng(0)).confidence_interval
    return float(interval.low), float(interval.high)


def paired_difference(candidate: List[Dict[str, Any]], reference: List[Dict[str, Any]], metric: str,
                      resamples: int = 4000) -> Optional[Dict[str, Any]]:
    """Compare two pruners image by image on the same test images, pairing runs by seed.

    * per seed: the accuracy difference and McNemar's exact test on the discordant images
      (``scipy.stats.binomtest``);
    * over seeds: each image's correctness difference averaged over the paired seeds, and a
      95% bootstrap interval of their mean (``scipy.stats.bootstrap``, images resampled).

    Verdict ``beats`` / ``worse`` when the interval excludes 0 *and* every seed's difference
    has that sign (so one lucky mask draw of either side cannot decide it); otherwise
    ``within noise``. ``None`` when no seed has per-image results on both sides.

    >>> a = [{"seed": s, "hits_after_bn": "1" * 60 + "0" * 40} for s in (0, 1)]
    >>> b = [{"seed": s, "hits_after_bn": "1" * 50 + "0" * 50} for s in (0, 1)]
    >>> result = paired_difference(a, b, "acc_after_bn")
    >>> round(result["difference"], 2), result["verdict"]
    (0.1, 'beats')
    """
    import numpy as np
    from scipy.stats import binomtest

    by_seed = {record["seed"]: record for record in reference}
    pairs = []
    for record in candidate:
        other = by_seed.get(record["seed"])
        if other is None:
            continue
        mine, theirs = _hits(record, metric), _hits(other, metric)
        if mine is None or theirs is None or len(mine) != len(theirs):
            continue
        pairs.append((record["seed"], mine, theirs))
    if not pairs:
        return None
    per_seed = []
    for seed, mine, theirs in pairs:
        wins, losses = int(np.sum(mine & ~theirs)), int(np.sum(~mine & theirs))
        p_value = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
        per_seed.append({"seed": seed, "difference": float(mine.mean() - theirs.mean()), "wins": wins,
                         "losses": losses, "mcnemar_p": p_value})
    per_image = np.mean([mine.astype(float) - theirs for _, mine, theirs in pairs], axis=0)
    difference = float(per_image.mean())
    if np.all(per_image == per_image[0]):
        low = high = difference
    else:
        low, high = _bootstrap_interval(per_image.astype(np.float64).tobytes(), resamples)
    signs = [row["difference"] for row in per_seed]
    if low > 0 and all(d > 0 for d in signs):
        label = "beats"
    elif high < 0 and all(d < 0 for d in signs):
        label = "worse"
    else:
        label = "within noise"
    return {"difference": difference, "ci95": [low, high], "seeds": [row["seed"] for row in per_seed],
            "per_seed": per_seed, "verdict": label, "images": int(len(per_image))}


def same_architecture(candidate: List[Dict[str, Any]], scratch: List[Dict[str, Any]]) -> bool:
    """Whether a Scratch-E group trained the architecture of ``candidate``'s pruned models: the
    same ``layer_widths`` at every seed the two share (and at least one shared seed). Scratch-E
    is a property of the architecture, not of the pruner that found it: at uniform per-layer
    ratios every pruner keeps the same widths, so one Scratch-E row serves them all.

    >>> widths = {"conv": 4}
    >>> same_architecture([{"seed": 0, "layer_widths": widths}], [{"seed": 0, "layer_widths": {"conv": 4}}])
    True
    >>> same_architecture([{"seed": 0, "layer_widths": widths}], [{"seed": 0, "layer_widths": {"conv": 5}}])
    False
    >>> same_architecture([{"seed": 0, "layer_widths": widths}], [{"seed": 1, "layer_widths": widths}])
    False
    """
    by_seed = {record["seed"]: record.get("layer_widths") for record in scratch}
    shared = [record for record in candidate if record["seed"] in by_seed]
    return bool(shared) and all(record.get("layer_widths") is not None
                                and record["layer_widths"] == by_seed[record["seed"]] for record in shared)


def scratch_references(groups: Dict[tuple, List[Dict[str, Any]]], sparsity: float, pruner: str) -> List[str]:
    """The Scratch-E rows at ``sparsity`` that ``pruner``'s fine-tuned models are compared with:
    its own (``scratch_e:PRUNER``) and every other one that trained the same architecture
    (:func:`same_architecture`)."""
    own = SCRATCH_LABEL + pruner
    rows = [label for s, label in groups if s == sparsity and label.startswith(SCRATCH_LABEL)]
    return [label for label in rows
            if label == own or same_architecture(groups[(sparsity, pruner)], groups[(sparsity, label)])]


def finished_groups(records: List[Dict[str, Any]]) -> Dict[tuple, List[Dict[str, Any]]]:
    """The ``ok`` records by (sparsity, pruner), in the order they first appear."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for record in records:
        if record.get("status") == "ok":
            groups.setdefault((record["sparsity"], record["pruner"]), []).append(record)
    return groups


#: accuracies the every-pair comparison covers (right after pruning, before BN re-estimation, is noise)
PAIRWISE_METRICS = ("acc_after_bn", "recoverability")


def pairwise_comparisons(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Every pruner against every other at each sparsity, image by image (:func:`paired_difference`),
    after BN re-estimation and after fine-tuning; one row per unordered pair (``pruner`` minus
    ``reference``, in the order the pruners first appear). Scratch-E rows are left out (they are
    compared with the pruners in :func:`paired_comparisons`).

    >>> rows = pairwise_comparisons([{"status": "ok", "sparsity": 0.5, "pruner": p, "seed": 0,
    ...                               "hits_after_bn": h} for p, h in (("a", "1100"), ("b", "1000"), ("c", "0000"))])
    >>> [(r["pruner"], r["reference"], r["difference"]) for r in rows]
    [('a', 'b', 0.25), ('a', 'c', 0.5), ('b', 'c', 0.25)]
    """
    groups = finished_groups(records)
    rows = []
    for sparsity in sorted({key[0] for key in groups}):
        pruners = [p for s, p in groups if s == sparsity and not p.startswith(SCRATCH_LABEL)]
        for metric in PAIRWISE_METRICS:
            for i, pruner in enumerate(pruners):
                for reference in pruners[i + 1:]:
                    result = paired_difference(groups[(sparsity, pruner)], groups[(sparsity, reference)], metric)
                    if result is not None:
                        rows.append({"pruner": pruner, "reference": reference, "sparsity": sparsity,
                                     "metric": metric, **result})
    return rows


def paired_comparisons(records: List[Dict[str, Any]], control: str = CONTROL) -> List[Dict[str, Any]]:
    """Every pruner vs the random ``control``, every pruner that is not a norm pruner
    (:data:`NORM_PRUNERS`) vs the best norm pruner at that sparsity and metric, and every pruner
    vs each Scratch-E row of its architecture (:func:`scratch_references`), image by image
    (:func:`paired_difference`)."""
    groups = finished_groups(records)
    rows = []
    for sparsity in sorted({key[0] for key in groups}):
        pruners = [p for s, p in groups if s == sparsity]
        for metric in COMPARED_METRICS:
            def mean(pruner: str) -> float:
                values = [r[metric] for r in groups[(sparsity, pruner)] if metric in r]
                return statistics.fmean(values) if values else float("-inf")

            norms = [p for p in pruners if p in NORM_PRUNERS and mean(p) > float("-inf")]
            best_norm = max(norms, key=mean) if norms else None
            for pruner in pruners:
                scratch = pruner.startswith(SCRATCH_LABEL)
                references = [(control, "control")] if pruner != control else []
                if pruner not in NORM_PRUNERS and pruner != control and best_norm is not None and not scratch:
                    references.append((best_norm, "best norm pruner"))
                if metric == "recoverability" and not scratch:
                    # pruned + fine-tuned vs the same architecture trained from scratch
                    references += [(label, "Scratch-E") for label in scratch_references(groups, sparsity, pruner)]
                for reference, role in references:
                    if (sparsity, reference) not in groups:
                        continue
                    result = paired_difference(groups[(sparsity, pruner)], groups[(sparsity, reference)], metric)
                    if result is not None:
                        rows.append({"pruner": pruner, "reference": reference, "role": role, "sparsity": sparsity,
                                     "metric": metric, **result})
    return rows


#: accuracies the matched-FLOPs view reads (after BN re-estimation and after fine-tuning)
FLOPS_METRICS = ("acc_after_bn", "recoverability")


def _mean(group: Dict[str, Any], key: str) -> Optional[float]:
    return group[key]["mean"] if key in group and group[key]["mean"] is not None else None


def flops_rows(summary: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Every (pruner, sparsity) group with its measured FLOPs ratio and accuracies, most FLOPs
    left first (ties by pruner), so groups that keep the same FLOPs sit next to each other.

    >>> rows = flops_rows([{"pruner": "l1", "sparsity": 0.7, "n": 1, "flops_ratio": stat([0.1]),
    ...                     "recoverability": stat([0.5])},
    ...                    {"pruner": "l1", "sparsity": 0.3, "n": 1, "flops_ratio": stat([0.5]),
    ...                     "recoverability": stat([0.7])}])
    >>> [(row["sparsity"], row["flops_ratio"], row["recoverability"]["mean"]) for row in rows]
    [(0.3, 0.5, 0.7), (0.7, 0.1, 0.5)]
    """
    rows = [{"pruner": group["pruner"], "sparsity": group["sparsity"], "n": group["n"],
             "flops_ratio": group["flops_ratio"]["mean"],
             **{metric: group[metric] for metric in FLOPS_METRICS if metric in group}}
            for group in summary if _mean(group, "flops_ratio") is not None]
    return sorted(rows, key=lambda row: (-round(row["flops_ratio"], 3), row["pruner"], row["sparsity"]))


def flops_differ(summary: List[Dict[str, Any]], tolerance: float = 0.005) -> bool:
    """Whether pruners at one sparsity left FLOPs ratios more than ``tolerance`` apart (non-uniform
    per-layer ratios, or a pruner that prunes other layers): then accuracies at one sparsity are
    not at matched FLOPs, and :func:`interpolate_at_flops` matches them."""
    by_sparsity: Dict[float, List[float]] = {}
    for group in summary:
        value = _mean(group, "flops_ratio")
        if value is not None:
            by_sparsity.setdefault(group["sparsity"], []).append(value)
    return any(max(values) - min(values) > tolerance for values in by_sparsity.values())


def interpolate_at_flops(summary: List[Dict[str, Any]], levels: Optional[Sequence[float]] = None,
                         control: str = CONTROL) -> Dict[str, Any]:
    """Each pruner's mean accuracies linearly interpolated (between its own sparsities) at common
    FLOPs ratios: ``levels``, by default the ``control``'s ratios (random pruning at uniform
    per-layer ratios), else every group's. A level outside a pruner's measured range is ``None``
    (no extrapolation); a pruner with one point has a value only at its own ratio.

    >>> groups = [{"pruner": p, "sparsity": s, "n": 1, "flops_ratio": stat([f]), "recoverability": stat([a])}
    ...           for p, s, f, a in [("random", 0.3, 0.5, 0.6), ("random", 0.7, 0.1, 0.4),
    ...                              ("topo", 0.3, 0.6, 0.8), ("topo", 0.7, 0.2, 0.6)]]
    >>> view = interpolate_at_flops(groups)
    >>> view["levels"], [None if v is None else round(v, 3) for v in view["pruners"]["topo"]["recoverability"]]
    ([0.1, 0.5], [None, 0.75])
    """
    import numpy as np

    points: Dict[str, List[tuple]] = {}
    for group in summary:
        ratio = _mean(group, "flops_ratio")
        if ratio is not None:
            points.setdefault(group["pruner"], []).append((ratio, group))
    if levels is None:
        source = control if control in points else "every group"
        chosen = points[control] if control in points else [point for pts in points.values() for point in pts]
        levels = sorted({round(ratio, 6) for ratio, _ in chosen})
    else:
        source, levels = "given", sorted(float(level) for level in levels)
    pruners: Dict[str, Dict[str, List[Optional[float]]]] = {}
    for pruner, members in points.items():
        members = sorted(members, key=lambda point: point[0])
        pruners[pruner] = {}
        for metric in FLOPS_METRICS:
            xy = [(ratio, _mean(group, metric)) for ratio, group in members if _mean(group, metric) is not None]
            if not xy:
                continue
            xs, ys = np.array([x for x, _ in xy]), np.array([y for _, y in xy])
            values: List[Optional[float]] = []
            for level in levels:
                inside = xs.min() - 1e-6 <= level <= xs.max() + 1e-6
                values.append(float(np.interp(level, xs, ys)) if inside else None)
            pruners[pruner][metric] = values
    return {"levels": list(levels), "level_source": source, "pruners": pruners}


def matched_flops(summary: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The matched-FLOPs view of the results JSON: :func:`flops_rows`, :func:`flops_differ` and
    :func:`interpolate_at_flops`."""
    return {"rows": flops_rows(summary), "flops_differ": flops_differ(summary),
            "interpolated": interpolate_at_flops(summary)}
