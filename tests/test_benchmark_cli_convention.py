"""One command-line convention for the speed benchmarks and the studies (issue 28,
benchmarks/core/cli.py): ``--preset`` (default ``default``), ``--set KEY=VALUE`` on any field of
the module's config dataclass, ``--out-dir``, the module's own flags as shorthands applied after
``--set``, and exit status 2 with one line naming the input on a usage error.

The config is resolved from the parser (``build_parser().parse_config``) without running anything.
A new module under benchmarks/speed or benchmarks/studies joins by a row in ``MODULES``;
``test_every_command_line_module_uses_the_convention`` fails until it does.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Tuple

import pytest

from benchmarks.core.cli import ConfigParser

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class Case(NamedTuple):
    module: str
    #: flags the module needs to resolve at all (a required input)
    required: List[str]
    #: ``--set`` assignment and the field value it gives
    assignment: str
    expected: Any
    #: a shorthand flag (with its value) that wins over ``--set`` of the same field
    shorthand: List[str]
    #: a bad ``--set`` value and a fragment of the error line
    bad: str
    fragment: str


MODULES: Dict[str, Case] = {case.module: case for case in [
    Case("benchmarks.speed.cpu_throughput", [], "steps=4", 4, ["--steps", "3"], "steps=0", "steps (--steps)"),
    Case("benchmarks.speed.engine_speed", [], "sections=evals,vgg", ["evals", "vgg"], ["--sections", "quality"],
         "sections=nope", "nope"),
    Case("benchmarks.speed.pruner_speed", [], "repeats=5", 5, ["--repeats", "2"], "sparse_ratio=1.5",
         "--sparse-ratio"),
    Case("benchmarks.speed.tp_speed", [], "cases=mlp", ["mlp"], ["--cases", "resnet18"], "repeats=0", "--repeats"),
    Case("benchmarks.studies.allocation_curves", ["--weights", "model.pt"], "sparsities=0.5", [0.5],
         ["--sparsities", "0.3,0.7"], "width=wide", "expected float"),
    Case("benchmarks.studies.backends_smoke", [], "pruners=l1,topo_w2=topological", ["l1", "topo_w2=topological"],
         ["--pruners", "l2"], "sparsity=2", "--sparsity"),
    Case("benchmarks.studies.ga_departure", [], "seed=3", 3, ["--seed", "4"], "sparsity=0", "--sparsity"),
    Case("benchmarks.studies.mask_stability", [], "variants=cosine,default", ["cosine", "default"],
         ["--variants", "bottleneck"], "variants=nope", "nope"),
    Case("benchmarks.studies.recipe_check", ["--cache-dir", "cache"], "seeds=2,3", [2, 3], ["--seeds", "5"],
         "epochs=0", "--epochs"),
    Case("benchmarks.bmvc.betti_activation_plot", [], "dpi=50", 50, [], "points=1", "points"),
]}
#: modules that have a ``quick`` preset (``--quick`` is its shorthand)
QUICK = {"benchmarks.speed.cpu_throughput", "benchmarks.speed.engine_speed"}


def _parser(module: str) -> ConfigParser:
    parser = importlib.import_module(module).build_parser()
    assert isinstance(parser, ConfigParser)
    return parser


def _field_of(case: Case) -> str:
    return case.assignment.partition("=")[0]


def _exit(capsys, call) -> Tuple[Any, str, str, str]:
    """(exit status, last line of stderr, stderr, stdout) of a call that exits."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    out, err = capsys.readouterr()
    return exit_info.value.code, err.strip().splitlines()[-1] if err.strip() else "", err, out


# ------------------------------------------------------------------------------------ every module


