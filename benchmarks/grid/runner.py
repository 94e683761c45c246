"""Run a whole benchmark: data -> cached baseline -> one record per (sparsity, seed, pruner) ->
results JSON, Markdown report and plots, rewritten after every record.

Output directory layout::

    results.json          everything (schema SCHEMA_VERSION), rewritten atomically after each record
    report.md             the tables, rewritten with results.json
    recovery.png          accuracy per fine-tuning epoch, per pruner, mean ± std
    accuracy_vs_flops.png accuracy vs FLOPs, mean ± std
    runs/NAME.json        one record per (pruner, sparsity, seed): the unit of resumption
    work/NAME-HASH/       a run in progress (pruned model, fine-tuning checkpoint); removed when done
    benchmark.log         log of every invocation (appended by the CLI)

A record is reused when its file holds ``status: ok`` and the hash of everything it depends on
(:func:`benchmarks.core.config.run_key`); failed, stale or unreadable records are redone.

Example (needs a trained baseline, so not a doctest)::

    exit_code = run_benchmark(preset_config("smoke"), preset="smoke", out_dir=Path("out"), command_line=["..."])
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import shlex
import shutil
import time
import traceback
import urllib.error
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.baseline import Baseline, load_or_train_baseline, measure_speed, training_trace
from ..core.config import BenchmarkConfig, pruner_spec, run_key, stable_hash
from ..core.data import REPO_ROOT, CifarArrays, load_data, subsample
from ..core.environment import git_state, machine_info, package_versions
from ..core.framework import Experiment, RunState, run
from .experiment import StepError, run_experiment
from .plots import plot_accuracy_vs_flops, plot_recovery
from .report_markdown import render_report
from .scratch import SCRATCH_PREFIX, run_scratch_e, scratch_e_key, split_scratch
from ..core.store import (atomic_write_json, atomic_write_text, load_json_or_none, process_lock, quarantine,
                    run_output_problem)
from ..core.training import convergence_epoch
from .summary import compare_with_control, matched_flops, paired_comparisons, pairwise_comparisons, summarize

_logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PLOT_INTERVAL_S = 60.0  # redraw the PNGs at most this often while running (and always at the end)
PLOT_FILES = {"Accuracy recovery per fine-tuning epoch": "recovery.png",
              "Accuracy vs FLOPs": "accuracy_vs_flops.png"}


class BenchmarkInputError(ValueError):
    """The data or device named by the configuration cannot be used (a usage error, not a crash)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkInputError(f"device={name!r} but torch sees no CUDA device; use device=cpu or device=auto")
    return device


def record_name(pruner: str, sparsity: float, seed: int) -> str:
    """File stem of a record, e.g. ``l1_sparsity0.5_seed0`` (a ``LABEL=NAME`` pruner goes by its label;
    the Scratch-E row of ``l1``, plan entry ``scratch_e:l1``, is ``scratch_e-l1_sparsity0.5_seed0``)."""
    scratch, spec = split_scratch(pruner)
    return f"{'scratch_e-' if scratch else ''}{pruner_spec(spec)[0]}_sparsity{sparsity:g}_seed{seed}"


def record_label(pruner: str) -> str:
    """The ``pruner`` field of a plan entry's record: the label, ``scratch_e:LABEL`` for a Scratch-E row."""
    scratch, spec = split_scratch(pruner)
    return (SCRATCH_PREFIX if scratch else "") + pruner_spec(spec)[0]


def benchmark_plan(config: BenchmarkConfig) -> List[tuple]:
    """Every (sparsity, seed, pruner entry) of a run; a Scratch-E entry follows its pruner's."""
    scratch_labels = {label.lower() for label in config.scratch_e}
    plan = []
    for sparsity in config.sparsities:
        for seed in config.seeds:
            for pruner in config.pruners:
                plan.append((sparsity, seed, pruner))
                if pruner_spec(pruner)[0] in scratch_labels:
                    plan.append((sparsity, seed, SCRATCH_PREFIX + pruner))
    return plan


