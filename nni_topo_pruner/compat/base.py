"""What every compat patch is made of: the :class:`Patch` record, and the helpers that recompile
an NNI function from its own source with exact text edits."""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

#: Attribute set on every object this module replaces; its value is the patch name.
MARKER = "__nni_topo_pruner_compat__"


@dataclass(frozen=True)
class Patch:
    """One compatibility fix.

    ``is_needed()`` inspects the installed libraries and answers whether the broken
    behaviour is present (False when already fixed upstream, already patched, or when the
    code to patch is not the code this patch was written for); ``install()`` applies it.
    """

    name: str
    symptom: str
    cause: str
    fix: str
    is_needed: Callable[[], bool]
    install: Callable[[], None]
    is_applied: Callable[[], bool]


def nni_tracer_modules() -> tuple[Any, Any] | None:
    """Return NNI's (concrete_tracer, concrete_proxy) modules, or None if NNI lacks them."""
    try:
        from nni.common.concrete_trace_utils import concrete_proxy, concrete_tracer
    except Exception:  # NNI missing or a layout we do not know: nothing to patch
        return None
    return concrete_tracer, concrete_proxy


def source_of(obj: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    except (OSError, TypeError):
        return ""


def is_marked(obj: Any, name: str) -> bool:
    return getattr(obj, MARKER, None) == name


def mark(obj: Any, name: str) -> Any:
    setattr(obj, MARKER, name)
    return obj


def edit_pattern(old: str) -> re.Pattern[str]:
    """Regex for the lines of ``old`` (relative indentation kept) at any base indentation."""
    lines = [re.escape(line.rstrip()) for line in textwrap.dedent(old).strip("\n").splitlines()]
    return re.compile(r"^(?P<indent>[ \t]*)" + r"\n(?P=indent)".join(lines) + r"[ \t]*$", re.MULTILINE)


def indent_like(new: str, indent: str) -> str:
    return "\n".join(indent + line for line in textwrap.dedent(new).strip("\n").splitlines())


def recompile_with_edits(func: Callable, edits: list[tuple[str, str]], patch_name: str) -> Callable:
    """Return a copy of ``func`` compiled from its own source with exact text ``edits``.

    Used where the bug sits inside a long NNI function: the copy keeps NNI's code and
    behaviour line for line, tracebacks still point at NNI's file and line numbers, and a
    missing ``old`` text (a different NNI) raises instead of patching blindly.
    """
    source = source_of(func)
    for old, new in edits:
        source, count = edit_pattern(old).subn(
            lambda match, new=new: indent_like(new, match.group("indent")), source)
        if count == 0:
            raise RuntimeError(f"{patch_name}: expected text not found in {func.__qualname__}: {old!r}")
    tree = ast.parse(source)
    ast.increment_lineno(tree, func.__code__.co_firstlineno - 1)
    code = compile(tree, func.__code__.co_filename, "exec")
    namespace: dict[str, Any] = {}
    exec(code, func.__globals__, namespace)  # noqa: S102 - NNI's own source, edited above
    new_func = namespace[func.__name__]
    new_func.__qualname__ = func.__qualname__
    new_func.__module__ = func.__module__
    new_func.__wrapped_original__ = func
    return mark(new_func, patch_name)
