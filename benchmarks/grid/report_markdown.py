"""The Markdown report: the thesis' tables (mean ± std over seeds), the comparison with the
random control, per-epoch recovery, failures, and how the numbers were produced.

Example
-------
>>> percent({"mean": 0.7712, "std": 0.0045, "n": 3})
'77.12 ± 0.45'
>>> percent({"mean": 0.5, "std": None, "n": 1})
'50.00'
>>> percent({"mean": -0.0056, "std": 0.0108, "n": 3}, signed=True)
'-0.56 ± 1.08'
"""
from __future__ import annotations

import shlex
from typing import Any, Dict, List, Optional

from .summary import CONTROL, PAIRWISE_METRICS, binomial_noise


def percent(value: Dict[str, Any], signed: bool = False) -> str:
    """A fraction's mean ± std as percentages with two decimals; ``signed`` for a difference
    (points, with its sign)."""
    if value["mean"] is None:
        return "-"
    text = f"{100 * value['mean']:{'+' if signed else ''}.2f}"
    return text if value["std"] is None else f"{text} ± {100 * value['std']:.2f}"


def number(value: Dict[str, Any], digits: int = 2, scale: float = 1.0) -> str:
    """A quantity's mean ± std, scaled; the ± part is dropped when it is zero."""
    if value["mean"] is None:
        return "-"
    text = f"{value['mean'] * scale:.{digits}f}"
    if value["std"]:
        text += f" ± {value['std'] * scale:.{digits}f}"
    return text


def convergence_text(value: Dict[str, Any], budget: int) -> str:
    """Mean ± std epoch among runs that converged, with how many did."""
    if value["converged"] == 0:
        return f"not within {budget} epochs (0/{value['runs']})"
    text = number(value, digits=1)
    return f"{text} ({value['converged']}/{value['runs']})"


def _sparsity_table(groups: List[Dict[str, Any]], baseline: Dict[str, Any], budget: int, batch: int) -> List[str]:
    lines = [
        f"| pruner | seeds | params left | FLOPs left | acc. after pruning (%) | after BN re-estimation (%) "
        f"| recoverability after {budget} ep. (%) "
        f"| convergence (epochs; converged/runs) | pruning time (s) | speed-up time (s) | latency (ms, batch {batch}"
        # records made before latency_ratio existed have no ratio to show
        f"{'; x unpruned, same process' if any('latency_ratio' in group for group in groups) else ''}) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| unpruned | - | {baseline['params'] / 1e6:.3f} M (100%) | {baseline['flops'] / 1e6:.1f} M (100%) | "
        f"{100 * baseline['test_acc']:.2f} | - | - | - | - | - | {baseline['latency']['median_ms']:.2f} |",
    ]
    for group in groups:
        lines.append(
            f"| {group['pruner']} | {group['n']} "
            f"| {number(group['params'], 3, 1e-6)} M ({number(group['params_ratio'], 1, 100)}%) "
            f"| {number(group['flops'], 1, 1e-6)} M ({number(group['flops_ratio'], 1, 100)}%) "
            f"| {percent(group['acc_after_pruning'])} "
            f"| {percent(group['acc_after_bn']) if 'acc_after_bn' in group else '-'} "
            f"| {percent(group['recoverability'])} "
            f"| {convergence_text(group['convergence'], budget)} | {number(group['pruning_seconds'], 2)} "
            f"| {number(group['speedup_seconds'], 2)} | {number(group['latency_ms'], 2)}"
            f"{' (x ' + number(group['latency_ratio'], 2) + ')' if 'latency_ratio' in group else ''} |")
    return lines


def _curve_table(groups: List[Dict[str, Any]]) -> List[str]:
    length = max(len(group["curve"]) for group in groups)
    lines = ["| epoch | " + " | ".join(group["pruner"] for group in groups) + " |",
             "| --- |" + " --- |" * len(groups)]
    for epoch in range(length):
        cells = [percent(group["curve"][epoch]) if epoch < len(group["curve"]) else "-" for group in groups]
        label = "0 (start)" if epoch == 0 else str(epoch)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if all("last_epoch_gain" in group for group in groups):
        lines.append("| last epoch added (points) | "
                     + " | ".join(percent(group["last_epoch_gain"], signed=True) for group in groups) + " |")
    return lines