@dataclass
class BenchmarkState:
    """What the results JSON is built from."""

    config: BenchmarkConfig
    preset: str
    command_line: List[str]
    context: Dict[str, Any]
    baseline: Dict[str, Any]
    plan: List[tuple]
    records: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    status: str = "running"
    #: set by --report-only: the code that re-rendered stored records (``context`` describes the runs)
    rendered_by: Optional[Dict[str, Any]] = None

    def load_finished(self, out_dir: Path, baseline_hash: str, provenance: Optional[Dict[str, Optional[str]]] = None,
                      legacy_ok: bool = False) -> List[tuple]:
        """Take every reusable record of the plan from ``out_dir/runs`` into ``records``; returns the
        plan entries still to run, in plan order (``provenance``, ``legacy_ok``: :func:`reusable_record`)."""
        pending = []
        for entry in self.plan:
            sparsity, seed, pruner = entry
            record = reusable_record(self.config, baseline_hash, pruner, sparsity, seed, out_dir, provenance,
                                     legacy_ok)
            if record is None:
                pending.append(entry)
            else:
                record.pop("reused")
                self.records[record_name(pruner, sparsity, seed)] = record
        return pending

    def failed(self) -> List[str]:
        """Names of the records held that did not finish ``ok``."""
        return [name for name, record in self.records.items() if record["status"] != "ok"]

    def final_status(self) -> str:
        """``incomplete`` while a plan entry has no record, else ``complete`` (``with failures`` if any)."""
        if len(self.records) < len(self.plan):
            return "incomplete"
        return "complete with failures" if self.failed() else "complete"

    def results(self) -> Dict[str, Any]:
        # convergence is a reading of the stored curve at this run's tolerance (a render-time
        # setting, not part of any key): recomputed here so the report never states one
        # tolerance beside epochs counted at another
        ordered = [with_convergence(self.records[record_name(p, s, seed)], self.baseline.get("test_acc"),
                                    self.config.convergence_tolerance)
                   for s, seed, p in self.plan if record_name(p, s, seed) in self.records]
        summary = summarize(ordered)
        failures = [record for record in ordered if record["status"] != "ok"]
        return {
            "schema_version": SCHEMA_VERSION,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": self.status,
            "preset": self.preset,
            "command_line": self.command_line,
            "config": self.config.to_dict(),
            **self.context,
            "baseline": self.baseline,
            "expected_runs": len(self.plan),
            "finished_runs": sum(record["status"] == "ok" for record in ordered),
            "runs": ordered,
            "failures": failures,
            "summary": summary,
            "comparisons": compare_with_control(summary, self.context["data"]["test_images"]),
            "paired": paired_comparisons(ordered),
            "pairwise": pairwise_comparisons(ordered),
            "matched_flops": matched_flops(summary),
            **({"rendered_by": self.rendered_by} if self.rendered_by else {}),
        }


def with_convergence(record: Dict[str, Any], reference: Optional[float], tolerance: float) -> Dict[str, Any]:
    """``record`` with ``convergence_epoch`` recomputed from its curve against ``reference`` (the
    unpruned accuracy) at ``tolerance``; failed records and records without a curve as they are.

    >>> with_convergence({"status": "ok", "curve": [0.1, 0.5, 0.7]}, 0.72, 0.05)["convergence_epoch"]
    2
    >>> with_convergence({"status": "ok", "curve": [0.1, 0.5, 0.7]}, 0.72, 0.7)["convergence_epoch"]
    0
    """
    if record.get("status") != "ok" or not isinstance(record.get("curve"), list) or reference is None:
        return record
    # under a pruning schedule (benchmarks.grid.gradual) the early epochs are at a lower sparsity: count from
    # the first epoch at the final one
    schedule = record.get("pruning_schedule")
    start = schedule.get("first_full_sparsity_epoch", 0) if isinstance(schedule, dict) else 0
    epoch = convergence_epoch(record["curve"][start:], reference, tolerance)
    return {**record, "convergence_epoch": None if epoch is None else epoch + start}


def write_outputs(state: BenchmarkState, out_dir: Path, plots: bool = True) -> Dict[str, Any]:
    """Rewrite results.json, report.md and (if ``plots``) the PNGs, each atomically; returns the results."""
    results = state.results()
    if plots and results["summary"]:
        plot_recovery(results["summary"], state.baseline["test_acc"], state.config.convergence_tolerance,
                      out_dir / PLOT_FILES["Accuracy recovery per fine-tuning epoch"])
        plot_accuracy_vs_flops(results["summary"], state.baseline, out_dir / PLOT_FILES["Accuracy vs FLOPs"])
    existing = {title: name for title, name in PLOT_FILES.items() if (out_dir / name).is_file()}
    atomic_write_json(results, out_dir / "results.json")
    atomic_write_text(render_report(results, existing), out_dir / "report.md")
    return results


