"""Issue 28: every code block of README.md runs in a test (a docs example that does not run is a defect).

The blocks are enumerated from README.md itself (``tests/readme_blocks.py``), never listed by
hand, so a block added to the README is tested without touching this file; a block in a
language no test handles fails ``test_every_block_language_is_handled``.

* ```python blocks run as written. By default each runs alone in a fresh namespace. The
  sections of ``CHAINS`` continue one namespace in README order: the Quickstart's blocks build on
  each other (``cifar_vgg16``, ``model``, ``dummy_input``, ``torch``, ``ModelSpeedup``,
  ``TopologicalPruner``), and "Per-layer ratios from topology" (section "The Topological Pruner")
  continues the Quickstart (``cifar_vgg16``, ``torch``, ``TopologicalPruner``). The Torch-Pruning
  block and the two "Gradual pruning" recipes run alone (tests/test_scheduled_pruning.py also
  checks what the recipes compute). Every group runs in its own ``tmp_path`` as the current
  directory (blocks write files). A block that raises fails with its README line.
* ```yaml blocks open with ``# FILE`` and are written to ``FILE`` in that directory before the
  next python block of their group runs, which must read ``FILE``: the Quickstart's
  ``compression.yaml`` is the file ``compress_from_config`` loads.
* ```bash blocks pass ``bash -n``, and each command is checked without running it: ``python -m
  MODULE ARGS`` imports MODULE and its ``build_parser()`` accepts ARGS (then ``resolve_config``
  validates them, where the module has one); ``python -m pytest ARGS``: options known, markers
  declared in pyproject's pytest config, paths exist; ``bash FILE``: FILE exists and passes ``bash
  -n``; ``pip install 'nni-topo-pruner[EXTRA]'``: the extra exists; ``docker build`` / ``docker
  run``: Dockerfile, build arguments, image tag and mount points exist. ``NAME=VALUE`` prefixes
  are allowed when NAME appears in the module's source. A command of any other kind fails: add a
  checker here.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
import subprocess
import tomllib
import traceback
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.readme_blocks import README, Block, readme_blocks

ROOT = README.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
BLOCKS = readme_blocks()
HANDLED_LANGUAGES = {"python", "yaml", "bash"}

#: sections whose python (and yaml) blocks continue one namespace, in README order -> chain name
CHAINS = {
    "Quickstart": "Quickstart",
    # "Per-layer ratios from topology": a fresh cifar_vgg16() and TopologicalPruner, both from the Quickstart
    "The Topological Pruner": "Quickstart",
}
#: optional extras a block may import: without them installed, its group is skipped (dev installs them all)
OPTIONAL_MODULES = {"torch_pruning": "torch-pruning", "pytorch_lightning": "lightning", "ray": "ray"}


# ----------------------------------------------------------------------------------------
# python and yaml blocks
# ----------------------------------------------------------------------------------------

def python_groups(blocks: List[Block]) -> Dict[str, List[Block]]:
    """Python and yaml blocks grouped by namespace: a chain of ``CHAINS`` or a block alone."""
    groups: Dict[str, List[Block]] = {}
    for block in blocks:
        if block.language in ("python", "yaml"):
            name = CHAINS.get(block.section) or f"{block.section} (README.md:{block.line})"
            groups.setdefault(name, []).append(block)
    return groups


GROUPS = python_groups(BLOCKS)


def yaml_file_name(block: Block) -> str:
    first = block.code.splitlines()[0] if block.code.strip() else ""
    match = re.fullmatch(r"#\s*([\w.-]+\.ya?ml)\s*", first)
    if not match:
        pytest.fail(f"{block.where}: a yaml block opens with '# FILE.yaml' (the file a later block reads), "
                    f"got {first!r}", pytrace=False)
    return match.group(1)


def run_group(blocks: List[Block], directory: Path) -> dict:
    """Run ``blocks`` in one namespace, in order, writing yaml blocks into ``directory``
    (the current directory while they run); a raising block fails the test with its README line."""
    namespace: dict = {"__name__": "__readme__"}
    unread: List[Tuple[str, Block]] = []
    for block in blocks:
        if block.language == "yaml":
            name = yaml_file_name(block)
            (directory / name).write_text(block.code, encoding="utf-8")
            unread.append((name, block))
            continue
        for name, written in unread:
            if name not in block.code:
                pytest.fail(f"{written.where}: {name} is not read by the next python block ({block.where})",
                            pytrace=False)
        unread = []
        try:
            exec(block.compiled(), namespace)
        except Exception as error:  # noqa: BLE001 - any error of a README block is the failure reported
            failure = f"{block.where}: the README block raised {type(error).__name__}: {error}\n{traceback.format_exc()}"
        else:
            continue
        pytest.fail(failure, pytrace=False)
    if unread:
        pytest.fail(f"{unread[0][1].where}: {unread[0][0]} is read by no python block after it", pytrace=False)
    return namespace


def skip_without_optional_modules(blocks: List[Block]) -> None:
    code = "".join(block.code for block in blocks)
    for module, extra in OPTIONAL_MODULES.items():
        if re.search(rf"^\s*(import|from)\s+{module}\b|^\s*import\s.*\b{module}\b", code, flags=re.MULTILINE) \
                and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (extra '{extra}')")


#: light checks of what a group leaves behind, beyond "it ran" (by group name)
def _check_quickstart(namespace: dict) -> None:
    model = namespace["model"]
    assert model(namespace["dummy_input"]).shape == (1, 10)
    assert isinstance(namespace["config_list"], list) and len(namespace["config_list"]) == 13   # per-layer ratios


RESULT_CHECKS = {"Quickstart": _check_quickstart}


def test_every_block_language_is_handled():
    languages = {block.language for block in BLOCKS}
    assert languages <= HANDLED_LANGUAGES, f"README blocks no test handles: {languages - HANDLED_LANGUAGES}"
    assert {"python", "yaml", "bash"} <= languages


def test_every_python_block_is_in_exactly_one_group():
    grouped = [block.line for blocks in GROUPS.values() for block in blocks]
    assert sorted(grouped) == [block.line for block in BLOCKS if block.language in ("python", "yaml")]
    sections = {block.section for block in BLOCKS}
    assert set(CHAINS) <= sections, f"CHAINS names sections the README no longer has: {set(CHAINS) - sections}"
    assert set(RESULT_CHECKS) <= set(GROUPS)


@pytest.mark.parametrize("name", list(GROUPS))
def test_python_blocks_run(name, tmp_path, monkeypatch):
    blocks = GROUPS[name]
    skip_without_optional_modules(blocks)
    monkeypatch.chdir(tmp_path)
    namespace = run_group(blocks, tmp_path)
    if name in RESULT_CHECKS:
        RESULT_CHECKS[name](namespace)


def test_a_raising_block_fails_with_its_readme_line(tmp_path, monkeypatch):
    text = "# t\n\n## S\n\n```python\nx = 1\n```\n\n```python\ny = x\nraise RuntimeError('boom')\n```\n"
    blocks = readme_blocks(text, language="python")
    assert [block.line for block in blocks] == [6, 10]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"README.md:10 \(S\): the README block raised RuntimeError: boom"
                       r"(.|\n)*README.md\", line 11"):
        run_group(blocks, tmp_path)


def test_a_yaml_block_must_be_read(tmp_path):
    text = "## S\n```yaml\n# a.yaml\nk: 1\n```\n```python\nx = 1\n```\n"
    with pytest.raises(pytest.fail.Exception, match=r"a.yaml is not read by the next python block"):
        run_group(readme_blocks(text), tmp_path)


# ----------------------------------------------------------------------------------------
# bash blocks
# ----------------------------------------------------------------------------------------

def bash_commands(blocks: List[Block]) -> List[Tuple[Block, int, str]]:
    """(block, README line, command) for each command of the bash blocks: continuation lines
    joined, comment-only lines left out."""
    commands = []
    for block in blocks:
        if block.language != "bash":
            continue
        pending, start = "", 0
        for offset, line in enumerate(block.code.splitlines()):
            if not pending:
                start = block.line + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command, pending = pending + line, ""
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append((block, start, command))
    return commands


COMMANDS = bash_commands(BLOCKS)
_SUBSTITUTION = re.compile(r"\$\([^()]*\)")


def words(command: str) -> List[str]:
    """The command's words, trailing comment dropped; a ``$(...)`` substitution is one word ``SUBST``."""
    return shlex.split(_SUBSTITUTION.sub("SUBST", command), comments=True)


