"""Torch builtins whose __module__ is None (TensorBase rename).

One patch of :mod:`nni_topo_pruner.compat`; :data:`PATCH` says its symptom, cause and fix.
"""
from __future__ import annotations

from .base import Patch, nni_tracer_modules, source_of, is_marked, edit_pattern, recompile_with_edits

_TENSORBASE = "tensorbase-qualname"
_TENSORBASE_OLD = "if func.__qualname__.startswith('_TensorBase'):"
_TENSORBASE_NEW = "if func.__qualname__.startswith(('_TensorBase', 'TensorBase')):"


def _tensorbase_needed() -> bool:
    mods = nni_tracer_modules()
    if mods is None:
        return False
    import torch

    tracer = mods[0].ConcreteTracer
    if is_marked(tracer.trace, _TENSORBASE):
        return False
    # newer torch renamed torch._C._TensorBase to TensorBase (the old name is an alias)
    qualname = torch._C._TensorBase.add.__qualname__
    return not qualname.startswith("_TensorBase") and bool(edit_pattern(_TENSORBASE_OLD).search(source_of(tracer.trace)))


def _tensorbase_install() -> None:
    """Fix ``AttributeError: 'NoneType' object has no attribute 'startswith'`` in ConcreteTracer.trace."""
    tracer = nni_tracer_modules()[0].ConcreteTracer
    tracer.trace = recompile_with_edits(tracer.trace, [(_TENSORBASE_OLD, _TENSORBASE_NEW)], _TENSORBASE)


def _tensorbase_applied() -> bool:
    mods = nni_tracer_modules()
    return mods is not None and is_marked(mods[0].ConcreteTracer.trace, _TENSORBASE)


PATCH = Patch(
        name=_TENSORBASE,
        symptom="AttributeError: 'NoneType' object has no attribute 'startswith' in "
                "nni/common/concrete_trace_utils/concrete_tracer.py ConcreteTracer.trace",
        cause="torch 2.x renamed torch._C._TensorBase to TensorBase; NNI recognises tensor "
              "methods by the qualname prefix '_TensorBase', so builtins such as "
              "TensorBase._make_subclass (whose __module__ is None) fall through to the "
              "'plain method' branch, which calls func.__module__.startswith",
        fix="ConcreteTracer.trace recompiled from NNI's own source with the prefix test "
            "accepting both '_TensorBase' and 'TensorBase' (upstream behaviour on torch 2.0)",
        is_needed=_tensorbase_needed,
        install=_tensorbase_install,
        is_applied=_tensorbase_applied,
    )