def test_every_command_line_module_uses_the_convention():
    """Every module of benchmarks/speed and benchmarks/studies that has a command line builds it
    with ConfigParser (never a bare argparse.ArgumentParser) and is listed in MODULES."""
    paths = [*sorted((BENCHMARKS / "speed").glob("*.py")), *sorted((BENCHMARKS / "studies").glob("*.py")),
             BENCHMARKS / "bmvc" / "betti_activation_plot.py"]
    with_cli, bare, framework = set(), [], set()
    for path in paths:
        tree = ast.parse(path.read_text())
        calls = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                 for node in ast.walk(tree) if isinstance(node, ast.Call)}
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        module = ".".join(path.with_suffix("").relative_to(BENCHMARKS.parent).parts)
        if "ArgumentParser" in calls:
            bare.append(module)
        if _framework_experiments(tree):
            framework.add(module)  # its command line is benchmarks.core.framework's (tested below)
        elif "main" in functions or "ConfigParser" in calls:
            with_cli.add(module)
            assert "build_parser" in functions and "ConfigParser" in calls, \
                f"{module}: its command line needs a build_parser() that returns a ConfigParser"
    assert bare == [], f"these build an argparse parser without benchmarks.core.cli.ConfigParser: {bare}"
    assert with_cli == set(MODULES), f"add a row to MODULES for: {sorted(with_cli - set(MODULES))}"
    assert framework == set(FRAMEWORK_MODULES), f"add to FRAMEWORK_MODULES: {sorted(framework - set(FRAMEWORK_MODULES))}"


#: studies built on benchmarks.core.framework: ``--preset`` names a benchmark preset (required),
#: ``--set`` changes a BenchmarkConfig field, ``--out-dir`` holds results.json and report.md
FRAMEWORK_MODULES = {"benchmarks.studies.bn_reestimation": "BnReestimation"}


def _framework_experiments(tree: ast.Module) -> List[str]:
    """The classes of a module that subclass the framework's ``Experiment``."""
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any(getattr(base, "id", None) == "Experiment" for base in node.bases)]


@pytest.mark.parametrize("module", sorted(FRAMEWORK_MODULES))
def test_framework_studies_use_the_frameworks_command_line(module, tmp_path, capsys):
    from benchmarks.core import framework

    experiment = getattr(importlib.import_module(module), FRAMEWORK_MODULES[module])()
    parser = framework.build_parser(experiment)
    assert isinstance(parser, ConfigParser)
    code, _, _, text = _exit(capsys, lambda: parser.parse_args(["--help"]))
    for flag in ("--preset", "--set", "--out-dir", "--fresh", "--no-progress"):
        assert flag in text, (module, flag)
    code, last, err, _ = _exit(capsys, lambda: framework.main(type(experiment), [
        "--preset", "smoke", "--set", "no_such_key=1", "--out-dir", str(tmp_path)]))
    assert code == 2 and "no_such_key" in last and "Traceback" not in err