def _verdict_line(sparsity: float, comparisons: List[Dict[str, Any]], metric: str, label: str) -> str:
    rows = [row for row in comparisons if row["sparsity"] == sparsity and row["metric"] == metric]
    if not rows:
        return f"- {label}: no comparison (the `{CONTROL}` control or the other pruners have no successful runs)."
    beats = [row["pruner"] for row in rows if row["verdict"] == "beats"]
    worse = [row["pruner"] for row in rows if row["verdict"] == "worse"]
    undecided = [row["pruner"] for row in rows if row["verdict"].startswith("cannot tell")]
    details = "; ".join(
        f"{row['pruner']} {100 * row['difference']:+.2f} points"
        + ("" if row["welch_p"] is None else f" (Welch p = {row['welch_p']:.2f})") for row in rows)
    if undecided and len(undecided) == len(rows):
        summary = "cannot tell: fewer than two seeds"
    elif beats:
        summary = f"{', '.join(beats)} beat{'s' if len(beats) == 1 else ''} the random control beyond the spread"
    else:
        summary = "no pruner beats the random control beyond the spread"
    if worse:
        summary += f"; {', '.join(worse)} fall{'s' if len(worse) == 1 else ''} below it beyond the spread"
    return f"- {label}: **{summary}**. Mean difference to `{CONTROL}`: {details}."


METRIC_LABELS = {"acc_after_pruning": "right after pruning", "acc_after_bn": "after BN re-estimation",
                 "recoverability": "after fine-tuning"}


def _paired_table(rows: List[Dict[str, Any]], sparsity: float, finetuned: bool = True) -> List[str]:
    # with no fine-tuning, "after fine-tuning" is the BN-stage accuracy again: one table row, not two
    skipped = {"acc_after_pruning"} | (set() if finetuned else {"recoverability"})
    rows = [row for row in rows if row["sparsity"] == sparsity and row["metric"] not in skipped]
    if not rows:
        return []
    lines = ["Paired, image by image on the same test images (runs paired by seed; 95% bootstrap interval of the "
             "mean difference over images; McNemar's exact p per seed). **beats** / **worse** = the interval "
             "excludes 0 and every seed's difference has the same sign:", "",
             "| pruner | vs | accuracy | difference (points) | 95% interval | per seed (points; McNemar p) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        seeds = "; ".join(f"s{r['seed']}: {100 * r['difference']:+.2f} (p={r['mcnemar_p']:.2g})"
                          for r in row["per_seed"])
        verdict = f"**{row['verdict']}**" if row["verdict"] != "within noise" else row["verdict"]
        lines.append(f"| {row['pruner']} | {row['reference']} ({row['role']}) | {METRIC_LABELS[row['metric']]} "
                     f"| {100 * row['difference']:+.2f} | [{100 * row['ci95'][0]:+.2f}, {100 * row['ci95'][1]:+.2f}] "
                     f"| {seeds} | {verdict} |")
    return lines + [""]


def _pairwise_matrix(rows: List[Dict[str, Any]], sparsity: float, metric: str) -> List[str]:
    """Every pruner against every other (:func:`benchmarks.grid.summary.pairwise_comparisons`) as a
    matrix: the cell in row A, column B is A minus B with its 95% interval, bold when the verdict
    is decided (the interval excludes 0 and every seed agrees)."""
    rows = [row for row in rows if row["sparsity"] == sparsity and row["metric"] == metric]
    if not rows:
        return []
    pruners = list(dict.fromkeys(name for row in rows for name in (row["pruner"], row["reference"])))
    cells = {}
    for row in rows:
        low, high = row["ci95"]
        for a, b, sign in ((row["pruner"], row["reference"], 1), (row["reference"], row["pruner"], -1)):
            # "+ 0.0" turns a negated zero into 0.0, so equal pruners read +0.00 both ways, not -0.00
            interval = sorted((sign * low + 0.0, sign * high + 0.0))
            value = f"{100 * sign * row['difference'] + 0.0:+.2f}"
            value = f"**{value}**" if row["verdict"] != "within noise" else value
            cells[(a, b)] = f"{value} [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]"
    lines = [f"Every pruner against every other, {METRIC_LABELS[metric]}: row minus column in points, image by "
             "image (95% bootstrap interval; **bold** = the interval excludes 0 and every seed agrees):", "",
             "| | " + " | ".join(pruners) + " |", "| --- |" + " --- |" * len(pruners)]
    for a in pruners:
        lines.append(f"| {a} | " + " | ".join(cells.get((a, b), "") for b in pruners) + " |")
    return lines + [""]