def split_env(argv: List[str]) -> Tuple[List[str], List[str]]:
    names = []
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        names.append(argv[0].split("=", 1)[0])
        argv = argv[1:]
    return names, argv


def check_module(module_name: str, args: List[str], env: List[str], capsys) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "build_parser"), (
        f"python -m {module_name}: no build_parser() to check the README's arguments against; add one "
        f"(or a checker in tests/test_readme.py)")
    source = inspect.getsource(module)
    for name in env:
        assert name in source, f"environment variable {name} is not mentioned by {module_name}"
    try:
        parsed = module.build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"the parser refuses the arguments: {capsys.readouterr().err.strip()}") from None
    if hasattr(module, "resolve_config"):
        module.resolve_config(parsed)


def pytest_markers() -> set:
    return {marker.split(":")[0].strip() for marker in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}


def check_pytest(args: List[str]) -> None:
    flags_with_value = {"-m", "-k", "-p"}
    flags = {"-q", "-v", "-x", "-s", "-vv", "-qq", "--lf", "--ff"}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in flags_with_value:
            value = args[index + 1]
            if arg == "-m":
                unknown = set(re.findall(r"[A-Za-z_]\w*", value)) - {"and", "or", "not"} - pytest_markers()
                assert not unknown, f"pytest -m {value!r}: markers not declared in pyproject.toml: {unknown}"
            index += 2
            continue
        if arg.startswith("-"):
            assert arg in flags or re.fullmatch(r"--durations=\d+|--maxfail=\d+", arg), f"unchecked pytest option {arg}"
        else:
            path, _, test = arg.partition("::")
            assert (ROOT / path).exists(), f"pytest path {path} does not exist"
            if test:
                assert re.search(rf"^def {re.escape(test.split('[')[0])}\(", (ROOT / path).read_text(), re.MULTILINE), arg
        index += 1