@pytest.mark.parametrize("module", sorted(MODULES))
def test_help_names_the_common_flags(module, capsys):
    code, _, _, text = _exit(capsys, lambda: _parser(module).parse_args(["--help"]))
    assert code == 0
    for flag in ("--preset", "--set", "--out-dir"):
        assert flag in text, (module, flag)
    assert ("--quick" in text) == (module in QUICK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_default_preset_is_the_starting_config(module):
    case = MODULES[module]
    parser = _parser(module)
    _, plain = parser.parse_config(case.required)
    assert plain == parser.parse_config([*case.required, "--preset", "default"])[1]
    if not case.required:
        assert plain == parser.presets["default"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_set_and_shorthands_change_the_resolved_config(module):
    case = MODULES[module]
    parser = _parser(module)
    key = _field_of(case)
    assert getattr(parser.parse_config(case.required)[1], key) != case.expected
    _, config = parser.parse_config([*case.required, "--set", case.assignment])
    assert getattr(config, key) == case.expected
    if case.shorthand:  # the dedicated flag is applied after --set, wherever it stands
        assert parser.shorthands[key] == case.shorthand[0]
        _, alone = parser.parse_config([*case.required, *case.shorthand])
        _, both = parser.parse_config([*case.required, *case.shorthand, "--set", case.assignment])
        assert getattr(both, key) == getattr(alone, key) != case.expected


@pytest.mark.parametrize("module", sorted(MODULES))
def test_an_unknown_set_key_exits_2_naming_it(module, capsys):
    case = MODULES[module]
    code, last, err, _ = _exit(capsys, lambda: _parser(module).parse_config([*case.required, "--set", "no_such_key=1"]))
    assert code == 2 and "no_such_key" in last and "known keys" in last and "Traceback" not in err


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_bad_set_value_exits_2_naming_the_key(module, capsys):
    case = MODULES[module]
    code, last, err, _ = _exit(capsys, lambda: _parser(module).parse_config([*case.required, "--set", case.bad]))
    assert code == 2 and case.fragment in last and "Traceback" not in err, err
    assert last.startswith(f"python -m {module}: error: ")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_an_unknown_preset_exits_2(module, capsys):
    code, last, _, _ = _exit(capsys, lambda: _parser(module).parse_config(["--preset", "huge"]))
    assert code == 2 and "huge" in last


@pytest.mark.parametrize("module", sorted(QUICK))
def test_quick_is_the_quick_preset(module, capsys):
    parser = _parser(module)
    _, quick = parser.parse_config(["--quick"])
    assert quick == parser.parse_config(["--preset", "quick"])[1] == parser.presets["quick"]
    assert quick != parser.presets["default"]
    code, last, _, _ = _exit(capsys, lambda: parser.parse_config(["--quick", "--preset", "default"]))
    assert code == 2 and "--quick" in last


# ------------------------------------------------------------- the old command lines resolve as before


@pytest.mark.parametrize("module, argv, expected", [
    ("benchmarks.speed.cpu_throughput", ["--steps", "4", "--quick"], dict(steps=4, warmup=2, eval_batches=6,
                                                                          quick=True)),
    ("benchmarks.speed.engine_speed", ["--sections", "evals,scaling,vgg,quality,imagenet", "--json", "e.json"],
     dict(sections=["evals", "scaling", "vgg", "quality", "imagenet"], h1_max_n=1024, quick=False)),
    ("benchmarks.speed.pruner_speed", ["--repeats", "3", "--threads", "1", "--distance", "wasserstein",
                                       "--homology-dims", "0", "1", "--zero-anchor", "false"],
     dict(repeats=3, threads=1, distance="wasserstein", homology_dims=[0, 1], zero_anchor="false", width=1.0)),
    ("benchmarks.speed.tp_speed", ["--threads", "1", "--profile", "--out", "tp"],
     dict(threads=1, profile=True, regularize=False, repeats=1)),
    ("benchmarks.studies.allocation_curves", ["--weights", "m.pt", "--width", "0.5", "--sparsities", "0.3,0.5,0.7"],
     dict(weights="m.pt", width=0.5, sparsities=[0.3, 0.5, 0.7])),
    ("benchmarks.studies.backends_smoke", ["--out-dir", "o"], dict(sparsity=0.5, seed=0, pruners=[
        "l1", "l2", "fpgm", "random", "topological", "topo_w2=topological", "betti"])),
    ("benchmarks.studies.ga_departure", ["--weights", "m.pt", "--sparsity", "0.3", "--seed", "0", "--out", "f.md"],
     dict(weights="m.pt", sparsity=0.3, seed=0, width=1.0)),
    ("benchmarks.studies.mask_stability", ["--trials", "10", "--width", "0.5", "--variants", "cosine", "activations"],
     dict(trials=10, width=0.5, variants=["cosine", "activations"], rel=1e-7, sparsity=0.5, weights="")),
    ("benchmarks.studies.recipe_check", ["--cache-dir", "/tmp/recipe-cache", "--width", "0.125", "--epochs", "8"],
     dict(cache_dir="/tmp/recipe-cache", width=0.125, epochs=8, seeds=[0, 1])),
    ("benchmarks.bmvc.betti_activation_plot", ["--out", "docs/img/many_to_one_activation.png"],
     dict(points=4000, dpi=110)),
])
def test_documented_command_lines_resolve_to_the_old_settings(tmp_path, monkeypatch, module, argv, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"")  # the modules check that --weights names a file
    args, config = _parser(module).parse_config(argv)
    assert {key: getattr(config, key) for key in expected} == expected


@pytest.mark.parametrize("module, argv, out_dir", [
    ("benchmarks.speed.tp_speed", ["--out", "a"], "a"),  # --out: --out-dir's older name
    ("benchmarks.speed.tp_speed", ["--out-dir", "a"], "a"),
    ("benchmarks.speed.tp_speed", [], None),
    ("benchmarks.speed.cpu_throughput", [], BENCHMARKS / "results" / "cpu_throughput"),
    ("benchmarks.studies.recipe_check", ["--cache-dir", "c"], BENCHMARKS / "results" / "recipe_check"),
    ("benchmarks.studies.backends_smoke", [], BENCHMARKS / "runs" / "backends_smoke"),
    ("benchmarks.studies.ga_departure", ["--out", "t.md"], None),  # --out stays a file there
])
def test_out_dir_defaults_and_aliases(module, argv, out_dir):
    args, _ = _parser(module).parse_config(argv)
    assert args.out_dir == (Path(out_dir) if out_dir is not None else None)


def test_required_inputs_are_named(capsys):
    code, last, _, _ = _exit(capsys, lambda: _parser("benchmarks.studies.recipe_check").parse_config([]))
    assert code == 2 and "--cache-dir" in last
    code, last, _, _ = _exit(capsys, lambda: _parser("benchmarks.studies.allocation_curves").parse_config([]))
    assert code == 2 and "--weights" in last


def test_a_bad_shorthand_value_names_the_flag(capsys):
    code, last, _, _ = _exit(capsys, lambda: _parser("benchmarks.studies.recipe_check").parse_config(
        ["--cache-dir", "c", "--seeds", "0,x"]))
    assert code == 2 and last.endswith("error: --seeds 0,x: expected int, got 'x'")


def test_a_shorthand_must_name_a_config_field():
    parser = _parser("benchmarks.speed.tp_speed")
    with pytest.raises(TypeError, match="not a config field"):
        parser.add_shorthand("--nothing", field="nothing")


def test_presets_must_include_default():
    @dataclasses.dataclass
    class Config:
        n: int = 1

    with pytest.raises(TypeError, match="'default'"):
        ConfigParser("prog", {"quick": Config()})


def test_a_required_preset_as_the_framework_has_it(capsys):
    """``default_preset=None``: ``--preset`` is required (benchmarks/core/framework.py's rule)."""
    @dataclasses.dataclass
    class Config:
        n: int = 1

    parser = ConfigParser("prog", {"smoke": Config(), "cpu": Config(n=5)}, default_preset=None)
    assert parser.parse_config(["--preset", "cpu", "--set", "n=7"])[1] == Config(n=7)
    code, last, _, _ = _exit(capsys, lambda: parser.parse_config([]))
    assert code == 2 and "--preset" in last


FRAMEWORK_EXPERIMENTS = ["benchmarks.bmvc.convergence_study:ConvergenceStudy",
                         "benchmarks.bmvc.betti_threshold:BettiThreshold"]


@pytest.mark.parametrize("target", FRAMEWORK_EXPERIMENTS)
def test_framework_experiments_parse_with_the_same_parser(target, capsys, tmp_path):
    """The experiments on benchmarks/core/framework.py take the same parser (preset required):
    an unknown --set key or preset exits 2 with one line naming it, before any work."""
    from benchmarks.core import framework

    module, name = target.split(":")
    experiment_class = getattr(importlib.import_module(module), name)
    parser = framework.build_parser(experiment_class())
    assert isinstance(parser, ConfigParser) and parser.default_preset is None
    preset = sorted(experiment_class.presets)[0]
    out = ["--out-dir", str(tmp_path / "out")]
    code, last, err, _ = _exit(capsys, lambda: framework.main(experiment_class, ["--preset", preset, "--set",
                                                                                 "no_such_key=1", *out]))
    assert code == 2 and "no_such_key" in last and "known keys" in last and "Traceback" not in err
    assert last.startswith(f"python -m {module}: error: ")
    code, last, _, _ = _exit(capsys, lambda: framework.main(experiment_class, ["--preset", "huge", *out]))
    assert code == 2 and "huge" in last
    assert not (tmp_path / "out").exists()
