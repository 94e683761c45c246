"""Command line of the pruning benchmark (CIFAR VGG-16; L1 / L2 / FPGM / topological / random).

Usage::

    python -m benchmarks.run --preset smoke
    python -m benchmarks.run --preset cpu --seeds 0,1,2 --sparsities 0.3,0.5,0.7
    python -m benchmarks.run --preset paper --data cifar10:data/cifar10 --set finetune_epochs=20
    RAY_ADDRESS=head:6379 python -m benchmarks.run --preset paper --executor ray   # records as Ray tasks
    python -m benchmarks.run --preset cpu --out-dir OUT --report-only   # re-render OUT's report, run nothing

Exit status: 0 when every run succeeded, 1 when some pruner failed (recorded in the report),
2 on a usage error, 130 when interrupted by Ctrl-C and 143 by SIGTERM (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .core.cli import ConfigParser
from .core.config import PRESETS, BenchmarkConfig, preset_config, validate
from .core.data import REPO_ROOT

DEFAULT_OUT_ROOT = REPO_ROOT / "benchmarks" / "runs"
_QUIET_LOGGERS = ("nni", "matplotlib", "PIL")


def _keys_epilog() -> str:
    lines = ["config keys for --set KEY=VALUE (lists: comma-separated; pruner_options: JSON), "
             "with each preset's value:", ""]
    presets = {name: preset_config(name) for name in PRESETS}
    for spec in dataclasses.fields(BenchmarkConfig):
        values = ", ".join(f"{name}={getattr(config, spec.name)!r}" for name, config in presets.items())
        lines.append(f"  {spec.name}: {spec.metadata['help']}")
        lines.append(f"      [{values}]")
    lines += ["", "outputs in --out-dir: results.json (schema-versioned, everything), report.md (tables), "
              "recovery.png, accuracy_vs_flops.png, runs/*.json (one per pruner x sparsity x seed), benchmark.log.",
              "Rerunning the same command resumes: finished records and the cached baseline are reused; "
              "failed records are retried.",
              "exit status: 0 all runs succeeded, 1 some run failed (see report.md), 2 usage error, 130 interrupted (143 on SIGTERM)."]
    return "\n".join(lines)


def build_parser() -> ConfigParser:
    """The grid's command line, on the convention of every command line in ``benchmarks/``
    (:class:`benchmarks.core.cli.ConfigParser`: ``--preset`` (required here), ``--set``,
    ``--out-dir``); the older flags (``--data``, ``--pruners``, ...) are shorthands for config keys,
    applied after ``--set``."""
    parser = ConfigParser(
        "python -m benchmarks.run", {name: preset_config(name) for name in PRESETS},
        description="Prune a CIFAR VGG-16 with each pruner at the same NNI config list, speed it up with NNI "
                    "ModelSpeedup, fine-tune it, and report parameters, FLOPs, accuracy after pruning, "
                    "recoverability, convergence, pruning time and latency (mean ± std over seeds).",
        default_preset=None,
        preset_help="smoke: tiny model and data, every step in minutes (CI); cpu: full-width VGG-16 on the "
                    "offline CIFAR-10 subset, about 4 h on 2 CPU cores (+1 h for the baseline, once); full: "
                    "the whole offline CIFAR-10; paper: full CIFAR-10, thesis-scale epochs, for a GPU",
        out_dir_help="output directory (default: benchmarks/runs/<preset> in the repository)")
    parser.epilog = _keys_epilog()
    parser.add_shorthand("--data", field="data",
                         help="'auto' (the whole offline CIFAR-10, else the subset), 'subset', 'cifar10:ROOT' "
                              "(torchvision download into ROOT) or PATH.npz; overrides data")
    parser.add_shorthand("--pruners", field="pruners",
                         help="comma-separated pruner names, e.g. l1,l2,fpgm,topological,random")
    parser.add_shorthand("--sparsities", field="sparsities", help="comma-separated sparse ratios, e.g. 0.3,0.5,0.7")
    parser.add_shorthand("--seeds", field="seeds", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_shorthand("--cache-dir", field="cache_dir", help="baseline cache directory (overrides cache_dir)")
    parser.add_shorthand("--backend", field="backend", metavar="{nni,torch-pruning}",
                         help="who prunes (overrides backend; default nni): nni = the registry pruner's masks and "
                              "NNI ModelSpeedup; torch-pruning = Torch-Pruning's BasePruner with the matching "
                              "importance (l1, l2, fpgm, random, topological, betti), the same per-layer channel "
                              "counts")
    parser.add_argument("--executor", default="local", choices=("local", "ray"),
                        help="where the records run: local (this process, one after the other; default) or ray "
                             "(one Ray task per record on the cluster at RAY_ADDRESS, else a local one; requests "
                             "ray_num_cpus / ray_num_gpus each; needs the 'ray' extra; see docs/benchmarks.md)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved configuration as JSON and exit")
    parser.add_argument("--baseline-only", action="store_true",
                        help="train (or resume) and cache the baseline, print where it is cached, and exit")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.json, report.md and the plots in --out-dir from the records already "
                             "there, with this version's report code (same command otherwise); prunes, trains and "
                             "measures nothing, and leaves unfinished records out (status 'incomplete')")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (log lines only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_config(args: argparse.Namespace) -> BenchmarkConfig:
    """Preset, then ``--set`` assignments, then the dedicated flags; validated (the backend's
    pruner names by the backends)."""
    from .grid.backends import check_backend_pruners

    return check_backend_pruners(validate(build_parser().resolve(args)))


@contextmanager
def _logging_to(out_dir: Path, verbose: bool) -> Iterator[None]:
    """Log to stderr and to ``out_dir/benchmark.log`` for the duration of the run (then restore)."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    previous_level = root.level
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(out_dir / "benchmark.log")]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    quiet = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def _sigterm_as_interrupt(terminated: list) -> Iterator[None]:
    """SIGTERM (``docker stop``, Slurm, ``kill``) handled like Ctrl-C: the run writes its outputs
    with status ``interrupted`` and exits 143. ``terminated`` gets an entry when it happened.
    Only in the main thread (signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (see the module docstring)."""
    # NNI 3.0 warns about torch's pytree API on import; nothing a benchmark user can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"nni\.")
    warnings.filterwarnings("ignore", message=r".*already registered as pytree node.*", category=UserWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    if args.report_only and (args.baseline_only or args.executor != "local"):
        parser.error("--report-only runs nothing: it cannot be combined with --baseline-only or --executor ray")
    if args.show_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from .core.executors import ExecutorError, make_executor

    try:
        # checked before any work: Ray missing is a usage error, not a crash after the baseline
        executor = make_executor(args.executor, config.ray_num_cpus, config.ray_num_gpus,
                                 threads=config.num_threads or max(1, int(config.ray_num_cpus)))
    except ExecutorError as error:
        parser.error(str(error))
    out_dir = args.out_dir if args.out_dir is not None else DEFAULT_OUT_ROOT / args.preset
    from .grid.runner import BenchmarkInputError, check_report_only, prepare, render_stored, run_benchmark
    from .core.store import LockedError, UnwritablePathError, unwritable_path_message, writable_directory

    command_line = ["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)]
    # the report's "Command:" is the one that reproduces (and resumes) the records
    rendering_command = [arg for arg in command_line if arg != "--report-only"]
    try:  # before anything is created: a refused command leaves no directory, lock or log behind
        if args.report_only:
            check_report_only(config, out_dir, rendering_command)
        else:
            # the cache too, before the log starts: an unwritable --cache-dir is one line on
            # stderr, like an unwritable --out-dir (found running as a non-root user in Docker)
            from .core.baseline import cache_dir_for

            writable_directory(out_dir, "--out-dir")
            writable_directory(cache_dir_for(config), "--cache-dir")
    except (BenchmarkInputError, UnwritablePathError) as error:
        print(f"python -m benchmarks.run: error: {error}", file=sys.stderr)
        return 2

    from nni.runtime.log import silence_stdout

    silence_stdout()  # NNI's own stdout handler would repeat what our handlers already log
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .core.baseline import cache_dir_for

    terminated = []
    try:
        with _logging_to(out_dir, args.verbose), logging_redirect_tqdm(), _sigterm_as_interrupt(terminated):
            logging.getLogger(__name__).info("command: %s", " ".join(command_line))
            if args.baseline_only:
                _, _, baseline = prepare(config, progress=not args.no_progress)
                print(f"baseline {baseline.key_hash}: test accuracy {baseline.info['test_acc']:.4f}, "
                      f"{baseline.info['train_seconds_total']:.0f} s of training, cached in {baseline.info['cache_path']}")
                return 0
            if args.report_only:
                return render_stored(config, preset=args.preset, out_dir=out_dir, command_line=rendering_command)
            return run_benchmark(config, preset=args.preset, out_dir=out_dir, command_line=command_line,
                                 progress=not args.no_progress, executor=executor)
    except (BenchmarkInputError, LockedError, ExecutorError) as error:
        print(f"python -m benchmarks.run: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path it must write: read-only, a file where a directory belongs
        message = unwritable_path_message(error, {"--out-dir": out_dir, "--cache-dir": cache_dir_for(config)})
        if message is None:
            raise
        print(f"python -m benchmarks.run: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signal_name = "SIGTERM" if terminated else "SIGINT"
        print(f"interrupted ({signal_name}); finished records are kept in {out_dir}; rerun the same command to resume",
              file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
