"""One experiment framework: an experiment says what its records are, how to run one and how
to render the report; this module does the rest, the same way for every experiment.

An experiment (a subclass of :class:`Experiment`) supplies

* ``presets`` (name -> config dataclass) and, if it likes, flags of its own (``add_arguments``)
  turned into its config (``configure``);
* ``plan()``: the records, in order, each a key (its name in results.json) and the inputs it
  depends on (hashed: a record whose inputs changed is redone);
* ``run_record(key, inputs, records)``: one record, a JSON-able dict (``records`` holds the
  finished ones, for records that build on others);
* ``render(results)``: the Markdown report (and ``write_extras`` for plots, if any).

The framework gives the command line (``--preset``, ``--set KEY=VALUE`` on any config field,
``--out-dir``, ``--fresh``, ``--no-progress``) and the one experiment loop, :func:`run`: the
out-dir lock (:func:`benchmarks.core.store.process_lock`: one process per directory), the
stored records, ``setup``, the plan, the finished records reused and the rest handed to an
executor (:mod:`benchmarks.core.executors`: in this process, or as Ray tasks), the outputs
rewritten atomically after every record (extras such as plots at most every
``extras_interval_s``), a record its executor lost turned into a failed record, and status
``interrupted`` written on Ctrl-C / SIGTERM before the interrupt goes on.

By default the records live in ``results.json`` (a stored record is reused when its
``record_hash`` matches; others are redone; malformed ones are quarantined), run in this
process, and an exception stops the experiment after saving what is done. ``results.json``
then holds ``schema_version``, ``experiment``, ``config``, what ``setup`` returned, the current
invocation (``command``, ``versions``, ``git``, ``machine``), every invocation so far
(``invocations``) and the records (under ``records_field``). A directory holding results of
another configuration is refused unless ``--fresh``. An experiment whose records live
elsewhere overrides the loop's hooks (``load_stored``, ``finished_records``, ``is_finished``,
``record_task``, ``accept_record``, ``lost_record``, ``final_status``, ``write_outputs``): the pruning grid
(:mod:`benchmarks.grid.runner`) keeps one file per record under ``runs/``, runs them on any
executor, and keeps failed records.

A whole experiment fits in one small file; see docs/benchmarks.md ("A new experiment")::

    class Squares(Experiment):
        module = "benchmarks.squares"
        presets = {"smoke": SquaresConfig(numbers=[1, 2, 3])}

        def plan(self):
            return [(f"n{n}", {"n": n}) for n in self.config.numbers]

        def run_record(self, key, inputs, records):
            return {"square": inputs["n"] ** 2}

        def render(self, results):
            return "\\n".join(f"{k}: {r['square']}" for k, r in results["records"].items()) + "\\n"

    if __name__ == "__main__":
        raise SystemExit(main(Squares))
"""
from __future__ import annotations

import abc
import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from tqdm.auto import tqdm

from .cli import ConfigParser
from .config import stable_hash
from .data import REPO_ROOT
from .environment import git_state, machine_info, package_versions
from .executors import LocalExecutor
from .store import (LockedError, UnwritablePathError, atomic_write_json, atomic_write_text, load_json_or_none,
                    process_lock, quarantine, unwritable_path_message, writable_directory)

SCHEMA_VERSION = 1
#: a record as the plan names it: (key in results.json, the inputs it depends on)
PlannedRecord = Tuple[str, Dict[str, Any]]


class ExperimentUsageError(ValueError):
    """The command asks for something the experiment cannot do (reported without a traceback)."""