def _failure(error: BaseException) -> Dict[str, Any]:
    step = error.step if isinstance(error, StepError) else "unknown"
    cause = error.cause if isinstance(error, StepError) else error
    return {"step": step, "type": type(cause).__name__, "message": str(cause),
            "traceback": "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))}


def _baseline_summary(baseline: Baseline, latency: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("key_hash", "key", "weights_sha256", "test_acc", "params", "flops", "history", "train_seconds_total",
            "trained_on", "created", "cached", "cache_path")
    return {**{key: baseline.info.get(key) for key in keep}, "latency": latency}


def baseline_mismatch(stored: Any, current: Dict[str, Any]) -> Optional[str]:
    """Why the records under an out-dir's results.json (baseline summary ``stored``) were not made
    from the ``current`` baseline of the same key, or ``None`` when nothing says so.

    The run keys hold the baseline's key (its recipe and data), not its weights: a baseline
    retrained on another machine, or after its cache was deleted, keeps the key but need not give
    the same weights. Compared by weights digest where both have one, else by training trace
    (accuracy and per-epoch metrics). A different key is no mismatch: every record is redone then.
    """
    if not isinstance(stored, dict) or stored.get("key_hash") != current.get("key_hash"):
        return None
    if stored.get("weights_sha256") and current.get("weights_sha256"):
        if stored["weights_sha256"] == current["weights_sha256"]:
            return None
        what = f"weights digest {stored['weights_sha256'][:12]}... there, {current['weights_sha256'][:12]}... now"
    elif training_trace(stored) is None or training_trace(stored) == training_trace(current):
        return None
    else:
        what = f"test accuracy {stored.get('test_acc')} there, {current.get('test_acc')} now, or its training history differs"
    return (f"the records in this --out-dir were made from baseline {current['key_hash']} as trained on "
            f"{stored.get('created')}, and the cached baseline of that key ({current.get('cache_path')}, "
            f"trained on {current.get('created')}) is not the same network ({what}). Put the original "
            "model.pt and info.json back in that cache folder (or point --cache-dir at a copy), "
            "or use a new --out-dir to redo every record from this baseline")


def data_set_mismatch(stored: Any, arrays: CifarArrays) -> Optional[str]:
    """Why an out-dir whose results.json describes data ``stored`` cannot take records made on
    ``arrays`` (``None`` when they are the same data, or nothing is stored): one out-dir, one data set."""
    if not isinstance(stored, dict) or not stored.get("content_sha256"):
        return None
    current = arrays.describe()
    if stored["content_sha256"] == current["content_sha256"]:
        return None

    def name(data: Dict[str, Any]) -> str:
        return (f"{Path(str(data.get('location', '?'))).name} ({data.get('train_images')} train / "
                f"{data.get('test_images')} test images, content {str(data.get('content_sha256'))[:12]}...)")

    return (f"this --out-dir holds records made on {name(stored)}, and this run's data is {name(current)}; "
            "records of two data sets are never mixed: use another --out-dir, or pass the --data "
            "(and train_size/test_size) that made these records")


#: keys every finished record holds, with their types (a record missing one is redone)
_RECORD_FIELDS = {"schema_version": int, "run_hash": str, "status": str, "pruner": str, "sparsity": (int, float),
                  "seed": int}
_OK_FIELDS = {"acc_after_pruning": (int, float), "recoverability": (int, float), "params": int, "flops": int,
              "params_ratio": (int, float), "flops_ratio": (int, float), "curve": list, "latency": dict,
              "pruning_seconds": (int, float), "speedup_seconds": (int, float), "finetune_seconds": (int, float)}


def record_problem(record: Any) -> Optional[str]:
    """Why a record file's content cannot be used (``None`` if it can): not an object, a
    missing key, or a value of the wrong type.

    >>> record_problem([])
    'a record must be a JSON object, got list'
    >>> record_problem({"schema_version": 1, "run_hash": "h", "status": "failed", "pruner": "l1", "sparsity": 0.5,
    ...                 "seed": "0"})
    "key 'seed' must be int, got str"
    """
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    fields = dict(_RECORD_FIELDS, **(_OK_FIELDS if record.get("status") == "ok" else {}))
    for key, kind in fields.items():
        if key not in record:
            return f"missing key {key!r}"
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            return f"key {key!r} must be {names}, got {type(value).__name__}"
    where = _non_finite(record)
    if where is not None:
        return f"non-finite number (NaN or infinity) at {where}"
    return None


def _non_finite(value: Any, where: str = "record") -> Optional[str]:
    """Where in a JSON value a NaN or infinity sits (valid JSON to Python, poison to every statistic)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def record_key(config: BenchmarkConfig, baseline_hash: str, pruner: str, sparsity: float,
               seed: int) -> Dict[str, Any]:
    """:func:`benchmarks.core.config.run_key` of a plan entry; a Scratch-E entry adds its training recipe
    (so pruned-and-fine-tuned records keep the keys they always had)."""
    scratch, spec = split_scratch(pruner)
    key = run_key(config, baseline_hash, spec, sparsity, seed)
    return {**key, "scratch_e": scratch_e_key(config)} if scratch else key


def _load_record(path: Path) -> Optional[Dict[str, Any]]:
    """The record file at ``path``, or ``None`` if missing; unusable content is moved aside."""
    existing = load_json_or_none(path)
    problem = None if existing is None else record_problem(existing)
    if problem is not None:
        quarantine(path, ValueError(problem))
        return None
    return existing


def record_provenance(baseline: Baseline, arrays: CifarArrays) -> Dict[str, Optional[str]]:
    """What every record stores about the inputs it was made from, and is checked against before
    it is reused: the data's content digest and the baseline's weights digest."""
    return {"data_content_sha256": arrays.content_sha256(), "baseline_weights_sha256": baseline.info.get("weights_sha256")}


def _reusable(existing: Dict[str, Any], key_hash: str, provenance: Dict[str, Optional[str]],
              legacy_ok: bool = False) -> bool:
    """A finished record of this key made from these inputs. A record from before provenance was
    stored is reusable only when ``legacy_ok`` (the out-dir's results.json vouched for its baseline)."""
    if not (existing.get("schema_version") == SCHEMA_VERSION and existing.get("run_hash") == key_hash
            and existing.get("status") == "ok"):
        return False
    if not any(key in existing for key in provenance):
        return legacy_ok
    return all(existing.get(key) == value for key, value in provenance.items())


def reusable_record(config: BenchmarkConfig, baseline_hash: str, pruner: str, sparsity: float, seed: int,
                    out_dir: Path, provenance: Optional[Dict[str, Optional[str]]] = None,
                    legacy_ok: bool = False) -> Optional[Dict[str, Any]]:
    """The finished record of this plan entry in ``out_dir`` if it can be reused as it is, else ``None``
    (lets the driver skip finished work before handing the rest to an executor). ``provenance``
    (:func:`record_provenance`) must match the record's; ``None`` (``--report-only``, which
    re-renders what is stored) checks nothing beyond the key."""
    existing = _load_record(Path(out_dir) / "runs" / f"{record_name(pruner, sparsity, seed)}.json")
    key_hash = stable_hash(record_key(config, baseline_hash, pruner, sparsity, seed))
    if existing is None:
        return None
    reusable = (_reusable(existing, key_hash, provenance, legacy_ok) if provenance is not None
                else _reusable(existing, key_hash, {}, legacy_ok=True))
    return {**existing, "reused": True} if reusable else None


def run_one_record(config: BenchmarkConfig, baseline: Baseline, arrays: CifarArrays, pruner: str,
                   sparsity: float, seed: int, device: torch.device, out_dir: Path,
                   progress: bool = True, code: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The record for one (pruner, sparsity, seed), reusing a finished one when its hash matches.

    Returns the record with ``reused`` set to whether it came from disk. ``code`` (the driver's
    ``git_state``: commit, dirty) is stored in a new record as ``code``, so a grid made over several
    commits says which record ran at which; it is not part of the key (records stay reusable).
    """
    name = record_name(pruner, sparsity, seed)
    key = record_key(config, baseline.key_hash, pruner, sparsity, seed)
    key_hash = stable_hash(key)
    path = out_dir / "runs" / f"{name}.json"
    existing = _load_record(path)
    provenance = record_provenance(baseline, arrays)
    if existing is not None:
        if _reusable(existing, key_hash, provenance):
            return {**existing, "reused": True}
        reason = ("it failed" if existing.get("status") == "failed" and existing.get("run_hash") == key_hash
                  else "its configuration differs")
        _logger.info("%s: redoing the record in %s (%s)", name, path, reason)
    work_dir = out_dir / "work" / f"{name}-{key_hash}"
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    scratch, spec = split_scratch(pruner)
    record: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_hash": key_hash, "run_key": key,
                              "pruner": record_label(pruner), "pruner_name": pruner_spec(spec)[1],
                              "sparsity": float(sparsity), "seed": int(seed), **provenance,
                              "started": started}
    if code is not None:
        record["code"] = {"commit": code.get("commit"), "dirty": code.get("dirty")}
    try:
        experiment = run_scratch_e if scratch else run_experiment
        result = experiment(config, baseline, arrays, spec, sparsity, seed, device, work_dir, progress)
        record.update(status="ok", **result)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - recorded; the benchmark carries on and exits non-zero
        record.update(status="failed", error=_failure(error))
        _logger.error("%s failed at step %s: %s", name, record["error"]["step"], error)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(record, path)
    if record["status"] == "ok":
        shutil.rmtree(work_dir, ignore_errors=True)
    return {**record, "reused": False}


def prepare(config: BenchmarkConfig, progress: bool = True) -> tuple:
    """Threads, device, data and the (cached or freshly trained) baseline: ``(device, arrays, baseline)``."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    try:
        arrays = subsample(load_data(config.data), config.train_size, config.test_size)
    except (FileNotFoundError, ValueError, OSError, EOFError, zipfile.BadZipFile, urllib.error.URLError,
            RuntimeError) as error:
        # a missing, truncated or foreign file, or a dataset host that cannot be reached
        raise BenchmarkInputError(f"data={config.data!r}: {type(error).__name__}: {error}") from error
    _logger.info("data: %s, %d train / %d test images", arrays.location, len(arrays.y_train), len(arrays.y_test))
    baseline = load_or_train_baseline(config, arrays, device, progress=progress)
    return device, arrays, baseline


def _record_task(shared: Dict[str, Any], task: Tuple[str, Dict[str, Any]]) -> Dict[str, Any]:
    """One plan entry ``(name, {sparsity, seed, pruner})``, wherever the executor runs it (the device
    is resolved there: a Ray worker may hold a GPU the driver does not)."""
    sparsity, seed, pruner = (task[1][field] for field in ("sparsity", "seed", "pruner"))
    config, arrays = shared["config"], shared["arrays"]
    if shared.get("remote"):
        _quiet_worker()
        # Ray hands out read-only views of its object store; torch wants writable arrays
        arrays = dataclasses.replace(arrays, **{name: np.array(getattr(arrays, name)) for name in
                                                ("x_train", "y_train", "x_test", "y_test")})
    return run_one_record(config, shared["baseline"], arrays, pruner, sparsity, seed,
                          resolve_device(task_device(config, bool(shared.get("remote")))), shared["out_dir"],
                          shared["progress"], shared.get("code"))


def task_device(config: BenchmarkConfig, remote: bool) -> str:
    """The device name a record runs on: ``config.device``, except that ``auto`` means ``cpu`` in
    a Ray task that reserved no GPU (Ray leaves every GPU visible to such a task, and using one
    unreserved would share it with the tasks that did reserve it).

    >>> from benchmarks.core.config import preset_config
    >>> task_device(preset_config("smoke"), remote=True), task_device(preset_config("paper"), remote=True)
    ('cpu', 'auto')
    """
    if remote and config.device == "auto" and config.ray_num_gpus == 0:
        return "cpu"
    return config.device


def _quiet_worker() -> None:
    """In a worker process, what ``benchmarks.run`` does for the driver: NNI's import-time warnings
    and its own stdout handler off (the worker's log lines reach the driver through Ray)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"nni\.")
    warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*", category=UserWarning)
    from nni.runtime.log import silence_stdout  # (the NNI compat patches come with registry.create_pruner)

    silence_stdout()
    for name in ("nni", "matplotlib", "PIL"):  # as benchmarks.run quietens them in the driver
        logging.getLogger(name).setLevel(logging.WARNING)


def _lost_record(config: BenchmarkConfig, baseline_hash: str, entry: tuple, error: BaseException) -> Dict[str, Any]:
    """A failed record for an entry whose executor lost it (e.g. a Ray worker died); kept in memory
    only, so the next invocation redoes it."""
    sparsity, seed, pruner = entry
    key = record_key(config, baseline_hash, pruner, sparsity, seed)
    return {"schema_version": SCHEMA_VERSION, "run_hash": stable_hash(key), "run_key": key,
            "pruner": record_label(pruner), "pruner_name": pruner_spec(split_scratch(pruner)[1])[1],
            "sparsity": float(sparsity), "seed": int(seed), "status": "failed",
            "error": {**_failure(error), "step": "executor"}, "reused": False}


def stored_results(out_dir: Path) -> Dict[str, Any]:
    """The results.json of the ``benchmarks.run`` output directory ``out_dir``, for ``--report-only``,
    read without changing anything (a corrupt file stays where it is). Raises
    :class:`BenchmarkInputError` when it is missing, corrupt, not a benchmarks.run output or lacks
    what a report renders."""
    path = Path(out_dir) / "results.json"
    fix = "run the benchmark into this --out-dir first (without --report-only)"
    if not path.is_file():
        raise BenchmarkInputError(f"--report-only: {path} is missing; {fix}")
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchmarkInputError(
            f"--report-only: {path} is corrupt ({type(error).__name__}: {error}), so there is nothing to re-render "
            f"from; rerun the command without --report-only (it sets the file aside and reuses the finished "
            f"records in runs/)") from None
    problem = run_output_problem(stored, path)
    if problem is not None:
        raise BenchmarkInputError(f"--report-only: {problem}; {fix}")
    missing = [key for key in ("packages", "git", "machine") if not isinstance(stored.get(key), dict)]
    missing += [] if "key_hash" in stored["baseline"] else ["baseline.key_hash"]
    if missing:
        raise BenchmarkInputError(f"--report-only: {path} lacks {missing}; {fix}")
    return stored


def _peek_record(path: Path) -> Optional[Dict[str, Any]]:
    """The record file at ``path`` if it is a usable record, read without moving anything aside."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if record_problem(record) is None else None


def check_report_only(config: BenchmarkConfig, out_dir: Path,
                      command_line: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What ``--report-only`` would render from ``out_dir`` with ``config``, checked without writing
    anything: the stored results (:func:`stored_results`), and at least one finished record of the
    plan. A command that matches none of the stored records (another preset, other settings) is
    refused rather than rendered as an empty report over the stored one; the error names the
    command stored there, or, when ``command_line`` (without ``--report-only``) is that command,
    says the records are under keys of an older version. Returns the stored results."""
    out_dir = Path(out_dir)
    stored = stored_results(out_dir)
    baseline_hash = stored["baseline"]["key_hash"]
    plan = benchmark_plan(config)
    for sparsity, seed, pruner in plan:
        record = _peek_record(out_dir / "runs" / f"{record_name(pruner, sparsity, seed)}.json")
        if record is not None and _reusable(record, stable_hash(record_key(config, baseline_hash, pruner, sparsity,
                                                                           seed)), {}, legacy_ok=True):
            return stored
    command = stored.get("command_line")
    if command_line is not None and list(command_line) == command:
        raise BenchmarkInputError(
            f"--report-only: the command stored in {out_dir / 'results.json'} matches none of the records in "
            f"{out_dir / 'runs'}: they were made under keys an older version computed (compare a record's run_key "
            f"with the config), so this version cannot re-render them; keep the report as it is, or rerun without "
            f"--report-only (into a new --out-dir) to redo them")
    made_by = (f"re-render with the command stored there: {shlex.join(command)} --report-only"
               if isinstance(command, list) and all(isinstance(arg, str) for arg in command)
               else "pass the command that made them")
    raise BenchmarkInputError(
        f"--report-only: this command matches none of the records in {out_dir / 'runs'} (it plans {len(plan)} "
        f"records, none stored under its settings), so its report would be empty; {made_by}")


def render_stored(config: BenchmarkConfig, *, preset: str, out_dir: Path, command_line: Sequence[str]) -> int:
    """Rewrite ``out_dir``'s results.json, report.md and plots from the records already there, with
    this version's summary and report code; prunes, trains and measures nothing (``--report-only``).

    The plan comes from ``config`` (so pass the command that made the records); the baseline and
    the measurement context (packages, git, machine, data) come from the stored results.json, so
    the report keeps describing the runs that made the numbers. A plan entry with no finished
    record stays missing: status ``incomplete``, and the log names the missing records. Returns 0.
    Raises :class:`BenchmarkInputError` (and writes nothing) when :func:`check_report_only` refuses:
    no readable results.json of a benchmarks.run output, or a plan that matches no stored record.
    """
    out_dir = Path(out_dir).resolve()
    check_report_only(config, out_dir, command_line)  # before the lock file: a refusal creates nothing
    with process_lock(out_dir, "benchmark outputs"):
        stored = check_report_only(config, out_dir, command_line)  # again, now that no other process can change it
        context = {key: stored[key] for key in ("packages", "git", "machine", "data")}
        plan = benchmark_plan(config)
        state = BenchmarkState(config, preset, list(command_line), context, stored["baseline"], plan,
                               rendered_by={"git": git_state(REPO_ROOT, ignore=[out_dir]),
                                            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        pending = state.load_finished(out_dir, stored["baseline"]["key_hash"])
        missing = [record_name(pruner, sparsity, seed) for sparsity, seed, pruner in pending]
        state.status = state.final_status()
        write_outputs(state, out_dir)
        if missing:
            _logger.warning("report only: %d of %d records not finished, left out: %s (rerun without "
                            "--report-only to run them)", len(missing), len(plan), ", ".join(missing))
        _logger.info("report only: %d records rendered into %s", len(state.records), out_dir / "report.md")
        return 0


class GridExperiment(Experiment):
    """The thesis' pruning grid on the one experiment loop (:func:`benchmarks.core.framework.run`).

    Its records live one file per plan entry under ``runs/`` (made by :func:`run_one_record`,
    which reuses a finished file of the same key and provenance), so the loop's hooks read them
    from there rather than from results.json; results.json and the report are built by
    :class:`BenchmarkState`. ``setup`` loads the data and the baseline and refuses an out-dir
    made with another baseline or data set; a record an executor lost becomes a failed record
    (:func:`_lost_record`), kept in memory only so the next invocation redoes it.
    """

    module = "benchmarks.run"
    presets: ClassVar[Mapping[str, Any]] = {}  # benchmarks.run's parser resolves the preset
    records_field = "runs"
    extras_interval_s = PLOT_INTERVAL_S
    lock_name = "benchmark outputs"

    def __init__(self, config: BenchmarkConfig, preset: str, command_line: Sequence[str]) -> None:
        super().__init__()
        self.config = config
        self.preset = preset
        self.command_line = list(command_line)
        self.grid: Optional[BenchmarkState] = None
        self.baseline: Optional[Baseline] = None
        self.arrays: Optional[CifarArrays] = None
        self.reused = 0

    def config_dict(self) -> Dict[str, Any]:
        return self.config.to_dict()

    def load_stored(self, out_dir: Path, fresh: bool) -> Optional[Dict[str, Any]]:
        stored = None if fresh else load_json_or_none(out_dir / "results.json")
        return stored if isinstance(stored, dict) else None

    def setup(self, progress: bool) -> Dict[str, Any]:
        stored = self.state.stored or {}
        self.device, self.arrays, self.baseline = prepare(self.config, progress)
        mismatch = (baseline_mismatch(stored.get("baseline"), {**self.baseline.info, "key_hash": self.baseline.key_hash})
                    or data_set_mismatch(stored.get("data"), self.arrays))
        if mismatch:
            raise BenchmarkInputError(mismatch)
        context = {"packages": package_versions(), "git": git_state(REPO_ROOT, ignore=[self.state.out_dir]),
                   "machine": machine_info(self.device), "data": self.arrays.describe()}
        latency = measure_speed(self.baseline.fresh_model().to(self.device), self.config, self.device)
        self.grid = BenchmarkState(self.config, self.preset, self.command_line, context,
                                   _baseline_summary(self.baseline, latency), benchmark_plan(self.config))
        return context

    def plan(self) -> List[Tuple[str, Dict[str, Any]]]:
        return [(record_name(pruner, sparsity, seed), {"sparsity": sparsity, "seed": seed, "pruner": pruner})
                for sparsity, seed, pruner in self.grid.plan]

    def finished_records(self, state: RunState) -> Dict[str, Dict[str, Any]]:
        # records made before they stored their provenance are vouched for only by a readable
        # results.json whose baseline matched (checked in setup)
        legacy_ok = isinstance((state.stored or {}).get("baseline"), dict)
        self.grid.load_finished(state.out_dir, self.baseline.key_hash,
                                record_provenance(self.baseline, self.arrays), legacy_ok)
        self.reused = len(self.grid.records)
        if self.reused:
            _logger.info("%d of %d records already finished in %s, reused", self.reused, len(state.plan),
                         state.out_dir / "runs")
        return self.grid.records  # the same mapping: the loop adds to what the results are built from

    def is_finished(self, key: str, inputs: Dict[str, Any], record: Optional[Dict[str, Any]]) -> bool:
        return record is not None  # load_finished took only reusable records

    def record_task(self, state: RunState, *, progress: bool, remote: bool) -> Tuple[Callable, Dict[str, Any]]:
        return _record_task, {"config": self.config, "baseline": self.baseline, "arrays": self.arrays,
                              "out_dir": state.out_dir, "progress": progress, "remote": remote,
                              "code": self.grid.context.get("git")}

    def accept_record(self, key: str, record: Dict[str, Any]) -> Dict[str, Any]:
        record = dict(record)
        self.reused += record.pop("reused")  # finished meanwhile by another process sharing the out-dir
        return record

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        if record["status"] != "ok":
            return f"{key}: failed at step {record['error']['step']}: {record['error']['message']}"
        after_bn = "-" if "acc_after_bn" not in record else f"{record['acc_after_bn']:.4f}"
        return (f"{key}: acc after pruning {record['acc_after_pruning']:.4f}, after BN re-estimation {after_bn}, "
                f"final {record['recoverability']:.4f}")

    def lost_record(self, key: str, inputs: Dict[str, Any], error: BaseException) -> Dict[str, Any]:
        return _lost_record(self.config, self.baseline.key_hash,
                            (inputs["sparsity"], inputs["seed"], inputs["pruner"]), error)

    def final_status(self, state: RunState) -> str:
        return self.grid.final_status()

    def render(self, results: Dict[str, Any]) -> str:
        out_dir = self.state.out_dir
        return render_report(results, {title: name for title, name in PLOT_FILES.items() if (out_dir / name).is_file()})

    def write_outputs(self, state: RunState, extras: bool = True) -> Dict[str, Any]:
        self.grid.status = state.status
        return write_outputs(self.grid, state.out_dir, plots=extras)


def run_benchmark(config: BenchmarkConfig, *, preset: str, out_dir: Path, command_line: Sequence[str],
                  progress: bool = True, executor: Any = None) -> int:
    """Run (or resume) the benchmark into ``out_dir``; 0 if every record succeeded, else 1.

    ``executor`` runs the records that are not finished yet (default: :class:`LocalExecutor`, in
    this process; :class:`benchmarks.core.executors.RayExecutor` runs them as Ray tasks). The baseline
    is trained (or loaded) here, before any record starts, and every record lands in
    ``out_dir/runs`` whichever executor ran it.

    Raises ``KeyboardInterrupt`` after leaving consistent files behind (status ``interrupted``).
    """
    experiment = GridExperiment(config, preset, command_line)
    out_dir = Path(out_dir).resolve()  # Ray workers see the same absolute path on a shared filesystem
    run(experiment, out_dir, command=shlex.join(command_line), progress=progress, executor=executor)
    failed = experiment.grid.failed()
    _logger.info("done: %d records (%d reused from earlier runs), %d failed; report in %s",
                 len(experiment.grid.plan), experiment.reused, len(failed), out_dir / "report.md")
    return 0 if not failed else 1