def flops_section(view: Dict[str, Any], budget: int) -> List[str]:
    """The matched-FLOPs view (see :func:`benchmarks.grid.summary.matched_flops`) as Markdown."""
    if not view["rows"]:
        return []
    lines = ["## Accuracy vs FLOPs left", "",
             "Every pruner and sparsity by the FLOPs its pruned model keeps (measured, mean over seeds), most first; "
             "rows with the same FLOPs sit together and read side by side.", "",
             "| FLOPs left (%) | pruner | sparsity | seeds | after BN re-estimation (%) "
             f"| after fine-tuning ({budget} ep.) (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in view["rows"]:
        lines.append(f"| {100 * row['flops_ratio']:.1f} | {row['pruner']} | {row['sparsity']:g} | {row['n']} "
                     f"| {percent(row['acc_after_bn']) if 'acc_after_bn' in row else '-'} "
                     f"| {percent(row['recoverability']) if 'recoverability' in row else '-'} |")
    lines.append("")
    if any(row["pruner"].startswith("scratch_e:") for row in view["rows"]):
        lines += ["`scratch_e:` rows: final accuracy after their whole from-scratch budget, not after fine-tuning.", ""]
    interpolated = view["interpolated"]
    if not view["flops_differ"]:
        return lines + ["At each sparsity every pruner kept the same FLOPs (within 0.5 points), so the rows above "
                        "already compare them at matched FLOPs.", ""]
    source = (f"the `{interpolated['level_source']}` control's FLOPs ratios" if interpolated["level_source"] == CONTROL
              else "the measured FLOPs ratios")
    pruners = list(interpolated["pruners"])
    lines += [f"The pruners kept different FLOPs at one sparsity, so each pruner's mean accuracy is interpolated "
              f"linearly between its own sparsities at common FLOPs levels ({source}); '-' = outside the pruner's "
              "measured range (no extrapolation).", ""]
    for metric, label in (("acc_after_bn", "after BN re-estimation"), ("recoverability", "after fine-tuning")):
        present = [pruner for pruner in pruners if metric in interpolated["pruners"][pruner]]
        if not present:
            continue
        lines += [f"Accuracy {label} (%) at matched FLOPs:", "",
                  "| FLOPs left (%) | " + " | ".join(present) + " |", "| --- |" + " --- |" * len(present)]
        for index, level in enumerate(interpolated["levels"]):
            cells = [interpolated["pruners"][pruner][metric][index] for pruner in present]
            lines.append(f"| {100 * level:.1f} | "
                         + " | ".join("-" if value is None else f"{100 * value:.2f}" for value in cells) + " |")
        lines.append("")
    return lines



def _baseline_recipe(config: Dict[str, Any]) -> str:
    """The baseline's schedule and the recipe fields that differ from the defaults (e.g. the
    ``full`` preset's one-cycle, Nesterov, label smoothing, bf16), as the report states them."""
    parts = [config.get("baseline_schedule", "cosine")]
    if config.get("nesterov"):
        parts.append("Nesterov")
    if config.get("label_smoothing"):
        parts.append(f"label smoothing {config['label_smoothing']}")
    if config.get("precision", "fp32") != "fp32":
        parts.append(f"{config['precision']} autocast")
    if config.get("channels_last"):
        parts.append("channels_last")
    return ", ".join(parts)

def render_report(results: Dict[str, Any], plot_files: Dict[str, Optional[str]]) -> str:
    """The whole report as Markdown, from the results JSON payload."""
    config = results["config"]
    baseline = results["baseline"]
    budget = config["finetune_epochs"]
    data = results["data"]
    machine = results["machine"]
    summary, comparisons = results["summary"], results["comparisons"]
    lines = [
        f"# Pruning benchmark: CIFAR VGG-16, preset `{results['preset']}`",
        "",
        f"Status: **{results['status']}** ({results['finished_runs']} of {results['expected_runs']} runs finished, "
        f"{len(results['failures'])} failed). Generated {results['generated']}.",
        "",
        "## How these numbers were made",
        "",
        f"- Command: `{' '.join(shlex.quote(part) for part in results['command_line'])}`",
        f"- Machine: {machine['platform']}, {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads, "
        f"device `{machine['device']}`" + (f" ({machine['gpu']})" if machine.get("gpu") else "")
        + f"; git commit `{results['git']['commit']}`" + (" (uncommitted changes)" if results['git']['dirty'] else ""),
        *([f"- Report re-rendered from the stored records (`--report-only`) by git commit "
           f"`{results['rendered_by']['git']['commit']}`"
           + (" (uncommitted changes)" if results['rendered_by']['git']['dirty'] else "")
           + f" at {results['rendered_by']['at']}; the line above describes the runs"]
          if results.get("rendered_by") else []),
        "- Packages: " + ", ".join(f"{name} {version}" for name, version in results["packages"].items() if version),
        f"- Data: {data['source']} `{data['location']}` (SHA-256 {data['file_sha256']}), "
        f"{data['train_images']} training / {data['test_images']} test images",
        f"- Model: CIFAR VGG-16 at width {config['width']}; baseline trained {config['baseline_epochs']} epochs "
        f"(SGD lr {config['baseline_lr']}, {_baseline_recipe(config)}, batch {config['batch_size']}, "
        f"seed {config['baseline_seed']}) "
        f"to **{100 * baseline['test_acc']:.2f}%** test accuracy; cache key `{baseline['key_hash']}`",
        (f"- Pruning: every pruner gets the same NNI config list "
         f"`[{{'op_types': {config['op_types']}, 'sparse_ratio': s}}]`, then `unwrap_model()` and NNI `ModelSpeedup`; "
         f"seeds {config['seeds']}" if config.get("backend", "nni") == "nni" else
         f"- Pruning (backend `{config['backend']}`): Torch-Pruning's `BasePruner` with each pruner's importance "
         f"(see benchmarks/grid/backends.py), the layers and per-layer channel counts of the NNI config list "
         f"`[{{'op_types': {config['op_types']}, 'sparse_ratio': s}}]`; seeds {config['seeds']}")
        + ("" if config.get("allocation", "uniform") == "uniform" else
           f". **Per-layer ratios: `allocation={config['allocation']}`**: the uniform list above is replaced, before "
           f"any pruner runs, by one entry per layer from `nni_topo_pruner.allocation.topological_config_list` on the "
           f"baseline (the uniform list's FLOPs, shared out by topology); every pruner gets that same list, which each "
           f"record stores as `config_list`"),
        (f"- BatchNorm re-estimation (adaptive BN): after the speed-up, every BatchNorm's running statistics are "
         f"re-estimated on {config.get('bn_batches', 0)} batches of {config['batch_size']} training images "
         f"({'with the training augmentation (bn_augmented)' if config.get('bn_augmented') else 'no augmentation'}, "
         f"the same images for every pruner at one seed), in train mode with no weight update; "
         f"fine-tuning starts from that model." if config.get("bn_batches") else
         "- BatchNorm re-estimation: off (bn_batches=0)."),
        f"- Fine-tuning budget: {budget} epochs, SGD lr {config['finetune_lr']} (cosine), momentum {config['momentum']}, "
        f"weight decay {config['weight_decay']}. Recoverability = test accuracy after the budget; convergence = "
        f"first epoch within {100 * config['convergence_tolerance']:.1f} point(s) of the unpruned model "
        f"(0 = already right after pruning).",
        *([] if config.get("schedule", "oneshot") == "oneshot" else [
            f"- **Pruning schedule `{config['schedule']}`**: NNI's "
            f"`{'AGPPruner' if config['schedule'] == 'agp' else 'LinearPruner'}` around each pruner makes "
            f"{config.get('schedule_steps')} mask updates, evenly spaced, while the unpruned baseline trains for the "
            f"budget above (the same epochs, batches and learning rates as one-shot)"
            f"{' with every BatchNorm after a pruned layer masked with it (batchnorm_masks)' if config.get('batchnorm_masks') else ''}, "
            f"then the speed-up{' and one BatchNorm re-estimation' if config.get('final_bn', True) and config.get('bn_batches') else ' (no BatchNorm re-estimation after it)'}; "
            f"no further training. \"Right after pruning\" and \"after BN re-estimation\" are the masked model right after the "
            f"last update (BN re-estimated on a side copy), the curve starts at the unpruned model and convergence "
            f"counts from the first epoch after the last update (benchmarks/grid/gradual.py)."]),
        f"- FLOPs are thop's multiply-accumulates for one 32x32 image. Latency: median of "
        f"{config['latency_repeats']} forward passes at batch {config['latency_batch_size']} "
        f"(after {config['latency_warmup']} warm-up passes), on a machine possibly shared with other work.",
        "",
    ]
    test_images = data["test_images"]
    noise = binomial_noise(baseline["test_acc"], test_images)
    for sparsity in sorted({group["sparsity"] for group in summary}):
        groups = [group for group in summary if group["sparsity"] == sparsity]
        lines += [f"## Sparse ratio {sparsity:g}", ""]
        lines += _sparsity_table(groups, baseline, budget, config["latency_batch_size"])
        if any(group["pruner"].startswith("scratch_e:") for group in groups):
            scratch_epochs = config["baseline_epochs"] + budget
            lines += ["", f"Rows `scratch_e:X` (Scratch-E, Liu et al., ICLR 2019): X's pruned architecture at this "
                      f"sparsity and seed, re-initialised and trained from scratch for {scratch_epochs} epochs "
                      f"(baseline + fine-tuning epochs; SGD lr {config['baseline_lr']}, cosine). Their accuracy "
                      f"\"after pruning\" is the random initialisation's, their recoverability is after "
                      f"{scratch_epochs} epochs. Every pruner whose pruned models have the same layer widths at "
                      f"each seed (at uniform per-layer ratios: all of them) is compared with that row below."]
        lines += ["", "Compared with the random control. \"Beyond the spread\" = the intervals mean ± spread of the "
                  "pruner and of the control do not overlap, where spread = max(std over seeds, binomial standard "
                  f"error of one accuracy on {test_images} test images):", "",
                  _verdict_line(sparsity, comparisons, "acc_after_pruning", "Accuracy right after pruning"),
                  _verdict_line(sparsity, comparisons, "acc_after_bn", "Accuracy after BN re-estimation"),
                  *([_verdict_line(sparsity, comparisons, "recoverability", f"Recoverability after {budget} epochs")]
                    if budget > 0 else []),
                  f"- For scale: one accuracy measured on {test_images} test images has a binomial standard error "
                  f"of about {100 * noise:.1f} points at the baseline's accuracy.",
                  ""]
        lines += _paired_table(results.get("paired", []), sparsity, finetuned=budget > 0)
        for metric in PAIRWISE_METRICS:
            if metric != "recoverability" or budget > 0:  # with no fine-tuning it repeats the BN matrix
                lines += _pairwise_matrix(results.get("pairwise", []), sparsity, metric)
        lines += ["Test accuracy (%) per fine-tuning epoch, mean ± std over seeds (epoch 0: the model fine-tuning "
                  "starts from, after BN re-estimation when it is on); the last row is what the last epoch added, in "
                  "points (near 0: the curve ends flat):", ""]
        lines += _curve_table(groups)
        lines.append("")
    if not summary:
        lines += ["No run finished successfully yet.", ""]
    if "matched_flops" in results:
        lines += flops_section(results["matched_flops"], budget)
    if plot_files:
        lines += ["## Plots", ""]
        for title, name in plot_files.items():
            if name:
                lines += [f"![{title}]({name})", ""]
    if results["failures"]:
        lines += ["## Failures", "", "| pruner | sparsity | seed | step | error |", "| --- | --- | --- | --- | --- |"]
        for failure in results["failures"]:
            message = failure["error"]["message"].replace("|", "\\|").replace("\n", " ")
            if len(message) > 300:
                message = message[:297] + "..."
            lines.append(f"| {failure['pruner']} | {failure['sparsity']:g} | {failure['seed']} | "
                         f"{failure['error']['step']} | {failure['error']['type']}: {message} |")
        lines += ["", "Full tracebacks are in the JSON (`runs[*].error.traceback`). Rerunning the same command "
                  "retries failed runs.", ""]
    lines += ["## Reproducibility", "",
              "Seeds fix Python's, NumPy's and torch's RNGs per run, the augmentation and shuffling of every "
              "epoch, and the pruners that take a `seed`. On one CPU build with the same thread count, masks, "
              "accuracies and curves repeat bit for bit; other thread counts, CPUs or a GPU change the "
              "floating-point summation order and so the trained weights. Timings and latencies are not "
              "reproducible: they depend on the machine and its load.", ""]
    return "\n".join(lines)