@dataclass
class RunState:
    """One invocation of :func:`run`: what the loop's hooks read and the outputs are built from."""

    out_dir: Path
    command: str
    #: what :meth:`Experiment.load_stored` found in ``out_dir`` (``None``: nothing usable)
    stored: Optional[Dict[str, Any]] = None
    #: what :meth:`Experiment.setup` returned
    context: Dict[str, Any] = field(default_factory=dict)
    plan: List[PlannedRecord] = field(default_factory=list)
    #: key -> record: the finished ones reused, then each as it lands
    records: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: ``running``, ``interrupted``, then :meth:`Experiment.final_status`
    status: str = "running"
    #: this invocation's command, versions, git state and machine
    invocation: Dict[str, Any] = field(default_factory=dict)


class Experiment(abc.ABC):
    """Base class of an experiment; see the module docstring for what a subclass supplies."""

    #: the module run as ``python -m MODULE``; also the logger's name
    module: ClassVar[str]
    #: preset name -> config dataclass (``--preset`` picks one, ``--set KEY=VALUE`` changes its fields)
    presets: ClassVar[Mapping[str, Any]]
    #: where the records sit in results.json, and what the log calls them
    records_field: ClassVar[str] = "records"
    #: bump when the way a record is made changes: every stored record is then redone
    record_version: ClassVar[int] = 1
    #: ``--preset`` help text
    preset_help: ClassVar[str] = "the starting configuration"
    #: while running, extras (plots) are redrawn at most this often, in seconds (always at the end)
    extras_interval_s: ClassVar[float] = 0.0

    def __init__(self) -> None:
        self.config: Any = None
        self.args: argparse.Namespace = argparse.Namespace()
        self.device = torch.device("cpu")  # recorded as the machine's device; setup may change it
        #: the invocation in progress (set by :func:`run` before ``setup``)
        self.state: Optional[RunState] = None

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(self.module)

    # ---------------------------------------------------------------- what a subclass may override

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this experiment (beyond the framework's)."""

    def default_out_dir(self, preset: str) -> Optional[Path]:
        """``--out-dir`` when not given; ``None`` makes ``--out-dir`` required."""
        return None

    def configure(self, config: Any, args: argparse.Namespace) -> Any:
        """The final config from the preset with ``--set`` applied and the parsed flags; raise
        :class:`ExperimentUsageError` (or ``ValueError``) naming the flag and the fix."""
        return config

    def config_dict(self) -> Dict[str, Any]:
        """The config as stored in results.json (and compared when resuming)."""
        return dataclasses.asdict(self.config)

    def setup(self, progress: bool) -> Dict[str, Any]:
        """Heavy preparation before any record (data, a baseline); returns extra top-level
        entries of results.json (``self.state.stored`` holds what the out-dir had, to check against)."""
        return {}

    @abc.abstractmethod
    def plan(self) -> List[PlannedRecord]:
        """Every record of this invocation, in order: ``(key, inputs)``."""

    def run_record(self, key: str, inputs: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        """One record (JSON-able); an exception stops the experiment after saving what is done.
        (Needed unless :meth:`record_task` is overridden.)"""
        raise NotImplementedError(f"{type(self).__name__} defines neither run_record nor record_task")

    @abc.abstractmethod
    def render(self, results: Dict[str, Any]) -> str:
        """The Markdown report of ``results`` (the content of results.json)."""

    def write_extras(self, results: Dict[str, Any], out_dir: Path) -> None:
        """Further outputs (plots), rewritten with the report."""

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        """The log line of a finished record."""
        return key

    # ------------------------------------- the loop's hooks (defaults: records inside results.json)

    @property
    def lock_name(self) -> str:
        """What the out-dir lock says holds the directory."""
        return self.module

    def load_stored(self, out_dir: Path, fresh: bool) -> Optional[Dict[str, Any]]:
        """What ``out_dir`` holds for this experiment (before ``setup``): :func:`load_results`."""
        return load_results(self, out_dir, fresh)

    def finished_records(self, state: RunState) -> Dict[str, Dict[str, Any]]:
        """The records the run starts from (``state.plan`` and ``state.stored`` are set): the stored
        ones; :meth:`is_finished` decides which of the plan are redone."""
        return dict(state.stored[self.records_field]) if state.stored else {}

    def is_finished(self, key: str, inputs: Dict[str, Any], record: Optional[Dict[str, Any]]) -> bool:
        """Whether the plan's record ``key`` needs no run: it is stored with the hash of these inputs."""
        return record is not None and record.get("record_hash") == record_hash(self, key, inputs)

    def record_task(self, state: RunState, *, progress: bool,
                    remote: bool) -> Tuple[Callable[[Any, Any], Dict[str, Any]], Any]:
        """``(function, shared)`` for the executor: ``function(shared, (key, inputs))`` makes one record
        (a module-level function, so that Ray can ship it; ``remote``: it runs in another process).
        Default: :meth:`run_record` in this process."""
        return run_record_in_process, (self, state.records)

    def accept_record(self, key: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """What the run keeps of a record its executor returned (default: the record as it is)."""
        return record

    def lost_record(self, key: str, inputs: Dict[str, Any], error: BaseException) -> Dict[str, Any]:
        """The record of a plan entry its executor lost (a Ray worker died); default: stop."""
        raise error

    def final_status(self, state: RunState) -> str:
        """The status written when the plan has been worked through."""
        return "complete"

    def results(self, state: RunState) -> Dict[str, Any]:
        """The content of results.json."""
        invocation = state.invocation
        return {"schema_version": SCHEMA_VERSION, "experiment": self.module, "config": self.config_dict(),
                **state.context, **{k: invocation[k] for k in ("command", "versions", "git", "machine")},
                "invocations": [*(state.stored.get("invocations", []) if state.stored else []), invocation],
                self.records_field: state.records}

    def write_outputs(self, state: RunState, extras: bool = True) -> Dict[str, Any]:
        """results.json, report.md and (if ``extras``) the extras, each written atomically; returns
        the results."""
        results = self.results(state)
        atomic_write_json(results, state.out_dir / "results.json")
        atomic_write_text(self.render(results), state.out_dir / "report.md")
        if extras:
            self.write_extras(results, state.out_dir)
        return results


def run_record_in_process(shared: Tuple[Experiment, Dict[str, Dict[str, Any]]],
                          task: PlannedRecord) -> Dict[str, Any]:
    """The default record task: ``experiment.run_record`` on the finished records so far, stamped
    with its ``record_hash``."""
    experiment, records = shared
    key, inputs = task
    return {**experiment.run_record(key, inputs, records), "record_hash": record_hash(experiment, key, inputs)}


def record_hash(experiment: Experiment, key: str, inputs: Dict[str, Any]) -> str:
    """What a stored record must carry to be reused: the hash of its key, inputs and the
    experiment's ``record_version``."""
    return stable_hash({"record_version": experiment.record_version, "key": key, "inputs": inputs})


def _stored_records(experiment: Experiment, stored: Dict[str, Any], path: Path) -> Dict[str, Dict[str, Any]]:
    """The usable records of a results file; records that are not JSON objects are moved to
    ``quarantine.json`` beside it (and redone), with a warning."""
    records = stored.get(experiment.records_field, {})
    usable = {key: record for key, record in records.items() if isinstance(record, dict)}
    bad = {key: record for key, record in records.items() if key not in usable}
    if bad:
        aside = path.with_name("quarantine.json")
        previous = load_json_or_none(aside)
        atomic_write_json({**(previous if isinstance(previous, dict) else {}), **bad}, aside)
        experiment.logger.warning("%d malformed record(s) in %s (%s): moved to %s and redone",
                                  len(bad), path, ", ".join(sorted(bad)), aside)
    return usable


def config_defaults(config: Any) -> Dict[str, Any]:
    """The JSON form of the defaults of a dataclass config's fields (``{}`` for other configs).

    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Config:
    ...     numbers: list = field(default_factory=lambda: [1, 2])
    ...     power: int = 2
    >>> config_defaults(Config(power=3))
    {'numbers': [1, 2], 'power': 2}
    """
    if not dataclasses.is_dataclass(config):
        return {}
    defaults = {}
    for item in dataclasses.fields(config):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def load_results(experiment: Experiment, out_dir: Path, fresh: bool) -> Optional[Dict[str, Any]]:
    """The results stored in ``out_dir`` for this experiment's config, ``None`` if there are
    none (or ``fresh``); a file of another configuration is refused, one of the wrong shape is
    moved aside."""
    path = out_dir / "results.json"
    stored = None if fresh else load_json_or_none(path)
    if stored is None:
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get(experiment.records_field, {}), dict):
        quarantine(path, ValueError(f"not a results file of {experiment.module} (no {experiment.records_field!r} "
                                    f"mapping)"))
        return None
    config = experiment.config_dict()
    before = stored.get("config") if isinstance(stored.get("config"), dict) else {}
    # a field added to the config after these results were made is taken at its default (a new
    # option's default keeps the old behaviour): the documented command still resumes them
    before = {**{key: value for key, value in config_defaults(experiment.config).items() if key not in before},
              **before}
    if before != config:
        differ = "; ".join(f"{key}: stored {before.get(key, '(none)')}, asked {config.get(key, '(none)')}"
                           for key in sorted(set(before) | set(config), key=str)
                           if before.get(key) != config.get(key))
        raise ExperimentUsageError(
            f"{path} holds results of a different configuration; rerun with --fresh to replace them "
            f"or pick another --out-dir ({differ})")
    stored[experiment.records_field] = _stored_records(experiment, stored, path)
    return stored


def run(experiment: Experiment, out_dir: Path, *, command: str, fresh: bool = False, progress: bool = True,
        executor: Any = None) -> Dict[str, Any]:
    """Run (or resume) a configured ``experiment`` into ``out_dir``; returns the results.

    The one experiment loop: lock, stored records, ``setup``, plan, the unfinished records to
    ``executor`` (default :class:`benchmarks.core.executors.LocalExecutor`), outputs after every
    record, status ``interrupted`` on ``KeyboardInterrupt`` (re-raised), then the final status.

    >>> import pathlib, tempfile
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     count: int = 2
    >>> class Doubles(Experiment):
    ...     module = "benchmarks.doubles"
    ...     presets = {"smoke": Config()}
    ...     def plan(self):
    ...         return [(f"n{n}", {"n": n}) for n in range(self.config.count)]
    ...     def run_record(self, key, inputs, records):
    ...         return {"double": 2 * inputs["n"]}
    ...     def render(self, results):
    ...         return f"{len(results['records'])} records\\n"
    >>> experiment = Doubles()
    >>> experiment.config = Config()
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> results = run(experiment, out, command="doctest", progress=False)
    >>> {key: record["double"] for key, record in results["records"].items()}
    {'n0': 0, 'n1': 2}
    >>> (out / "report.md").read_text()
    '2 records\\n'
    """
    executor = executor if executor is not None else LocalExecutor()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    field_name = experiment.records_field
    with process_lock(out_dir, experiment.lock_name):
        state = RunState(out_dir=out_dir, command=command, stored=experiment.load_stored(out_dir, fresh))
        experiment.state = state
        state.context = experiment.setup(progress)
        state.plan = experiment.plan()
        state.records = experiment.finished_records(state)
        state.invocation = dict(command=command, versions=package_versions(),
                                git=git_state(REPO_ROOT, ignore=[out_dir]), machine=machine_info(experiment.device),
                                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                **{f"{field_name}_before": len(state.records)})
        todo = [(key, inputs) for key, inputs in state.plan
                if not experiment.is_finished(key, inputs, state.records.get(key))]
        stale = [key for key, _ in todo if key in state.records]
        if stale:
            experiment.logger.info("redoing %d stored %s made with other inputs, an older version or that failed: "
                                   "%s", len(stale), field_name, ", ".join(stale))
        experiment.logger.info("%d %s to do, %d already in %s", len(todo), field_name, len(state.plan) - len(todo),
                               out_dir)
        if len(todo) < len(state.plan):
            experiment.write_outputs(state)  # once for the reused records, not once per record
        local = isinstance(executor, LocalExecutor)
        function, shared = experiment.record_task(state, progress=progress and local, remote=not local)
        bar = tqdm(total=len(state.plan), initial=len(state.plan) - len(todo), desc=field_name, disable=not progress)
        last_extras = time.monotonic()
        try:
            for (key, inputs), outcome in executor.map(function, shared, todo):
                if isinstance(outcome, BaseException):
                    experiment.logger.error("%s: lost by the %s executor: %s: %s", key, executor.name,
                                            type(outcome).__name__, outcome)
                    outcome = experiment.lost_record(key, inputs, outcome)
                state.records[key] = experiment.accept_record(key, outcome)
                experiment.logger.info("%s", experiment.describe(key, state.records[key]))
                redraw = time.monotonic() - last_extras >= experiment.extras_interval_s
                experiment.write_outputs(state, extras=redraw)
                last_extras = time.monotonic() if redraw else last_extras
                bar.update(1)
                bar.set_postfix_str(key)
        except KeyboardInterrupt:
            state.status = "interrupted"
            experiment.write_outputs(state)
            raise
        finally:
            bar.close()
        state.status = experiment.final_status(state)
        return experiment.write_outputs(state)


def build_parser(experiment: Experiment, description: Optional[str] = None) -> ConfigParser:
    """The command-line convention of ``benchmarks/`` (:class:`benchmarks.core.cli.ConfigParser`:
    ``--preset``, required here, ``--set``, ``--out-dir``), the framework's ``--fresh`` and
    ``--no-progress``, then the experiment's flags."""
    parser = ConfigParser(f"python -m {experiment.module}", experiment.presets, description=description,
                          default_preset=None, preset_help=experiment.preset_help,
                          out_dir_help="output directory (results.json, report.md; rerunning resumes)")
    parser.add_argument("--fresh", action="store_true", help="discard results already in --out-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    experiment.add_arguments(parser)
    return parser


def main(experiment_class: Type[Experiment], argv: Optional[Sequence[str]] = None,
         description: Optional[str] = None) -> int:
    """The command line of an experiment: ``raise SystemExit(main(MyExperiment))``.

    A usage error (a bad flag value, another configuration in ``--out-dir``, a directory in use or
    one it cannot write) exits with status 2 and one line naming the input, as every command line
    in ``benchmarks/`` does; rerunning the same command resumes.
    """
    experiment = experiment_class()
    parser = build_parser(experiment, description)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = parser.prog
    usage_error = parser.usage_error
    try:
        config = parser.resolve(args)
        experiment.args = args
        experiment.config = experiment.configure(config, args)
    except (ValueError, TypeError) as error:
        usage_error(str(error))
    out_dir = args.out_dir if args.out_dir is not None else experiment.default_out_dir(parser.preset_name(args))
    if out_dir is None:
        parser.error("--out-dir is required")
    try:
        writable_directory(out_dir, "--out-dir")
    except UnwritablePathError as error:
        usage_error(str(error))
    command = f"{prog} " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        results = run(experiment, out_dir, command=command, fresh=args.fresh, progress=not args.no_progress)
    except (ExperimentUsageError, LockedError) as error:
        usage_error(str(error))
    except OSError as error:  # a file it must write there turned out read-only
        message = unwritable_path_message(error, {"--out-dir": out_dir})
        if message is None:
            raise
        usage_error(message)
    print(f"{len(results[experiment.records_field])} {experiment.records_field} in {out_dir / 'results.json'}; "
          f"report: {out_dir / 'report.md'}")
    return 0