def check_bash_script(args: List[str]) -> None:
    script = ROOT / args[0]
    assert script.is_file(), f"{args[0]} does not exist"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def check_pip_install(args: List[str]) -> None:
    name = PYPROJECT["project"]["name"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    for spec in (arg for arg in args if not arg.startswith("-")):
        match = re.fullmatch(rf"{re.escape(name)}(?:\[([\w,-]+)\])?", spec)
        assert match, f"pip install {spec}: not this project ({name})"
        unknown = set((match.group(1) or "").split(",")) - {""} - set(extras)
        assert not unknown, f"pip install {spec}: no such extra {unknown} (pyproject has {sorted(extras)})"


def docker_options(args: List[str]) -> Tuple[Dict[str, List[str]], List[str]]:
    options: Dict[str, List[str]] = {}
    positional, index = [], 0
    while index < len(args):
        if args[index] in ("-f", "-t", "-v", "--build-arg"):
            options.setdefault(args[index], []).append(args[index + 1])
            index += 2
        elif args[index].startswith("-"):
            assert args[index] in ("--rm",), f"unchecked docker option {args[index]}"
            index += 1
        else:
            positional.append(args[index])
            index += 1
    return options, positional


def built_images() -> set:
    tags = set()
    for _, _, command in COMMANDS:
        argv = split_env(words(command))[1]
        if argv[:2] == ["docker", "build"]:
            tags.update(docker_options(argv[2:])[0].get("-t", []))
    return tags


def check_docker(args: List[str]) -> None:
    options, positional = docker_options(args[1:])
    if args[0] == "build":
        dockerfile = ROOT / options["-f"][0]
        assert dockerfile.is_file(), f"{dockerfile} does not exist"
        declared = set(re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), flags=re.MULTILINE))
        for assignment in options.get("--build-arg", []):
            assert assignment.split("=")[0] in declared, f"--build-arg {assignment}: the Dockerfile declares no such ARG"
        assert positional == ["."], positional
    elif args[0] == "run":
        assert positional and positional[0] in built_images(), f"docker run {positional}: no README docker build makes it"
        dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
        for volume in options.get("-v", []):
            target = volume.split(":")[1]
            assert re.search(rf"mkdir -p[^\n]*\s{re.escape(target)}(\s|$)", dockerfile), f"-v {volume}: the image has no {target}"
    else:
        raise AssertionError(f"unchecked docker command {args[0]}")


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.language == "bash"], ids=lambda b: f"README.md:{b.line}")
def test_bash_block_syntax(block):
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert result.returncode == 0, f"{block.where}: {result.stderr}"


@pytest.mark.parametrize("line, command", [(line, command) for _, line, command in COMMANDS],
                         ids=[f"README.md:{line}" for _, line, _ in COMMANDS])
def test_bash_command_is_valid(line, command, capsys):
    env, argv = split_env(words(command))
    where = f"README.md:{line}: {command.strip()}"
    try:
        if argv[0] in (".venv/bin/python", "python", "python3") and argv[1] == "-m":
            if argv[2] == "pytest":
                assert not env, "environment prefix on a pytest command"
                check_pytest(argv[3:])
            else:
                check_module(argv[2], argv[3:], env, capsys)
        elif argv[0] == "bash":
            check_bash_script(argv[1:])
        elif argv[:2] == ["pip", "install"]:
            check_pip_install(argv[2:])
        elif argv[0] == "docker":
            check_docker(argv[1:])
        else:
            pytest.fail(f"{where}: no check for this kind of command: add one to tests/test_readme.py", pytrace=False)
    except (AssertionError, ValueError, ImportError) as error:
        failure = f"{where}: {type(error).__name__}: {error}"
    else:
        return
    pytest.fail(failure, pytrace=False)


def test_every_bash_line_is_checked():
    lines = [line for block in BLOCKS if block.language == "bash" for line in block.code.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert len(COMMANDS) == len(lines) - sum(line.rstrip().endswith("\\") for line in lines)
    assert len(COMMANDS) >= 10
