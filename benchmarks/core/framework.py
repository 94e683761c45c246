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
``--out-dir``, ``--fresh``, ``--no-progress``), the out-dir lock (:func:`benchmarks.core.store.process_lock`:
one process per directory), resuming (a stored record is reused when its ``record_hash``
matches; others are redone), quarantine of unusable records, and ``results.json`` +
``report.md`` rewritten atomically after every record. ``results.json`` holds
``schema_version``, ``experiment``, ``config``, what ``setup`` returned, the current
invocation (``command``, ``versions``, ``git``, ``machine``), every invocation so far
(``invocations``) and the records (under ``records_field``). A directory holding results of
another configuration is refused unless ``--fresh``.

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
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, Type

import torch
from tqdm.auto import tqdm

from .config import apply_overrides, stable_hash
from .data import REPO_ROOT
from .environment import git_state, machine_info, package_versions
from .store import (LockedError, UnwritablePathError, atomic_write_json, atomic_write_text, load_json_or_none,
                    process_lock, quarantine, unwritable_path_message, writable_directory)

SCHEMA_VERSION = 1
#: a record as the plan names it: (key in results.json, the inputs it depends on)
PlannedRecord = Tuple[str, Dict[str, Any]]


class ExperimentUsageError(ValueError):
    """The command asks for something the experiment cannot do (reported without a traceback)."""


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

    def __init__(self) -> None:
        self.config: Any = None
        self.args: argparse.Namespace = argparse.Namespace()
        self.device = torch.device("cpu")  # recorded as the machine's device; setup may change it

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
        entries of results.json."""
        return {}

    @abc.abstractmethod
    def plan(self) -> List[PlannedRecord]:
        """Every record of this invocation, in order: ``(key, inputs)``."""

    @abc.abstractmethod
    def run_record(self, key: str, inputs: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        """One record (JSON-able); an exception stops the experiment after saving what is done."""

    @abc.abstractmethod
    def render(self, results: Dict[str, Any]) -> str:
        """The Markdown report of ``results`` (the content of results.json)."""

    def write_extras(self, results: Dict[str, Any], out_dir: Path) -> None:
        """Further outputs (plots), rewritten with the report."""

    def describe(self, key: str, record: Dict[str, Any]) -> str:
        """The log line of a finished record."""
        return key


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
    if stored.get("config") != config:
        before = stored.get("config") if isinstance(stored.get("config"), dict) else {}
        differ = "; ".join(f"{key}: stored {before.get(key, '(none)')}, asked {config.get(key, '(none)')}"
                           for key in sorted(set(before) | set(config), key=str)
                           if before.get(key) != config.get(key))
        raise ExperimentUsageError(
            f"{path} holds results of a different configuration; rerun with --fresh to replace them "
            f"or pick another --out-dir ({differ})")
    stored[experiment.records_field] = _stored_records(experiment, stored, path)
    return stored


def write_outputs(experiment: Experiment, results: Dict[str, Any], out_dir: Path) -> None:
    """results.json, report.md and the experiment's extras, each written atomically."""
    atomic_write_json(results, out_dir / "results.json")
    atomic_write_text(experiment.render(results), out_dir / "report.md")
    experiment.write_extras(results, out_dir)


def run(experiment: Experiment, out_dir: Path, *, command: str, fresh: bool = False,
        progress: bool = True) -> Dict[str, Any]:
    """Run (or resume) a configured ``experiment`` into ``out_dir``; returns the results.

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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    field = experiment.records_field
    with process_lock(out_dir, experiment.module):
        stored = load_results(experiment, out_dir, fresh)
        context = experiment.setup(progress)
        records: Dict[str, Dict[str, Any]] = dict(stored[field]) if stored else {}
        invocation = dict(command=command, versions=package_versions(), git=git_state(REPO_ROOT, ignore=[out_dir]),
                          machine=machine_info(experiment.device), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          **{f"{field}_before": len(records)})
        invocations = list(stored.get("invocations", [])) if stored else []
        invocations.append(invocation)
        results: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "experiment": experiment.module,
                                   "config": experiment.config_dict(), **context,
                                   **{k: invocation[k] for k in ("command", "versions", "git", "machine")},
                                   "invocations": invocations, field: records}
        plan = experiment.plan()
        hashes = {key: record_hash(experiment, key, inputs) for key, inputs in plan}
        stale = [key for key, _ in plan if key in records and records[key].get("record_hash") != hashes[key]]
        if stale:
            experiment.logger.info("redoing %d stored %s made with other inputs or an older version: %s",
                                   len(stale), field, ", ".join(stale))
        todo = [(key, inputs) for key, inputs in plan if records.get(key, {}).get("record_hash") != hashes[key]]
        experiment.logger.info("%d %s to do, %d already in %s", len(todo), field, len(plan) - len(todo),
                               out_dir / "results.json")
        for key, inputs in tqdm(todo, desc=field, disable=not progress):
            records[key] = {**experiment.run_record(key, inputs, records), "record_hash": hashes[key]}
            write_outputs(experiment, results, out_dir)
            experiment.logger.info("%s", experiment.describe(key, records[key]))
        write_outputs(experiment, results, out_dir)
    return results


def build_parser(experiment: Experiment, description: Optional[str] = None) -> argparse.ArgumentParser:
    """The framework's flags, then the experiment's."""
    parser = argparse.ArgumentParser(prog=f"python -m {experiment.module}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(experiment.presets), help=experiment.preset_help)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of the preset (repeatable; lists comma-separated)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output directory (results.json, report.md; rerunning resumes)")
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

    def usage_error(message: str) -> NoReturn:
        parser.exit(2, f"{prog}: error: {message}\n")

    try:
        config = apply_overrides(experiment.presets[args.preset], args.assignments)
        experiment.args = args
        experiment.config = experiment.configure(config, args)
    except (ValueError, TypeError) as error:
        usage_error(str(error))
    out_dir = args.out_dir if args.out_dir is not None else experiment.default_out_dir(args.preset)
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
